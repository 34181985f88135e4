package testutil

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netns is a named network namespace (ip netns).
type Netns struct {
	Name string
}

// IP runs `ip -n NS args...`.
func (n Netns) IP(args ...string) error {
	return Run("ip", append([]string{"-n", n.Name}, args...)...)
}

// Exec returns a command that runs inside the namespace.
func (n Netns) Exec(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Do runs fn on an OS thread that has joined the namespace. Sockets fn
// opens stay in the namespace after Do returns.
func (n Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is left locked and so discarded when the goroutine
		// ends if restoring it fails.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(n.Name)
		if err != nil {
			errc <- fmt.Errorf("netns %s: %w", n.Name, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", n.Name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// Sysctl writes a sysctl (dotted name) inside the namespace.
func (n Netns) Sysctl(name, value string) error {
	return n.Do(func() error {
		p := "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s in %s: %w", name, value, n.Name, err)
		}
		return nil
	})
}

// SetTxChecksum turns TX checksum offload of dev on or off (ethtool -K dev
// tx on|off): a veth sender leaves checksums partial otherwise, and a
// frame XDP forwards would reach its receiver with a bad checksum.
func (n Netns) SetTxChecksum(dev string, on bool) error {
	return n.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		const ethtoolSTxCsum = 0x17
		val := struct{ cmd, data uint32 }{cmd: ethtoolSTxCsum}
		if on {
			val.data = 1
		}
		if err := ethtoolIoctl(fd, dev, &val); err != nil {
			return fmt.Errorf("ethtool tx %v on %s in %s: %w", on, dev, n.Name, err)
		}
		return nil
	})
}

// Run runs a command and returns its combined output in the error.
func Run(name string, args ...string) error {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// AddNetns creates a namespace; it fails if one of that name exists.
//
// A namespace of that name left behind by a run that was killed (no
// process in it) is deleted first; one with processes in it is an error.
func AddNetns(name string) (Netns, error) {
	if _, err := os.Stat("/run/netns/" + name); err == nil {
		out, err := exec.Command("ip", "netns", "pids", name).Output()
		if err != nil {
			return Netns{}, fmt.Errorf("netns %s exists: %w", name, err)
		}
		if pids := strings.Fields(string(out)); len(pids) > 0 {
			return Netns{}, fmt.Errorf("netns %s exists and is in use (pids %s)", name, strings.Join(pids, " "))
		}
		if err := DelNetns(name); err != nil {
			return Netns{}, fmt.Errorf("netns %s left over: %w", name, err)
		}
	}
	if err := Run("ip", "netns", "add", name); err != nil {
		return Netns{}, err
	}
	n := Netns{Name: name}
	return n, n.IP("link", "set", "lo", "up")
}

// DelNetns deletes a namespace and so every link in it.
func DelNetns(name string) error {
	return Run("ip", "netns", "delete", name)
}

// HTTPClient returns a client whose connections are opened inside the
// namespace, one new connection per request (no keep-alive), so each
// request is a new flow through a load balancer.
func (n Netns) HTTPClient(timeout time.Duration) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = n.Do(func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// Interface looks up interface name in the namespace.
func (n Netns) Interface(name string) (*net.Interface, error) {
	var ifc *net.Interface
	err := n.Do(func() (err error) {
		ifc, err = net.InterfaceByName(name)
		return
	})
	return ifc, err
}
