//go:build linux && (amd64 || arm64)

package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	"github.com/msgsvc/msgsvc"
)

// TestAIOSync fsyncs files through the asynchronous path: a file it syncs
// (repeatedly, so that completions left over from one call never answer the
// next), a descriptor the kernel refuses (a pipe), and a closed file.
func TestAIOSync(t *testing.T) {
	if n, m := unsafe.Sizeof(iocb{}), unsafe.Sizeof(ioEvent{}); n != 64 || m != 32 {
		t.Fatalf("struct iocb is %d bytes and struct io_event %d, want 64 and 32", n, m)
	}
	a, err := newAIOSyncer()
	if err != nil {
		t.Skipf("this kernel refuses asynchronous fsync, and the syncer falls back to fsync: %v", err)
	}
	defer a.close()

	f, err := os.Create(filepath.Join(t.TempDir(), "wal"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := range 50 {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			t.Fatal(err)
		}
		if err := a.sync(f); err != nil {
			t.Fatalf("sync %d: %v", i, err)
		}
	}
	if a.took <= 0 {
		t.Fatalf("no fsync time recorded: %v", a.took)
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := a.sync(w); !errors.Is(err, errAIOUnsupported) {
		t.Fatalf("sync of a pipe: %v, want an error wrapping errAIOUnsupported", err)
	}
	// The context still works after a refusal.
	if err := a.sync(f); err != nil {
		t.Fatalf("sync after a refusal: %v", err)
	}

	g, err := os.Create(filepath.Join(t.TempDir(), "closed"))
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	if err := a.sync(g); err == nil || errors.Is(err, errAIOUnsupported) {
		t.Fatalf("sync of a closed file: %v, want an error of its own", err)
	}
}

// TestSyncFileFallsBack checks the syncer's choice: asynchronous fsync
// where the kernel takes it, a plain fsync, and its error, where it does
// not.
func TestSyncFileFallsBack(t *testing.T) {
	db := &DB{}
	defer db.closeAIO()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	// fsync(2) of a pipe fails with EINVAL: the fallback ran.
	if err := db.syncFile(w); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("syncFile of a pipe: %v, want EINVAL from the plain fsync", err)
	}
	if !db.aioOff || db.aio != nil {
		t.Fatalf("after a refusal: aioOff %v, aio %v; want the plain fsync from then on", db.aioOff, db.aio)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "wal"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := db.syncFile(f); err != nil {
		t.Fatalf("plain fsync: %v", err)
	}
}

// TestSyncerUsesAIO checks that a store's syncer fsyncs its WAL through
// AIO on this kernel, and that what it acknowledged is in the file.
func TestSyncerUsesAIO(t *testing.T) {
	if a, err := newAIOSyncer(); err != nil {
		t.Skipf("this kernel refuses asynchronous fsync: %v", err)
	} else {
		a.close()
	}
	ctx := context.Background()
	db, url := openFile(t)
	for i := range 20 {
		if _, err := db.Insert(ctx, []msgsvc.Message{testMessage(fmt.Sprintf("m%02d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	syncs := map[string]float64{}
	for _, m := range gather(t, db)["store_wal_syncs_total"].GetMetric() {
		syncs[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
	}
	aio, plain := syncs["aio"], syncs["fsync"]
	if db.aioOff || aio == 0 || plain != 0 {
		t.Fatalf("the syncer made %v fsyncs through AIO and %v plain ones (fell back: %v) on a kernel that takes AIO", aio, plain, db.aioOff)
	}
	st, err := openURL(t, url).Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TotalMessages != 20 {
		t.Fatalf("%d messages after reopening, want 20", st.TotalMessages)
	}
}
