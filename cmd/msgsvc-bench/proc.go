package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a server process under test.
type proc struct {
	cmd  *exec.Cmd
	addr string
	done chan error
}

// startProc runs path with args and extra environment, and waits for the
// JSON log line {"msg":"listening","addr":...} on its stdout. The rest of its
// stdout is read and dropped, as a log shipper would.
func startProc(path string, args []string, env []string) (*proc, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				addrc <- line.Addr
				break
			}
		}
		_, _ = io.Copy(io.Discard, out)
		p.done <- cmd.Wait()
	}()
	select {
	case p.addr = <-addrc:
		return p, nil
	case err := <-p.done:
		return nil, fmt.Errorf("%s exited before listening: %w", path, err)
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("%s did not start listening within 30s", path)
	}
}

// peakRSS returns the process's peak resident set size (VmHWM) in MiB.
func (p *proc) peakRSS() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// stop sends SIGTERM and waits for a graceful exit.
func (p *proc) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		return err
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		return fmt.Errorf("pid %d did not stop within 60s of SIGTERM", p.cmd.Process.Pid)
	}
}

// cpuTime returns the CPU time (user and system) the process has used so
// far, from /proc/<pid>/stat, or 0 where that cannot be read.
func (p *proc) cpuTime() time.Duration {
	return pidCPU(p.cmd.Process.Pid)
}

// pidCPU returns the CPU time (user and system) that process pid has used
// so far, from /proc/<pid>/stat, or 0 where that cannot be read.
func pidCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, field 2, is in parentheses and may hold spaces:
	// count fields after its closing one. utime and stime are fields 14
	// and 15, in clock ticks (USER_HZ, 100 on Linux).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * (time.Second / 100)
}

// machineCPU is a snapshot of where the machine's CPU time has gone so far:
// all cores together, from /proc/stat, and the processes of a workload.
type machineCPU struct {
	total, idle, iowait time.Duration // every core; total counts idle and iowait too
	server, self        time.Duration // the process under test, and this one (the load generator)
}

// readMachineCPU takes a snapshot, with server the pid of the process
// under test. Where /proc cannot be read, the machine's part stays zero.
func readMachineCPU(server int) machineCPU {
	m := machineCPU{server: pidCPU(server), self: pidCPU(os.Getpid())}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return m
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // "cpu" user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return m
	}
	for i, v := range f[1:9] {
		n, _ := strconv.ParseInt(v, 10, 64)
		d := time.Duration(n) * (time.Second / 100)
		m.total += d
		switch i {
		case 3:
			m.idle = d
		case 4:
			m.iowait = d
		}
	}
	return m
}

// cpuShares says where the machine's CPU went from a to b, as shares of
// all its cores: the process under test, the load generator (this
// process), everything else that ran (the kernel's own threads among it),
// idle, and idle waiting for I/O.
func cpuShares(a, b machineCPU) string {
	total := b.total - a.total
	if total <= 0 {
		return "not measured (no /proc/stat)"
	}
	server, self := b.server-a.server, b.self-a.self
	idle, iowait := b.idle-a.idle, b.iowait-a.iowait
	other := total - server - self - idle - iowait
	pct := func(d time.Duration) float64 { return 100 * float64(d) / float64(total) }
	return fmt.Sprintf("server %.0f%%, load generator %.0f%%, other %.0f%%, idle %.0f%%, I/O wait %.0f%%",
		pct(server), pct(self), pct(max(other, 0)), pct(idle), pct(iowait))
}
