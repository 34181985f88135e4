package bench

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/bench/loadgen"
	"github.com/xipvs/xipvs/internal/api"
	"github.com/xipvs/xipvs/internal/testutil"
	"github.com/xipvs/xipvs/internal/testutil/pass"
)

// The wire: the packet-rate topology. A generator namespace is joined by
// one veth pair to each subject's director namespace: the ceiling, the
// reference load balancer, xipvs (one xipvsd, a service per forwarding
// method), nftables, two xipvs directors that take the SYN streams (one
// on a single-queue veth, one on a two-queue veth) and an nftables one
// that takes nftables' SYN streams, so that the millions of connections
// those make are not in the table (or conntrack) of the director whose
// established flows are measured. A
// director is one-armed, as in LVS-DR: the generator transmits client
// frames into it, it forwards them back out of eth0 toward a real
// server's MAC, and the sink on the generator's side counts them per
// destination MAC, that is per real server, and drops them. The real
// servers are neighbour entries on the director: nothing answers for
// them, so no receiving stack is in the measurement. The MTU is 1600 so
// that a 1500-byte frame still fits after TUN's 20-byte IPIP header. All
// veth pairs are alike, so subjects measured seconds apart on different
// pairs compare as on one.
var (
	wireGenMAC = net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0x01}
	wireLbMAC  = net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0x02}
	wireLIP    = netip.MustParseAddr("10.77.0.250")
	// wireStreamLIPs are the FULLNAT SYN stream's local addresses: each
	// embryonic connection holds its port until its SYN_RECV timeout, so
	// the stream needs far more than one address's 64,512.
	wireStreamLIPs = []string{"10.77.0.232", "10.77.0.233", "10.77.0.234", "10.77.0.235", "10.77.0.236", "10.77.0.237", "10.77.0.238", "10.77.0.239",
		"10.77.0.240", "10.77.0.241", "10.77.0.242", "10.77.0.243", "10.77.0.244", "10.77.0.245", "10.77.0.246", "10.77.0.247"}
	wireEstBase = netip.MustParseAddr("10.78.0.1") // established flows' clients
	wireSynBase = netip.MustParseAddr("10.90.0.1") // the SYN streams' clients
	wireReals   = []netip.Addr{netip.MustParseAddr("10.77.0.11"), netip.MustParseAddr("10.77.0.12"), netip.MustParseAddr("10.77.0.13")}
	wireWeights = []int{1, 2, 3}
	// wireVIPs are the xipvs director's services, one per forwarding
	// method, a wlc and an mh one (new flows scheduled in XDP from Go's
	// lookahead and from its Maglev table), a persistent wlc one (-p 300:
	// XDP follows or makes the client's template), one per other scheduler,
	// and a wlc one whose new flows xipvsd is told Go schedules (the slow
	// path); the ceiling, reference LB and
	// nftables use the DR VIP.
	wireVIPs = map[string]netip.Addr{
		"dr": netip.MustParseAddr("10.77.0.100"), "tun": netip.MustParseAddr("10.77.0.101"),
		"nat": netip.MustParseAddr("10.77.0.102"), "fullnat": netip.MustParseAddr("10.77.0.103"),
		"slowpath": netip.MustParseAddr("10.77.0.104"), "wlc": netip.MustParseAddr("10.77.0.105"),
		"mh": netip.MustParseAddr("10.77.0.106"), "wlcp": netip.MustParseAddr("10.77.0.107"),
		"rr": netip.MustParseAddr("10.77.0.108"), "lc": netip.MustParseAddr("10.77.0.109"),
		"sed": netip.MustParseAddr("10.77.0.110"), "nq": netip.MustParseAddr("10.77.0.111"),
		"sh": netip.MustParseAddr("10.77.0.112"), "dh": netip.MustParseAddr("10.77.0.113"),
		"lblc": netip.MustParseAddr("10.77.0.114"), "fo": netip.MustParseAddr("10.77.0.115"),
		"ovf": netip.MustParseAddr("10.77.0.116"), "twos": netip.MustParseAddr("10.77.0.117"),
		"fnatwlc": netip.MustParseAddr("10.77.0.118"), "lblcr": netip.MustParseAddr("10.77.0.119"),
		"dr6": netip.MustParseAddr("fd77::100"), "nat6": netip.MustParseAddr("fd77::102"),
		"slowpath6": netip.MustParseAddr("fd77::104"), "wlc6": netip.MustParseAddr("fd77::105"),
		"mh6": netip.MustParseAddr("fd77::106"),
	}
	// IPv6: the same reals (same MACs) at fd77::b, ::c, ::d, and clients
	// whose addresses differ in their last 32 bits.
	wireReals6   = []netip.Addr{netip.MustParseAddr("fd77::b"), netip.MustParseAddr("fd77::c"), netip.MustParseAddr("fd77::d")}
	wireEstBase6 = netip.MustParseAddr("fd78::1:0")
	wireSynBase6 = netip.MustParseAddr("fd90::1:0")
)

