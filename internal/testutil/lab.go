package testutil

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/xipvs/xipvs/bench/loadgen"
)

// LabPlan describes a director lab: an outside LAN with the client (.1)
// and the director's eth0 (.2), and optionally an inside LAN reached
// through the director's eth1 (.1) or through a router (.254 on both).
// Real server N (from 1) is at .(10+N) of its LAN and is named rsN; the
// first OutsideReals are outside, the next InsideReals inside.
type LabPlan struct {
	// Prefix names the namespaces (PREFIX-cl, PREFIX-lb, PREFIXi-rs3...).
	Prefix string
	// Outside and Inside are /24 prefixes without the last octet, as
	// "10.77.0"; Inside empty means one LAN.
	Outside, Inside string
	// Routed puts a router (gw) between the LANs instead of giving the
	// director a leg (eth1) on the inside LAN.
	Routed                    bool
	OutsideReals, InsideReals int
	// VIPs are added to the director's eth0 as /32 (it answers ARP for
	// them, as lvs.sh's eth0:1 alias).
	VIPs []netip.Addr
}

// Lab is a built LabPlan. Close removes everything it made.
type Lab struct {
	Plan             LabPlan
	Out, In          *LAN
	Client, Director *Host
	Router           *Host // Routed plans only
	Reals            []*Host
	// Dir is a private directory for the daemon's socket and state.
	Dir    string
	Socket string
	Daemon *Daemon
	// Attacker is AddAttacker's host.
	Attacker *Host
	atkProgs *loadgen.Programs
	atkDrop  *loadgen.Attachment
}

// AddAttacker links a new host, PREFIX-atk, straight to the director:
// the director's atk0 at NET.1/24, the host's eth0 at NET.2/24 (NET as
// "10.96.0"), its default route through the director. A flood from it
// reaches the director the way traffic from an upstream link does, and
// what the director sends back to the spoofed sources costs neither a
// software bridge nor the host's stack (SYNFlood drops it in XDP), so
// the host is also the legitimate client sharing that link (and the
// director's rx queue) with the flood. Call it before StartDaemon, which
// then serves atk0 as well.
func (l *Lab) AddAttacker(subnet string) (*Host, error) {
	ns, err := AddNetns(l.Plan.Prefix + "-atk")
	if err != nil {
		return nil, err
	}
	h := &Host{Netns: ns, Addr: netip.MustParsePrefix(subnet + ".2/24")}
	l.Attacker = h
	steps := []func() error{
		func() error {
			return l.Director.IP("link", "add", "atk0", "numtxqueues", "1", "numrxqueues", "1", "type", "veth",
				"peer", "name", "eth0", "netns", ns.Name, "numtxqueues", "1", "numrxqueues", "1")
		},
		func() error { return l.Director.IP("addr", "add", subnet+".1/24", "dev", "atk0") },
		func() error { return l.Director.IP("link", "set", "atk0", "up") },
		func() error { return ns.IP("addr", "add", h.Addr.String(), "dev", "eth0") },
		func() error { return ns.IP("link", "set", "eth0", "up") },
		func() error { return ns.IP("route", "add", "default", "via", subnet+".1") },
		func() error { return ns.SetTxChecksum("eth0", false) },
		func() error {
			return ns.Do(func() error {
				ifc, err := net.InterfaceByName("eth0")
				if err != nil {
					return err
				}
				h.MAC = ifc.HardwareAddr
				// What comes back to the spoofed sources (SYN-ACKs) is
				// dropped in XDP, not handed to the host's stack; the
				// host's own traffic passes. (An XDP program here also
				// lets the director's XDP_TX reach the host at all.)
				if l.atkProgs, err = loadgen.Open(loadgen.Options{}); err != nil {
					return err
				}
				l.atkDrop, err = l.atkProgs.AttachSpoofedDrop(ifc.Index)
				return err
			})
		},
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// NewLab builds p. On error, what was made is removed.
func NewLab(p LabPlan) (_ *Lab, err error) {
	l := &Lab{Plan: p}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
		}
	}()
	if l.Dir, err = os.MkdirTemp("", p.Prefix+"-"); err != nil {
		return nil, err
	}
	l.Socket = filepath.Join(l.Dir, "xipvsd.sock")
	pfx := func(net string, host int) netip.Prefix {
		return netip.MustParsePrefix(fmt.Sprintf("%s.%d/24", net, host))
	}
	if l.Out, err = NewLAN(p.Prefix); err != nil {
		return nil, err
	}
	if l.Client, err = l.Out.AddHost("cl", pfx(p.Outside, 1), HostOptions{TxChecksumOff: true}); err != nil {
		return nil, err
	}
	if l.Director, err = l.Out.AddHost("lb", pfx(p.Outside, 2), HostOptions{XDPPeer: true}); err != nil {
		return nil, err
	}
	for _, v := range p.VIPs {
		if err := l.Director.IP("addr", "add", v.String()+"/32", "dev", "eth0"); err != nil {
			return nil, err
		}
	}
	if p.Inside != "" {
		if err := l.inside(pfx); err != nil {
			return nil, err
		}
	}
	for i := 1; i <= p.OutsideReals+p.InsideReals; i++ {
		lan, net := l.Out, p.Outside
		if i > p.OutsideReals {
			lan, net = l.In, p.Inside
		}
		rs, err := lan.AddHost(fmt.Sprintf("rs%d", i), pfx(net, 10+i), HostOptions{TxChecksumOff: true})
		if err != nil {
			return nil, err
		}
		l.Reals = append(l.Reals, rs)
	}
	return l, nil
}

