//go:build !(linux && (amd64 || arm64))

package sqlstore

import "os"

// aioSyncer is not built here: the syncer fsyncs the WAL with a plain
// fsync (see aiosync.go).
type aioSyncer struct{}

func newAIOSyncer() (*aioSyncer, error) { return nil, errAIOUnsupported }
func (*aioSyncer) sync(*os.File) error  { return errAIOUnsupported }
func (*aioSyncer) close()               {}