// realsOf are the wire's real servers of vip's family.
func realsOf(vip netip.Addr) []netip.Addr {
	if vip.Is6() {
		return wireReals6
	}
	return wireReals
}

const (
	wireMTU      = 1600
	wirePorts    = 64      // source ports per client address of the established flows
	synPorts     = 60000   // of the SYN streams
	sendChunk    = 65536   // frames per live-frames call while measuring
	setupChunk   = 32      // frames per call while setting flows up (a slow path's pace)
	setupPasses  = 20      // SYN passes at most before giving up on setting every flow up
	synSeqStride = 1 << 26 // SYN stream tuples per sample: never reused in a run
)

func wireRealMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x77, 0, 0, 0, byte(0x0b + i)}
}

// Wire subjects (director namespaces).
const (
	dirCeiling  = "ceiling"
	dirRefLB    = "reference-lb"
	dirXipvs    = "xipvs"
	dirNft      = "nftables"
	dirNftNew   = "nftables-new"
	dirXipvsNew = "xipvs-new"
	dirXipvs2Q  = "xipvs-new-2q"
)

// newFlowTable is the connection table of the directors that take the
// SYN streams: their sweeps stay short, as a busy director's would with
// a table sized for its rate.
const newFlowTable = "262144"

// director is one subject's namespace on the wire.
type director struct {
	ns           testutil.Netns
	genIf, lbIf  int
	queues       int
	attachments  []*loadgen.Attachment
	x            *xipvs
	nftInstalled bool
	// The generator's end of the link: its sender (live frames, or
	// AF_XDP sockets on every queue) and, with AF_XDP, the closed loop
	// seeded through them.
	sender *loadgen.Sender
	loop   *loadgen.Loop
}

type wire struct {
	gen          testutil.Netns
	dirs         map[string]*director
	order        []string // creation order, for cleanup
	lg           *loadgen.Programs
	names        []string
	synSeq       uint64
	flows, ports uint32
	senders      int
	// method is how the packet rates are generated: live frames (open
	// loop, where the kernel allows them) or AF_XDP (the closed loop).
	method loadgen.Method
	why    string // why that method
}

// Generator names how the wire's rows were generated.
func (w *wire) Generator() string {
	if w.method == loadgen.LiveFrames {
		return "live-frames"
	}
	return "closed-loop"
}

func newWire(prefix string, o Options) (_ *wire, err error) {
	w := &wire{flows: uint32(o.Flows), ports: wirePorts, senders: max(o.Senders, 1), dirs: map[string]*director{}}
	defer func() {
		if err != nil {
			err = errors.Join(err, w.Close())
		}
	}()
	if w.gen, err = testutil.AddNetns(prefix + "-gen"); err != nil {
		return nil, err
	}
	w.names = append(w.names, w.gen.Name)
	if w.lg, err = loadgen.Open(loadgen.Options{CeilingDst: wireRealMAC(0), CeilingSrc: wireLbMAC}); err != nil {
		return nil, err
	}
	if w.method, w.why, err = pickGenerator(w.lg, o.Generator); err != nil {
		return nil, err
	}
	o.logf("packet rates: %s (%s)", w.Generator(), w.why)
	for i, name := range []string{dirCeiling, dirRefLB, dirXipvs, dirNft, dirXipvsNew, dirXipvs2Q, dirNftNew} {
		queues := 1
		if name == dirXipvs2Q {
			queues = 2
		}
		d, err := w.addDirector(prefix, i, queues)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		w.dirs[name] = d
		w.order = append(w.order, name)
	}
	return w, nil
}

