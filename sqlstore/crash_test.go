package sqlstore

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc"
)

// crashURLEnv names the database a crash child writes to; set only in the
// child process.
const crashURLEnv = "SQLSTORE_CRASH_CHILD_URL"

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
func TestCrashKeepsAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	path := filepath.Join(t.TempDir(), "app.db")
	url := fileURL(t, path)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashURLEnv+"="+url)
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
	for lines.Scan() {
		line := lines.Text()
		id, ok := strings.CutPrefix(line, "ack ")
		if !ok {
			t.Errorf("child: %s", line)
			continue
		}
		acked[id] = true
		if !killed && (len(acked) >= 2000 || time.Now().After(deadline)) {
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