// inside makes the inside LAN and the director's way to it.
func (l *Lab) inside(pfx func(string, int) netip.Prefix) (err error) {
	p := l.Plan
	if l.In, err = NewLAN(p.Prefix + "i"); err != nil {
		return err
	}
	if !p.Routed {
		return l.In.Attach(l.Director, "lb", "eth1", pfx(p.Inside, 1), HostOptions{XDPPeer: true})
	}
	if l.Router, err = l.Out.AddHost("gw", pfx(p.Outside, 254), HostOptions{}); err != nil {
		return err
	}
	if err := l.In.Attach(l.Router, "gw", "eth1", pfx(p.Inside, 254), HostOptions{}); err != nil {
		return err
	}
	for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv4.conf.all.rp_filter", "0"},
		{"net.ipv4.conf.eth0.rp_filter", "0"}, {"net.ipv4.conf.eth1.rp_filter", "0"}} {
		if err := l.Router.Sysctl(kv[0], kv[1]); err != nil {
			return err
		}
	}
	return l.Director.IP("route", "add", p.Inside+".0/24", "via", p.Outside+".254")
}

// RealName is a real server's short name (rs1, rs2, ...).
func (l *Lab) RealName(h *Host) string {
	return h.Name[strings.LastIndex(h.Name, "-")+1:]
}

// StartDaemon starts xipvsd (bin) on the director with args, on eth0 or
// eth0,eth1 unless args give -i, its socket and state in Dir.
func (l *Lab) StartDaemon(bin string, args ...string) error {
	if !slices.Contains(args, "-i") {
		ifaces := "eth0"
		if l.In != nil && !l.Plan.Routed {
			ifaces = "eth0,eth1"
		}
		if l.Attacker != nil {
			ifaces += ",atk0"
		}
		args = append([]string{"-i", ifaces}, args...)
	}
	d, err := StartDaemon(l.Director.Netns, bin, l.Socket, args...)
	if err != nil {
		return err
	}
	l.Daemon = d
	return nil
}

// Adm runs xipvsadm (bin) against the lab's daemon and returns its
// standard output; the error carries its standard error.
func (l *Lab) Adm(bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "XIPVS_SOCKET="+l.Socket)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("xipvsadm %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// Close stops the daemon and removes every namespace and file the lab
// made.
func (l *Lab) Close() error {
	if l.Daemon != nil {
		l.Daemon.Stop()
		l.Daemon = nil
	}
	var err error
	if l.atkDrop != nil {
		l.atkDrop.Close()
		l.atkDrop = nil
	}
	if l.atkProgs != nil {
		l.atkProgs.Close()
		l.atkProgs = nil
	}
	if l.Attacker != nil {
		err = errors.Join(err, DelNetns(l.Attacker.Name))
		l.Attacker = nil
	}
	if l.In != nil {
		err = errors.Join(err, l.In.Close())
	}
	if l.Out != nil {
		err = errors.Join(err, l.Out.Close())
	}
	if l.Dir != "" {
		err = errors.Join(err, os.RemoveAll(l.Dir))
	}
	return err
}

// NewTestLab builds p for a test: it fails the test on error, and on
// cleanup prints the daemon's log if the test failed, then closes the lab.
func NewTestLab(t testing.TB, p LabPlan) *Lab {
	t.Helper()
	RequirePrivileged(t)
	l, err := NewLab(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l.Daemon != nil && t.Failed() {
			t.Logf("xipvsd log:\n%s", l.Daemon.Logs())
		}
		if err := l.Close(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
	})
	return l
}
