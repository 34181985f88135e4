package testutil

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ClusterPlan describes a scale-out lab: N directors announcing the VIPs
// over BGP to a router running BIRD 2, which spreads the clients' flows
// over them with ECMP (L4 hash); DR reals share the directors' segment.
//
//	client (NET2.1) -- eth1 router (NET2.254 / NET.254) eth0 -- fabric LAN
//	fabric LAN: directors d1..dN (NET.2..), reals rs1..rsM (NET.11..)
type ClusterPlan struct {
	Prefix string
	// Fabric and Clients are /24 prefixes without the last octet.
	Fabric, Clients string
	Directors       int
	Reals           int
	VIPs            []netip.Addr
	// RouterASN and DirectorASN are the router's and the directors' AS.
	RouterASN, DirectorASN uint32
	// HoldTime is the BGP hold time BIRD proposes (3 s at least).
	HoldTime time.Duration
	// BFD runs BFD between BIRD and the directors (the directors' peers
	// need bfd too).
	BFD bool
}

// Cluster is a built ClusterPlan.
type Cluster struct {
	Plan   ClusterPlan
	Fabric *LAN
	Client *Host
	Router *Host
	Reals  []*Host
	// DirectorSet's Dir also holds BIRD's configuration and socket.
	DirectorSet
	bird    *exec.Cmd
	birdOut *strings.Builder
}

// RouterAddr is the router's address on the fabric.
func (c *Cluster) RouterAddr() netip.Addr {
	return netip.MustParseAddr(c.Plan.Fabric + ".254")
}

