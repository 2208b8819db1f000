package sqlstore

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc"
)

// crashURLEnv names the database a crash child writes to; set only in the
// child process.
const crashURLEnv = "SQLSTORE_CRASH_CHILD_URL"

// crashRestartEnv, when set, is the WAL length in frames past which the
// child's checkpointer makes the WAL start over (DB.walRestart).
const crashRestartEnv = "SQLSTORE_CRASH_WAL_RESTART"

// TestCrashChild is the child half of TestCrashKeepsAcknowledged: it inserts
// from many goroutines and prints each id once Insert has acknowledged it,
// until it is killed. Run alone, it does nothing.
func TestCrashChild(t *testing.T) {
	url := os.Getenv(crashURLEnv)
	if url == "" {
		t.Skip("runs only as the child of TestCrashKeepsAcknowledged")
	}
	db, err := Open(context.Background(), url)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	if frames := os.Getenv(crashRestartEnv); frames != "" {
		if db.walRestart, err = strconv.Atoi(frames); err != nil {
			fmt.Println("bad", crashRestartEnv, err)
			os.Exit(1)
		}
	}
	var out sync.Mutex
	for c := range 32 {
		go func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("crash%02d-%06d", c, i)
				if _, err := db.Insert(context.Background(), []msgsvc.Message{testMessage(id)}); err != nil {
					fmt.Println("insert:", err)
					os.Exit(1)
				}
				out.Lock()
				fmt.Println("ack", id) // os.Stdout is unbuffered
				out.Unlock()
			}
		}()
	}
	// Until killed; a parent that died leaves the child writing to a closed
	// pipe, which ends it, and at worst it stops here.
	time.Sleep(time.Minute)
	os.Exit(2)
}

// TestCrashKeepsAcknowledged kills a process that is inserting, without any
// chance to close the store, then reopens its database: every id the process
// acknowledged must be there, and the counters must agree with the rows.
// In the second case the WAL starts over every few hundred frames, so the
// kill finds a WAL whose file still holds frames of earlier cycles past the
// current one (the store keeps the file's length when the WAL starts over):
// recovery must replay exactly the current cycle's commits.
func TestCrashKeepsAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	for _, c := range []struct{ name, restart string }{
		{"default", ""},
		{"WAL starting over", "300"},
	} {
		t.Run(c.name, func(t *testing.T) { crashAndCheck(t, c.restart) })
	}
}

// readSalt returns the salt-1 field of the header of the WAL file at path.
func readSalt(path string) (salt [4]byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return salt, err
	}
	defer f.Close()
	_, err = f.ReadAt(salt[:], 16)
	return salt, err
}

// crashAndCheck runs TestCrashChild in a process of its own, with
// crashRestartEnv set to restart, kills it after 2,000 acknowledgements
// (and, with restart set, two restarts of the WAL) and checks the database
// it leaves.
func crashAndCheck(t *testing.T, restart string) {
	path := filepath.Join(t.TempDir(), "app.db")
	url := fileURL(t, path)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashURLEnv+"="+url, crashRestartEnv+"="+restart)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{}
	lines := bufio.NewScanner(stdout)
	killed := false
	deadline := time.Now().Add(30 * time.Second)
	// With restart set, the kill waits until the WAL has started over
	// twice (its header's salt changes each time), so that the file holds
	// frames of an earlier cycle.
	var salts map[[4]byte]bool
	if restart != "" {
		salts = map[[4]byte]bool{}
	}
	for lines.Scan() {
		line := lines.Text()
		id, ok := strings.CutPrefix(line, "ack ")
		if !ok {
			t.Errorf("child: %s", line)
			continue
		}
		acked[id] = true
		if salts != nil && len(acked)%50 == 0 {
			if salt, err := readSalt(path + "-wal"); err == nil {
				salts[salt] = true
			}
		}
		enough := len(acked) >= 2000 && (salts == nil || len(salts) >= 3)
		if !killed && (enough || time.Now().After(deadline)) {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true // keep reading what the child printed before it died
		}
	}
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("the child stopped by itself after %d acknowledgements", len(acked))
	}
	if salts != nil && len(salts) < 3 {
		t.Errorf("the WAL started over %d times before the kill, want 2 or more", len(salts)-1)
	}

	db := openURL(t, url)
	ids := storedIDs(t, db)
	var missing []string
	for id := range acked {
		if !ids[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d acknowledged ids are missing after the crash, e.g. %q", len(missing), len(acked), missing[0])
	}
	t.Logf("%d acknowledged before the kill, %d stored", len(acked), len(ids))
	checkCounters(t, db)
}
