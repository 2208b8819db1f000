//go:build linux && (amd64 || arm64)

package sqlstore

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// An fsync that parks the syncer instead of blocking a thread. A Go
// goroutine in a system call keeps its P (its turn on a core) until the
// runtime's monitor takes the P back, which under load took 0.1–0.4 ms
// per WAL fsync. The syncer had just readied the writer and, by answering
// a batch, that batch's callers, all on its own P, so they all waited for
// the monitor before they could run. Submitted through Linux AIO
// (io_submit with IOCB_CMD_FSYNC), the fsync runs in a kernel worker, and
// the syncer parks like a goroutine waiting on a socket, so its P runs the
// others at once. It wakes when the eventfd the completion is signalled on
// turns readable (Go's network poller), or to look for the completion
// event every aioPoll, whichever comes first. The fsync itself is the same
// call on the same file (vfs_fsync), so durability is unchanged; its
// errors come back in the completion event.
//
// Where the kernel refuses (no AIO, no eventfd, a file system without AIO
// fsync, the process's AIO quota used up), the syncer falls back to a
// plain fsync for as long as the store is open.

// aioSyncer submits fsyncs of one file at a time through one AIO context.
// Only the syncer goroutine uses it.
type aioSyncer struct {
	ctx   uintptr       // aio_context_t
	event *os.File      // the eventfd completions are signalled on, read through the poller
	efd   int           // its descriptor
	took  time.Duration // a moving average of how long an fsync took
}

// iocb is struct iocb of linux/aio_abi.h on a little-endian machine.
type iocb struct {
	_      uint64 // aio_data
	_      uint32 // aio_key
	_      int32  // aio_rw_flags
	opcode uint16
	_      int16 // aio_reqprio
	fildes uint32
	_      [3]uint64 // aio_buf, aio_nbytes, aio_offset
	_      uint64    // aio_reserved2
	flags  uint32
	resfd  uint32
}

// ioEvent is struct io_event.
type ioEvent struct {
	data, obj uint64
	res, res2 int64
}

const (
	iocbCmdFsync = 2      // IOCB_CMD_FSYNC
	iocbFlagRes  = 1 << 0 // IOCB_FLAG_RESFD

	// aioPoll is how often the syncer looks for the completion while
	// it waits; an fsync of the WAL takes 0.5–1 ms on the disks measured.
	aioPoll = 100 * time.Microsecond
)

// newAIOSyncer sets up an AIO context and its eventfd.
func newAIOSyncer() (*aioSyncer, error) {
	var ctx uintptr
	if _, _, e := syscall.Syscall(syscall.SYS_IO_SETUP, 1, uintptr(unsafe.Pointer(&ctx)), 0); e != 0 {
		return nil, fmt.Errorf("%w: io_setup: %w", errAIOUnsupported, e)
	}
	fd, _, e := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if e != 0 {
		_, _, _ = syscall.Syscall(syscall.SYS_IO_DESTROY, ctx, 0, 0)
		return nil, fmt.Errorf("%w: eventfd: %w", errAIOUnsupported, e)
	}
	// A non-blocking descriptor: os.NewFile puts it in the poller, so a
	// Read parks the goroutine instead of its thread.
	return &aioSyncer{ctx: ctx, event: os.NewFile(fd, "msgsvc-fsync-eventfd"), efd: int(fd)}, nil
}

// sync fsyncs f and returns the fsync's result. It returns an error
// wrapping errAIOUnsupported, having done nothing, when the kernel refuses
// the submission.
func (a *aioSyncer) sync(f *os.File) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var submitErr error
	err = raw.Control(func(fd uintptr) {
		cb := iocb{opcode: iocbCmdFsync, fildes: uint32(fd), flags: iocbFlagRes, resfd: uint32(a.efd)}
		cbs := [1]*iocb{&cb}
		for {
			n, _, e := syscall.Syscall(syscall.SYS_IO_SUBMIT, a.ctx, 1, uintptr(unsafe.Pointer(&cbs[0])))
			switch {
			case e == syscall.EINTR:
				continue
			case e != 0:
				submitErr = fmt.Errorf("%w: io_submit: %w", errAIOUnsupported, e)
			case n != 1:
				submitErr = fmt.Errorf("%w: io_submit took %d of 1", errAIOUnsupported, n)
			}
			return
		}
	})
	if err != nil {
		return err
	}
	if submitErr != nil {
		return submitErr
	}
	// The kernel holds its own reference to the file until the fsync
	// completes. Wait for the completion event: the eventfd wakes the
	// syncer through the poller, which a busy runtime reads only when a P
	// runs out of work, so the syncer also looks every aioPoll (timers are
	// run whenever a P switches goroutines). A wake-up without the event
	// (a deadline, or the count left by an earlier completion found by
	// looking) waits again.
	var ev ioEvent
	zero := syscall.Timespec{}
	var counter [8]byte
	start := time.Now()
	wait := a.took * 3 / 4 // the first look comes shortly before the fsync is likely done
	for {
		n, _, e := syscall.Syscall6(syscall.SYS_IO_GETEVENTS, a.ctx, 0, 1, uintptr(unsafe.Pointer(&ev)), uintptr(unsafe.Pointer(&zero)), 0)
		if e != 0 && e != syscall.EINTR {
			return fmt.Errorf("io_getevents: %w", e)
		}
		if n == 1 {
			break
		}
		wait = max(wait, aioPoll)
		if err := a.event.SetReadDeadline(time.Now().Add(wait)); err != nil {
			return fmt.Errorf("waiting for the fsync's completion: %w", err)
		}
		if _, err := a.event.Read(counter[:]); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("waiting for the fsync's completion: %w", err)
		}
		wait = aioPoll
	}
	a.took += (time.Since(start) - a.took) / 8
	if ev.res < 0 {
		return &os.PathError{Op: "fsync", Path: f.Name(), Err: syscall.Errno(-ev.res)}
	}
	return nil
}

// close releases the AIO context and the eventfd. io_destroy waits for an
// fsync still in flight, which only a failed wait in sync leaves.
func (a *aioSyncer) close() {
	_, _, _ = syscall.Syscall(syscall.SYS_IO_DESTROY, a.ctx, 0, 0)
	_ = a.event.Close()
}