// addDirector makes director namespace number i and its veth pair
// (g<i> in the generator's namespace, eth0 in the director's).
func (w *wire) addDirector(prefix string, i, queues int) (*director, error) {
	ns, err := testutil.AddNetns(fmt.Sprintf("%s-lb%d", prefix, i))
	if err != nil {
		return nil, err
	}
	w.names = append(w.names, ns.Name)
	d := &director{ns: ns, queues: queues}
	for _, n := range []testutil.Netns{ns, w.gen} {
		if err := n.Sysctl("net.ipv6.conf.default.disable_ipv6", "1"); err != nil {
			return nil, err
		}
	}
	mtu, q, g := strconv.Itoa(wireMTU), strconv.Itoa(queues), fmt.Sprintf("g%d", i)
	steps := []struct {
		ns   testutil.Netns
		args []string
	}{
		{w.gen, []string{"link", "add", g, "address", wireGenMAC.String(), "mtu", mtu, "numtxqueues", q, "numrxqueues", q, "type", "veth",
			"peer", "name", "eth0", "netns", ns.Name, "address", wireLbMAC.String(), "mtu", mtu, "numtxqueues", q, "numrxqueues", q}},
		{w.gen, []string{"link", "set", g, "up"}},
		{ns, []string{"addr", "add", "10.77.0.2/24", "dev", "eth0"}},
		{ns, []string{"addr", "add", wireLIP.String() + "/32", "dev", "eth0"}},
		{ns, []string{"link", "set", "eth0", "up"}},
		{ns, []string{"route", "add", "10.64.0.0/10", "via", "10.77.0.1"}},
		{ns, []string{"neigh", "replace", "10.77.0.1", "lladdr", wireGenMAC.String(), "dev", "eth0", "nud", "permanent"}},
	}
	for _, lip := range wireStreamLIPs {
		steps = append(steps, struct {
			ns   testutil.Netns
			args []string
		}{ns, []string{"addr", "add", lip + "/32", "dev", "eth0"}})
	}
	for j := range wireReals {
		for _, r := range []netip.Addr{wireReals[j], wireReals6[j]} {
			steps = append(steps, struct {
				ns   testutil.Netns
				args []string
			}{ns, []string{"neigh", "replace", r.String(), "lladdr", wireRealMAC(j).String(), "dev", "eth0", "nud", "permanent"}})
		}
	}
	// IPv6 on the director's side only (the generator's stays off: no
	// neighbour discovery on the wire), static neighbours as for IPv4;
	// enabled on eth0 once the first step has made it.
	steps = append(steps[:4], append([]struct {
		ns   testutil.Netns
		args []string
	}{
		{ns, []string{"-6", "addr", "add", "fd77::2/64", "dev", "eth0", "nodad"}},
	}, steps[4:]...)...)
	steps = append(steps, []struct {
		ns   testutil.Netns
		args []string
	}{
		{ns, []string{"-6", "neigh", "replace", "fd77::1", "lladdr", wireGenMAC.String(), "dev", "eth0", "nud", "permanent"}},
		{ns, []string{"-6", "route", "add", "fd78::/16", "via", "fd77::1"}},
		{ns, []string{"-6", "route", "add", "fd90::/16", "via", "fd77::1"}},
	}...)
	for i, s := range steps {
		if err := s.ns.IP(s.args...); err != nil {
			return nil, err
		}
		if i == 0 {
			if err := ns.Sysctl("net.ipv6.conf.eth0.disable_ipv6", "0"); err != nil {
				return nil, err
			}
		}
	}
	for _, kv := range [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.eth0.rp_filter", "0"},
		// It forwards out of the interface it received on: no redirects.
		{"net.ipv4.conf.all.send_redirects", "0"}, {"net.ipv4.conf.eth0.send_redirects", "0"},
		{"net.ipv6.conf.all.forwarding", "1"},
	} {
		if err := ns.Sysctl(kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	var err2 error
	if d.genIf, err2 = ifindex(w.gen, g); err2 != nil {
		return nil, err2
	}
	if d.lbIf, err2 = ifindex(ns, "eth0"); err2 != nil {
		return nil, err2
	}
	// The loop's near end: it counts what the director forwards, sends
	// the loop's frames back, and drops the rest (a sink).
	near, err := w.attachIn(w.gen, func() (*loadgen.Attachment, error) { return w.lg.AttachLoop(d.genIf) })
	if err != nil {
		return nil, err
	}
	d.attachments = append(d.attachments, near)
	if err := w.gen.Do(func() (err error) {
		d.sender, err = w.lg.NewSender(d.genIf, queues, w.method)
		return err
	}); err != nil {
		return nil, err
	}
	if w.method == loadgen.AFXDP {
		if d.loop, err = d.sender.NewLoop(loadgen.DefaultSlots); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// pickGenerator chooses how the wire generates its packet rates: want
// ("" for the best this kernel allows, "live-frames" or "closed-loop"),
// and why.
func pickGenerator(lg *loadgen.Programs, want string) (loadgen.Method, string, error) {
	live := lg.LiveFramesAllowed()
	switch want {
	case "":
		if live != nil {
			return loadgen.AFXDP, fmt.Sprintf("%v: frames seeded through AF_XDP and sent back to the subject by XDP on the generator's side", live), nil
		}
		return loadgen.LiveFrames, "this kernel allows live frames", nil
	case "live-frames":
		if live != nil {
			return "", "", live
		}
		return loadgen.LiveFrames, "asked for", nil
	case "closed-loop":
		return loadgen.AFXDP, "asked for", nil
	}
	return "", "", fmt.Errorf("generator %q: want live-frames or closed-loop", want)
}

func (w *wire) attachIn(ns testutil.Netns, fn func() (*loadgen.Attachment, error)) (*loadgen.Attachment, error) {
	var a *loadgen.Attachment
	err := ns.Do(func() (err error) { a, err = fn(); return })
	return a, err
}

// pinThread pins the calling (locked) thread to cpu and returns what
// undoes it.
func pinThread(cpu int) (func(), error) {
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, err
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("pin sender to cpu %d: %w", cpu, err)
	}
	return func() { _ = unix.SchedSetaffinity(0, &old) }, nil
}

func ifindex(ns testutil.Netns, name string) (int, error) {
	var idx int
	err := ns.Do(func() error {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		idx = ifc.Index
		return nil
	})
	return idx, err
}

// Close stops what runs on the wire and removes everything it made.
func (w *wire) Close() error {
	var err error
	for i := len(w.order) - 1; i >= 0; i-- {
		d := w.dirs[w.order[i]]
		if d.x != nil {
			d.x.stop()
		}
		if d.loop != nil {
			err = errors.Join(err, d.loop.Close())
		}
		if d.sender != nil {
			err = errors.Join(err, d.sender.Close())
		}
		for _, a := range d.attachments {
			err = errors.Join(err, a.Close())
		}
	}
	if w.lg != nil {
		err = errors.Join(err, w.lg.Close())
	}
	for i := len(w.names) - 1; i >= 0; i-- {
		err = errors.Join(err, testutil.DelNetns(w.names[i]))
	}
	w.names = nil
	return err
}

// template is a client frame to vip's port 80: size bytes over IPv4;
// over IPv6 the same payload, so 20 bytes more (frameSize).
func template(size int, src, vip netip.Addr, syn bool) []byte {
	return testutil.Frame{SrcMAC: wireGenMAC, DstMAC: wireLbMAC, Src: src, Dst: vip, SrcPort: 1024, DstPort: 80,
		SYN: syn, ACK: !syn, Payload: make([]byte, size-54)}.Build()
}

// frameSize is the frame the wire sends to vip for a size-byte IPv4 one.
func frameSize(size int, vip netip.Addr) int {
	if vip.Is6() {
		return size + 20
	}
	return size
}

// established are the established flows to vip.
func (w *wire) established(size int, vip netip.Addr, syn bool) loadgen.Flows {
	base := wireEstBase
	if vip.Is6() {
		base = wireEstBase6
	}
	return loadgen.Flows{Template: template(size, base, vip, syn), AddrBase: base, PortBase: 1024, Ports: w.ports, Count: w.flows}
}

var fwdFlag = map[string]string{"dr": "-g", "tun": "-i", "nat": "-m", "fullnat": "-b", "dr6": "-g", "nat6": "-m"}

// wireModes are the xipvs forwarding methods measured on the wire.
var wireModes = []string{"dr", "tun", "nat", "fullnat"}

// wireModes6 are the IPv6 forwarding methods measured on the wire, on the
// same director as wireModes.
var wireModes6 = []string{"dr6", "nat6"}

// setup prepares every subject: the ceiling and reference LB programs,
// xipvsd with a service per method (every established flow set up
// through it and checked against wrr's weights), nftables with the same
// flows in conntrack, and the two-queue xipvsd.
func (w *wire) setup(r *Report, o Options, work string) error {
	ceil, ref, xd, nd, xn, x2 := w.dirs[dirCeiling], w.dirs[dirRefLB], w.dirs[dirXipvs], w.dirs[dirNft], w.dirs[dirXipvsNew], w.dirs[dirXipvs2Q]
	a, err := w.attachIn(ceil.ns, func() (*loadgen.Attachment, error) { return w.lg.AttachCeiling(ceil.lbIf) })
	if err != nil {
		return err
	}
	ceil.attachments = append(ceil.attachments, a)
	if a, err = w.attachIn(ref.ns, func() (*loadgen.Attachment, error) { return w.lg.AttachRefLB(ref.lbIf) }); err != nil {
		return err
	}
	ref.attachments = append(ref.attachments, a)
	if err := w.refConns(); err != nil {
		return err
	}

	o.logf("setting up xipvsd: a wrr service per forwarding method (%d established flows each)", o.Flows)
	if xd.x, err = startXipvs(xd.ns, o, work, "wire", false, "eth0"); err != nil {
		return err
	}
	for _, mode := range append(append([]string(nil), wireModes...), wireModes6...) {
		if err := w.xipvsService(r, o, xd, mode); err != nil {
			return fmt.Errorf("xipvs %s: %w\nxipvsd log:\n%s", mode, err, xd.x.d.Logs())
		}
	}
	o.logf("setting up the xipvsd that take the SYN streams: a service per scheduler (new flows in XDP) and a wlc one Go schedules (the slow path)")
	goSchedules := []string{"--go-schedules", netip.AddrPortFrom(wireVIPs["slowpath"], 80).String() + "," +
		netip.AddrPortFrom(wireVIPs["slowpath6"], 80).String()}
	if xn.x, err = startXipvs(xn.ns, o, work, "wirenew", true, "eth0", append([]string{"--conn-table-size", newFlowTable}, goSchedules...)...); err != nil {
		return err
	}
	if err := synServices(xn.x); err != nil {
		return err
	}
	if x2.x, err = startXipvs(x2.ns, o, work, "wire2q", false, "eth0", append([]string{"--conn-table-size", newFlowTable}, goSchedules...)...); err != nil {
		return err
	}
	if err := synServices(x2.x); err != nil {
		return err
	}
	if !installed("nft") {
		return nil
	}
	o.logf("setting up nftables DNAT (numgen, 1:2:3) with the flows in conntrack")
	// nftables takes the SYN streams on a director of its own, as xipvs
	// does: their connections would fill the measured director's
	// conntrack, whose early drop then evicts established flows (picked
	// up from ACKs, never assured), which come back mapped afresh.
	for _, d := range []*director{nd, w.dirs[dirNftNew]} {
		if err := nftDirector(d); err != nil {
			return err
		}
	}
	v, v6 := wireVIPs["dr"], wireVIPs["dr6"]
	// Conntrack picks the flows up from their first ACK.
	for _, vip := range []netip.Addr{v, v6} {
		if err := w.paced(nd, w.established(64, vip, false), o.Flows); err != nil {
			return err
		}
	}
	if out, err := nd.ns.Exec("cat", "/proc/sys/net/netfilter/nf_conntrack_count").Output(); err == nil {
		n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
		r.check("nftables tracks every flow before measuring (IPv4 and IPv6)", n >= 2*o.Flows, "%d of %d flows in conntrack", n, 2*o.Flows)
	}
	return nil
}

// nftDirector loads the wire's DNAT rules (IPv4 and IPv6, numgen 1:2:3)
// into d, behind a native program on eth0 so that the generator's frames
// arrive (veth trap 1) and pass to the stack.
func nftDirector(d *director) error {
	if err := d.ns.Do(func() error { return pass.Attach(d.lbIf) }); err != nil {
		return err
	}
	v, v6 := wireVIPs["dr"], wireVIPs["dr6"]
	rules := fmt.Sprintf(nftWire, v, wireReals[0], wireReals[1], wireReals[1], wireReals[2], wireReals[2], wireReals[2])
	if err := nft(d.ns, rules); err != nil {
		return err
	}
	rules6 := fmt.Sprintf(nftWire6, v6, wireReals6[0], wireReals6[1], wireReals6[1], wireReals6[2], wireReals6[2], wireReals6[2])
	if err := nft(d.ns, rules6); err != nil {
		return err
	}
	d.nftInstalled = true
	return nil
}

// refConns gives the reference LB the established flows, split over the
// reals 1:2:3 as wrr splits them.
func (w *wire) refConns() error {
	if err := w.lg.SetRefService(wireVIPs["dr"], 80, 6); err != nil {
		return err
	}
	var flows []loadgen.RefTuple
	var macs []net.HardwareAddr
	split := []int{0, 1, 1, 2, 2, 2}
	b := wireEstBase.As4()
	base := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	for n := uint32(0); n < w.flows; n++ {
		a := base + n/w.ports
		src := netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
		flows = append(flows, loadgen.RefTuple{Src: src, Dst: wireVIPs["dr"], SrcPort: uint16(1024 + n%w.ports), DstPort: 80, Proto: 6})
		macs = append(macs, wireRealMAC(split[n%6]))
	}
	return w.lg.SetRefConns(flows, macs)
}

// wrrOK reports whether conns follows wireWeights within one connection.
func wrrOK(conns map[byte]uint64, flows int) bool {
	total := 0
	for _, w := range wireWeights {
		total += w
	}
	for i, w := range wireWeights {
		want := float64(flows) * float64(w) / float64(total)
		if math.Abs(float64(conns[byte(0x0b+i)])-want) > 1 {
			return false
		}
	}
	return true
}

func sum(m map[byte]uint64) uint64 {
	var t uint64
	for _, v := range m {
		t += v
	}
	return t
}

// schedConns returns the connections the scheduler of vip's service
// gave each wire real (by MAC byte).
func schedConns(c *api.Client, vip netip.Addr) (map[byte]uint64, error) {
	svcs, err := c.Services()
	if err != nil {
		return nil, err
	}
	out := map[byte]uint64{}
	for _, s := range svcs {
		if s.Addr != vip {
			continue
		}
		for _, d := range s.Dests {
			for i, rip := range realsOf(vip) {
				if d.Addr == rip {
					out[byte(0x0b+i)] += d.Stats.Conns
				}
			}
		}
	}
	return out, nil
}

const nftWire = `table ip xipvs_bench {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s tcp dport 80 dnat to numgen inc mod 6 map { 0 : %s, 1 : %s, 2 : %s, 3 : %s, 4 : %s, 5 : %s }
	}
}
`

const nftWire6 = `table ip6 xipvs_bench6 {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip6 daddr %s tcp dport 80 dnat to numgen inc mod 6 map { 0 : %s, 1 : %s, 2 : %s, 3 : %s, 4 : %s, 5 : %s }
	}
}
`

// nft loads rules into ns.
func nft(ns testutil.Netns, rules string) error {
	f, err := os.CreateTemp("", "xipvs-bench-*.nft")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(rules); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if out, err := ns.Exec("nft", "-f", f.Name()).CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f: %w: %s", err, out)
	}
	return nil
}

// installed reports whether a peer tool is on PATH.
func installed(tool string) bool {
	_, err := exec.LookPath(tool)
	return err == nil
}
