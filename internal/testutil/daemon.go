package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// BuildBinaries builds xipvsd and xipvsadm into dir and returns their
// paths.
func BuildBinaries(dir string) (xipvsd, xipvsadm string, err error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", "", err
	}
	xipvsd = filepath.Join(dir, "xipvsd")
	xipvsadm = filepath.Join(dir, "xipvsadm")
	for bin, pkg := range map[string]string{xipvsd: "./cmd/xipvsd", xipvsadm: "./cmd/xipvsadm"} {
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go build %s: %w: %s", pkg, err, out)
		}
	}
	return xipvsd, xipvsadm, nil
}

// ModuleRoot is the directory of go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the xipvs module")
	}
	return filepath.Dir(mod), nil
}

// Daemon is an xipvsd process running in a namespace.
type Daemon struct {
	Socket string
	cmd    *exec.Cmd
	mu     sync.Mutex
	logs   bytes.Buffer
	done   chan struct{}
}

type lockedWriter struct{ d *Daemon }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.d.mu.Lock()
	defer w.d.mu.Unlock()
	return w.d.logs.Write(p)
}

// StartDaemon runs `xipvsd args... --socket socket` in ns and waits until
// it accepts connections on its socket.
func StartDaemon(ns Netns, bin, socket string, args ...string) (*Daemon, error) {
	d := &Daemon{Socket: socket, done: make(chan struct{})}
	// The saved configuration goes next to the socket, not to
	// /run/xipvs, unless the caller says where.
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--state-file") }) {
		args = append(args, "--state-file", filepath.Join(filepath.Dir(socket), "state.json"))
	}
	d.cmd = ns.Exec(bin, append(args, "--socket", socket)...)
	d.cmd.Stdout, d.cmd.Stderr = lockedWriter{d}, lockedWriter{d}
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start xipvsd: %w", err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-d.done:
			return nil, fmt.Errorf("xipvsd exited early: %s", d.Logs())
		default:
		}
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			return d, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.Kill()
	return nil, fmt.Errorf("xipvsd did not open %s: %s", socket, d.Logs())
}

// Logs returns what the daemon printed so far.
func (d *Daemon) Logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logs.String()
}

// Stop sends SIGTERM and waits for the exit.
func (d *Daemon) Stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.Kill()
	}
}

// Signal sends sig to the daemon.
func (d *Daemon) Signal(sig os.Signal) error { return d.cmd.Process.Signal(sig) }

// Kill sends SIGKILL and waits for the exit.
func (d *Daemon) Kill() {
	_ = d.cmd.Process.Kill()
	<-d.done
}

// Wait waits for the daemon to exit (after a signal), at most 30 s; then
// it is killed.
func (d *Daemon) Wait() {
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		d.Kill()
	}
}

// DemoBinaries checks that the demos run as root and finds xipvsd and
// xipvsadm in dir (absolute paths).
func DemoBinaries(dir string) (xipvsd, xipvsadm string, err error) {
	if os.Geteuid() != 0 {
		return "", "", fmt.Errorf("run as root (it makes network namespaces and attaches XDP)")
	}
	if xipvsd, err = filepath.Abs(filepath.Join(dir, "xipvsd")); err != nil {
		return "", "", err
	}
	xipvsadm = filepath.Join(filepath.Dir(xipvsd), "xipvsadm")
	for _, b := range []string{xipvsd, xipvsadm} {
		if _, err := os.Stat(b); err != nil {
			return "", "", fmt.Errorf("%s missing: run `make build` first", b)
		}
	}
	return xipvsd, xipvsadm, nil
}

// Pid is the daemon's process id.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// DemoStep prints a demo's step heading.
func DemoStep(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

// DemoIndent prints s indented under a step.
func DemoIndent(s string) {
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		fmt.Println("    " + l)
	}
}

// DemoCleanup is a demo's deferred end: it closes the lab and says so.
func DemoCleanup(err *error, close func() error) {
	DemoStep("Cleaning up")
	*err = errors.Join(*err, close())
	if *err == nil {
		fmt.Println("removed every namespace, link, state file and process the demo made")
	}
}
