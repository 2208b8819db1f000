package main

import (
	"os"
	"testing"
	"time"
)

func TestCPUShares(t *testing.T) {
	s := time.Second
	for _, tc := range []struct {
		name string
		a, b machineCPU
		want string
	}{
		{
			name: "every part",
			a:    machineCPU{total: 100 * s, idle: 40 * s, iowait: 1 * s, server: 5 * s, self: 3 * s},
			b:    machineCPU{total: 120 * s, idle: 42 * s, iowait: 2 * s, server: 15 * s, self: 8 * s},
			want: "server 50%, load generator 25%, other 10%, idle 10%, I/O wait 5%",
		},
		{
			// Ticks are read at different instants: the processes' sum
			// can pass the machine's by a tick, which is no negative share.
			name: "rounding",
			a:    machineCPU{total: 10 * s},
			b:    machineCPU{total: 20 * s, server: 6 * s, self: 5 * s},
			want: "server 60%, load generator 50%, other 0%, idle 0%, I/O wait 0%",
		},
		{
			name: "no /proc/stat",
			a:    machineCPU{server: s},
			b:    machineCPU{server: 2 * s},
			want: "not measured (no /proc/stat)",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := cpuShares(tc.a, tc.b); got != tc.want {
				t.Errorf("cpuShares = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestReadMachineCPU reads this machine: the cores' time grows with the
// wall clock, and this process's with the work it does.
func TestReadMachineCPU(t *testing.T) {
	if _, err := os.Stat("/proc/stat"); err != nil {
		t.Skip("no /proc/stat here")
	}
	a := readMachineCPU(os.Getpid())
	for deadline := time.Now().Add(150 * time.Millisecond); time.Now().Before(deadline); {
		// Spin: CPU time is counted in ticks of 10 ms.
	}
	b := readMachineCPU(os.Getpid())
	if b.total <= a.total || b.idle < a.idle || b.iowait < a.iowait {
		t.Errorf("the machine's time did not grow: %+v then %+v", a, b)
	}
	if b.self <= a.self || b.server <= a.server {
		t.Errorf("this process's CPU time did not grow: %+v then %+v", a, b)
	}
}