// NewCluster builds p and starts BIRD on the router. On error, what was
// made is removed.
func NewCluster(p ClusterPlan) (_ *Cluster, err error) {
	if _, err := exec.LookPath("bird"); err != nil {
		return nil, fmt.Errorf("bird (BIRD 2) not installed: apt-get install bird2: %w", err)
	}
	c := &Cluster{Plan: p, DirectorSet: DirectorSet{Daemons: make([]*Daemon, p.Directors)}}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	if c.Dir, err = os.MkdirTemp("", p.Prefix+"-"); err != nil {
		return nil, err
	}
	pfx := func(net string, host int) netip.Prefix {
		return netip.MustParsePrefix(fmt.Sprintf("%s.%d/24", net, host))
	}
	if c.Fabric, err = NewLAN(p.Prefix); err != nil {
		return nil, err
	}
	if c.Router, err = c.Fabric.AddHost("gw", pfx(p.Fabric, 254), HostOptions{}); err != nil {
		return nil, err
	}
	if c.Client, err = AddNetnsHost(p.Prefix+"-cl", c.Router, "eth1", pfx(p.Clients, 254), pfx(p.Clients, 1)); err != nil {
		return nil, err
	}
	c.Fabric.names = append(c.Fabric.names, c.Client.Name)
	for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv4.fib_multipath_hash_policy", "1"},
		{"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.default.rp_filter", "0"}} {
		if err := c.Router.Sysctl(kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	if err := c.Client.IP("route", "add", "default", "via", p.Clients+".254"); err != nil {
		return nil, err
	}
	// The router's ECMP hash is the skb's L4 hash when it has one, and a
	// veth carries the client socket's: Linux re-randomizes it on every
	// retransmission timeout (txrehash), which would move a stalled flow
	// to another director by chance. A router hashes a flow from a NIC
	// the same way every time: keep the socket's hash.
	if err := c.Client.Sysctl("net.core.txrehash", "0"); err != nil {
		return nil, err
	}
	for i := 0; i < p.Directors; i++ {
		d, err := c.Fabric.AddHost(fmt.Sprintf("d%d", i+1), pfx(p.Fabric, 2+i), HostOptions{XDPPeer: true})
		if err != nil {
			return nil, err
		}
		// A NIC drops unicast frames for other MACs; a veth hands them
		// all to XDP. When a director's port goes down the bridge floods
		// frames for its MAC to the others, which would pick its flows up
		// at once and hide the failover the routers really go through:
		// no unknown unicast to the directors' ports, as on a switch with
		// real NICs behind it.
		if err := c.Fabric.Switch.Exec("bridge", "link", "set", "dev", "p-"+fmt.Sprintf("d%d", i+1), "flood", "off").Run(); err != nil {
			return nil, fmt.Errorf("bridge link set flood off: %w", err)
		}
		// The VIPs are local (on lo), as on a director that announces
		// them; the router reaches them through the BGP next hop.
		for _, v := range p.VIPs {
			if err := d.IP("addr", "add", v.String()+"/32", "dev", "lo"); err != nil {
				return nil, err
			}
		}
		if err := d.IP("route", "add", "default", "via", p.Fabric+".254"); err != nil {
			return nil, err
		}
		c.Directors = append(c.Directors, d)
	}
	for i := 0; i < p.Reals; i++ {
		rs, err := c.Fabric.AddHost(fmt.Sprintf("rs%d", i+1), pfx(p.Fabric, 11+i), HostOptions{TxChecksumOff: true})
		if err != nil {
			return nil, err
		}
		if err := rs.MakeRealServer(p.VIPs...); err != nil {
			return nil, err
		}
		if err := rs.IP("route", "add", "default", "via", p.Fabric+".254"); err != nil {
			return nil, err
		}
		c.Reals = append(c.Reals, rs)
	}
	return c, c.startBird()
}

// AddNetnsHost makes namespace name linked to host h by a veth pair: h's
// end is dev at hAddr, the new namespace's eth0 is at addr.
func AddNetnsHost(name string, h *Host, dev string, hAddr, addr netip.Prefix) (*Host, error) {
	ns, err := AddNetns(name)
	if err != nil {
		return nil, err
	}
	nh := &Host{Netns: ns, Addr: addr}
	for _, step := range []func() error{
		func() error {
			return h.IP("link", "add", dev, "numtxqueues", "1", "numrxqueues", "1", "type", "veth",
				"peer", "name", "eth0", "netns", ns.Name, "numtxqueues", "1", "numrxqueues", "1")
		},
		func() error { return h.IP("addr", "add", hAddr.String(), "dev", dev) },
		func() error { return h.IP("link", "set", dev, "up") },
		func() error { return ns.IP("addr", "add", addr.String(), "dev", "eth0") },
		func() error { return ns.IP("link", "set", "eth0", "up") },
		func() error { return ns.SetTxChecksum("eth0", false) },
	} {
		if err := step(); err != nil {
			return nh, errors.Join(err, DelNetns(name))
		}
	}
	return nh, nil
}

// birdConf is the router's BIRD 2 configuration: the directors as eBGP
// neighbours, every route learnt installed with ECMP (merge paths).
func (c *Cluster) birdConf() string {
	p := c.Plan
	var b strings.Builder
	hold := int(p.HoldTime / time.Second)
	if hold < 3 {
		hold = 3
	}
	fmt.Fprintf(&b, `router id %s;
protocol device { scan time 1; }
protocol kernel {
	ipv4 { import none; export all; };
	merge paths yes;
	learn no;
	scan time 1;
}
`, c.RouterAddr())
	if p.BFD {
		b.WriteString(`protocol bfd {
	interface "eth0" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };
}
`)
	}
	for i := range c.Directors {
		bfd := ""
		if p.BFD {
			bfd = "\tbfd on;\n"
		}
		fmt.Fprintf(&b, `protocol bgp d%d {
	local %s as %d;
	neighbor %s.%d as %d;
	hold time %d;
	keepalive time %d;
	connect retry time 1;
	error wait time 1, 5;
%s	ipv4 { import all; export none; };
}
`, i+1, c.RouterAddr(), p.RouterASN, p.Fabric, 2+i, p.DirectorASN, hold, max(hold/3, 1), bfd)
	}
	return b.String()
}

func (c *Cluster) startBird() error {
	conf := filepath.Join(c.Dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(c.birdConf()), 0o600); err != nil {
		return err
	}
	c.birdOut = &strings.Builder{}
	c.bird = c.Router.Exec("bird", "-f", "-c", conf, "-s", filepath.Join(c.Dir, "bird.ctl"), "-P", filepath.Join(c.Dir, "bird.pid"))
	c.bird.Stdout, c.bird.Stderr = c.birdOut, c.birdOut
	if err := c.bird.Start(); err != nil {
		return fmt.Errorf("start bird: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := c.Birdc("show", "status"); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("bird did not start: %s", c.birdOut.String())
}

// Birdc runs birdc against the router's BIRD.
func (c *Cluster) Birdc(args ...string) (string, error) {
	out, err := exec.Command("birdc", append([]string{"-s", filepath.Join(c.Dir, "bird.ctl")}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// NextHops returns the router's kernel next hops toward a (none when it
// has no route of its own to a, only the default).
func (c *Cluster) NextHops(a netip.Addr) ([]netip.Addr, error) {
	out, err := c.Router.Exec("ip", "-4", "route", "show", "exact", a.String()+"/32").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ip route show: %w: %s", err, out)
	}
	var hops []netip.Addr
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "via" {
			if h, err := netip.ParseAddr(f[i+1]); err == nil {
				hops = append(hops, h)
			}
		}
	}
	return hops, nil
}

// WaitNextHops waits until the router's route to a has n next hops.
func (c *Cluster) WaitNextHops(a netip.Addr, n int, timeout time.Duration) ([]netip.Addr, error) {
	deadline := time.Now().Add(timeout)
	for {
		hops, err := c.NextHops(a)
		if err == nil && len(hops) == n {
			return hops, nil
		}
		if time.Now().After(deadline) {
			return hops, fmt.Errorf("route to %v: next hops %v, want %d (err %v)", a, hops, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BirdLog is what BIRD printed.
func (c *Cluster) BirdLog() string {
	if c.birdOut == nil {
		return ""
	}
	return c.birdOut.String()
}

// Close stops the daemons and BIRD and removes every namespace and file
// the cluster made.
func (c *Cluster) Close() error {
	if c.bird != nil && c.bird.Process != nil {
		_ = c.bird.Process.Kill()
		_ = c.bird.Wait()
		c.bird = nil
	}
	return c.closeAll(c.Fabric)
}
