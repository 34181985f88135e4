package dataplane_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

// agedConn is one established connection of the aging model test: its
// entries and when the model says it ends.
type agedConn struct {
	k, rk    dataplane.ConnKey // rk: the reply entry's key (NAT, FULLNAT)
	c        dataplane.Conn
	deadline time.Duration // on dataplane.Now's clock
	tmpl     *dataplane.Template
}

// randomEstTable makes n established connections (IPv4 and IPv6; DR,
// NAT and FULLNAT; TCP in every state and UDP; persistent or not), last
// seen at random times around now, some after it (XDP refreshed them
// after the clock was read), their reply entries sometimes seen later
// than the forward ones: the timer must then sleep again.
func randomEstTable(r *rand.Rand, n int, now time.Duration, to conntrack.Timeouts) []agedConn {
	var out []agedConn
	for i := 0; i < n; i++ {
		proto := uint8(conntrack.ProtoTCP)
		st := conntrack.State(r.IntN(int(conntrack.StateSynAck) + 1))
		if r.IntN(5) == 0 {
			proto, st = conntrack.ProtoUDP, conntrack.StateNone
		}
		src, dst := netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), netip.MustParseAddr("192.0.2.10")
		rip, lip := netip.MustParseAddr("10.1.0.11"), netip.MustParseAddr("10.1.0.250")
		if i%4 == 3 {
			src, dst = netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 0xc, 14: byte(i >> 8), 15: byte(i)}), netip.MustParseAddr("2001:db8::10")
			rip, lip = netip.MustParseAddr("2001:db8:1::11"), netip.MustParseAddr("2001:db8:1::250")
		}
		k := dataplane.ConnKey{Src: src, Dst: dst, SrcPort: uint16(1024 + i), DstPort: 80, Proto: proto}
		timeout := to.Timeout(proto, st)
		// Last seen up to half its timeout ago, or up to 200 ms ahead.
		last := now - time.Duration(r.Float64()*0.5*float64(timeout))
		if r.IntN(8) == 0 {
			last = now + time.Duration(r.IntN(200))*time.Millisecond
		}
		a := agedConn{k: k, c: dataplane.Conn{RealID: uint32(1 + r.IntN(4)), ServiceID: 1, State: st, LastSeen: last}}
		if r.IntN(3) == 0 {
			a.c.ServiceID, a.c.Flags = 2, dataplane.ConnPersist
			pfx, _ := src.Prefix(24)
			if src.Is6() {
				pfx, _ = src.Prefix(64)
			}
			a.tmpl = &dataplane.Template{ServiceID: 2, Client: pfx.Addr(), VPort: 80}
		}
		end := last
		switch r.IntN(3) {
		case 1, 2: // NAT, FULLNAT
			out := dataplane.ConnKey{Src: src, Dst: rip, SrcPort: k.SrcPort, DstPort: 8080}
			if r.IntN(2) == 0 {
				a.c.Flags |= dataplane.ConnFullNAT
				out.Src, out.SrcPort = lip, uint16(20000+i)
			}
			a.c.Out = out
			a.rk = a.c.Peer(proto)
			if r.IntN(2) == 0 {
				end = last + time.Duration(r.IntN(400))*time.Millisecond // the reply seen later
			}
		}
		a.deadline = end + timeout
		out = append(out, a)
	}
	return out
}

// replyOf is a's reply entry, last seen at the model's end minus the
// timeout.
func (a agedConn) replyOf(to conntrack.Timeouts) dataplane.Conn {
	rep := dataplane.Conn{RealID: a.c.RealID, ServiceID: a.c.ServiceID, Flags: a.c.Flags&dataplane.ConnFullNAT | dataplane.ConnReply,
		LastSeen: a.deadline - to.Timeout(a.k.Proto, a.c.State),
		Out:      dataplane.ConnKey{Src: a.k.Dst, Dst: a.k.Src, SrcPort: a.k.DstPort, DstPort: a.k.SrcPort}}
	return rep
}

// modelCounts counts the live connections of table as IPVS would.
func modelCounts(table []agedConn, alive func(agedConn) bool) map[uint32]conntrack.Counts {
	want := map[uint32]conntrack.Counts{}
	for _, a := range table {
		if alive(a) {
			n := want[a.c.RealID]
			n.Add(a.k.Proto, a.c.State)
			want[a.c.RealID] = n
		}
	}
	return want
}

// TestReaperMatchesModel is the model test of aging by the deadline
// index: a random table of established connections (every state and
// timeout, both families, DR, NAT and FULLNAT pairs whose reply entry
// was seen later, entries last seen after the clock was read, persistent
// ones) is judged by the reaper at clock values from before any deadline
// to long after the last, in random steps: at each, every connection
// the model (IPVS's timeouts from the later of its entries' last_seen)
// finds due has ended, with its reply entry, its FULLNAT port given back
// once, its count and its template's; every other is told exactly how
// long until its deadline, and counted. A stale stamp judges nothing.
func TestReaperMatchesModel(t *testing.T) {
	d := openDirector(t)
	if !d.IndexAging() {
		t.Fatal("the director does not age by the index by default")
	}
	for id := uint32(1); id <= 4; id++ {
		if err := d.SetReal(id, dataplane.Real{Addr: netip.AddrFrom4([4]byte{10, 1, 0, byte(id)}), Ifindex: loIfindex, MAC: realMAC, Fwd: dataplane.FwdRoute}); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(11, 12))
	// A timeout of its own per state, 1 to 60 s.
	var to conntrack.Timeouts
	for i := range to.TCP {
		to.TCP[i] = time.Duration(1+r.IntN(60)) * time.Second
	}
	to.UDP = time.Duration(1+r.IntN(60)) * time.Second
	args := dataplane.SweepArgs{Timeouts: to, OrphanAge: time.Hour, Persistent: map[uint32]dataplane.SweepPersist{2: {MaskBits: 24}}}
	// One sweep writes the timeouts (and the persistent services) where
	// the reaper reads them.
	if _, err := d.Sweep(args); err != nil {
		t.Fatal(err)
	}
	now := dataplane.Now()
	table := randomEstTable(r, 600, now, to)
	tmplConns := map[dataplane.Template]int{}
	keys, stamps := make([]dataplane.ConnKey, len(table)), make([]uint16, len(table))
	for i := range table {
		a := &table[i]
		if a.tmpl != nil && a.k.Src.Is6() { // the service's netmask is IPv4's
			a.tmpl, a.c.ServiceID, a.c.Flags = nil, 1, a.c.Flags&^dataplane.ConnPersist
		}
		a.c.Stamp = uint16(r.IntN(1 << 16))
		if err := d.SetEstConn(a.k, a.c); err != nil {
			t.Fatal(err)
		}
		if a.rk.Proto != 0 {
			if err := d.SetEstConn(a.rk, a.replyOf(to)); err != nil {
				t.Fatal(err)
			}
		}
		if a.tmpl != nil {
			tmplConns[*a.tmpl]++
		}
		keys[i], stamps[i] = a.k, a.c.Stamp
	}
	for tp := range tmplConns {
		if err := d.SetTemplate(tp, dataplane.TemplateUse{RealID: 1, LastUsed: now}); err != nil {
			t.Fatal(err)
		}
	}
	// A stale stamp: nothing judged, nothing counted.
	wrong := slices.Clone(stamps)
	for i := range wrong {
		wrong[i]++
	}
	left, _, err := d.Reap(now, keys, wrong)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range left {
		if l != 0 {
			t.Fatalf("%v judged under a stale stamp: %v", keys[i], l)
		}
	}
	if res, err := d.Sweep(args); err != nil || len(res.Counts) != 0 {
		t.Fatalf("counts %v after a stale judgement (%v)", res.Counts, err)
	}
	last := slices.MaxFunc(table, func(a, b agedConn) int { return int(a.deadline - b.deadline) }).deadline
	ended := map[int]bool{}
	released := map[dataplane.LocalPort]int{}
	steps := 0
	for clock := now - time.Duration(r.IntN(3600))*time.Second; ; clock += time.Duration(r.Int64N(int64(8 * time.Second))) {
		steps++
		var ks []dataplane.ConnKey
		var ss []uint16
		var idx []int
		for i := range table {
			if !ended[i] {
				ks, ss, idx = append(ks, table[i].k), append(ss, stamps[i]), append(idx, i)
			}
		}
		left, rel, err := d.Reap(clock, ks, ss)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range rel {
			released[p]++
		}
		for j, i := range idx {
			a := table[i]
			want := a.deadline - clock
			if a.deadline <= clock {
				want = 0
				ended[i] = true
			}
			if left[j] != want {
				t.Errorf("clock %v: %v (state %v) left %v, model %v", clock-now, a.k, a.c.State, left[j], want)
			}
			_, ok, _ := d.LookupConn(a.k)
			if ok == ended[i] {
				t.Errorf("clock %v: %v present %v, model ended %v", clock-now, a.k, ok, ended[i])
			}
			if a.rk.Proto != 0 {
				if _, rok, _ := d.LookupConn(a.rk); rok == ended[i] {
					t.Errorf("clock %v: %v's reply entry present %v, model ended %v", clock-now, a.k, rok, ended[i])
				}
			}
		}
		res, err := d.Sweep(dataplane.SweepArgs{Now: clock, Timeouts: to, OrphanAge: time.Hour, Persistent: args.Persistent})
		if err != nil {
			t.Fatal(err)
		}
		want := modelCounts(table, func(a agedConn) bool { return a.deadline > clock })
		if fmt.Sprint(res.Counts) != fmt.Sprint(want) {
			t.Errorf("clock %v: counts %v, model %v", clock-now, res.Counts, want)
		}
		controls := map[dataplane.Template]int{}
		for _, a := range table {
			if a.tmpl != nil && a.deadline > clock {
				controls[*a.tmpl]++
			}
		}
		for tp := range tmplConns {
			if u, _, _ := d.LookupTemplate(tp); u.Controls != controls[tp] {
				t.Errorf("clock %v: template %v controls %d, model %d", clock-now, tp, u.Controls, controls[tp])
			}
		}
		if t.Failed() || clock > last {
			break
		}
	}
	t.Logf("%d clock steps", steps)
	for _, a := range table {
		if a.c.Flags&dataplane.ConnFullNAT != 0 {
			p := dataplane.LocalPort{Addr: a.c.Out.Src, Port: a.c.Out.SrcPort, Proto: a.k.Proto}
			if released[p] != 1 {
				t.Errorf("FULLNAT port %v given back %d times, want once", p, released[p])
			}
			delete(released, p)
		}
	}
	if len(released) != 0 {
		t.Errorf("ports given back that no connection held: %v", released)
	}
}

// recount counts the forward entries of the tables, as a walk would.
func recount(t *testing.T, d *dataplane.Harness) map[uint32]conntrack.Counts {
	t.Helper()
	want := map[uint32]conntrack.Counts{}
	err := d.WalkConns(func(k dataplane.ConnKey, c dataplane.Conn) bool {
		if c.Flags&dataplane.ConnReply == 0 {
			n := want[c.RealID]
			n.Add(k.Proto, c.State)
			want[c.RealID] = n
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return want
}

// TestIndexAgesTraffic runs random TCP traffic through the director (NAT
// and FULLNAT connections opened, carrying data, closed by either side,
// reset, their tuples reused), and checks that the counts kept by events
// equal a recount of the tables, after every round; then it leaves them
// alone under short timeouts: the deadline index ends every connection,
// within a second and a half of its deadline, and gives every FULLNAT
// port back.
func TestIndexAgesTraffic(t *testing.T) {
	d := openDirector(t)
	setupModes(t, d)
	to := conntrack.DefaultTimeouts()
	for i := range to.TCP {
		to.TCP[i] = 2 * time.Second
	}
	to.TCP[conntrack.StateEstablished] = 4 * time.Second
	args := dataplane.SweepArgs{Timeouts: to, OrphanAge: time.Minute}
	args.Now = dataplane.Now()
	if _, err := d.Sweep(args); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(21, 22))
	const flows = 120
	type fl struct {
		port    uint16
		fullnat bool
		lport   uint16
	}
	var all []fl
	for i := 0; i < flows; i++ {
		all = append(all, fl{port: uint16(30000 + i), fullnat: i%3 == 0, lport: uint16(40000 + i)})
	}
	send := func(f fl, fromClient bool, flags string) {
		var fr testutil.Frame
		if fromClient {
			fr = testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: f.port, DstPort: 80}
		} else {
			dst, dport := client, f.port
			if f.fullnat {
				dst, dport = lip, f.lport
			}
			fr = testutil.Frame{SrcMAC: realMAC, DstMAC: ifMAC, Src: rip, Dst: dst, SrcPort: 8080, DstPort: dport}
		}
		for _, c := range flags {
			switch c {
			case 'S':
				fr.SYN = true
			case 'A':
				fr.ACK = true
			case 'F':
				fr.FIN = true
			case 'R':
				fr.RST = true
			}
		}
		run(t, d, fr.Build())
	}
	open := func(f fl) {
		dec := dataplane.Decision{RealID: natID, ServiceID: 1, Out: dataplane.ConnKey{Src: client, Dst: rip, SrcPort: f.port, DstPort: 8080}}
		if f.fullnat {
			dec = dataplane.Decision{RealID: fullnatID, ServiceID: 1, FullNAT: true, Out: dataplane.ConnKey{Src: lip, Dst: rip, SrcPort: f.lport, DstPort: 8080}}
		}
		flow(t, d, tcpKey(f.port), dec, 0)
		send(f, true, "S")
		send(f, false, "SA")
		send(f, true, "A")
	}
	for round := 0; round < 6; round++ {
		for _, f := range all {
			switch r.IntN(7) {
			case 0:
				open(f)
			case 1:
				send(f, true, "A")
			case 2:
				send(f, true, "FA")
			case 3:
				send(f, false, "FA")
			case 4:
				send(f, r.IntN(2) == 0, "R")
			case 5:
				send(f, true, "S") // a new connection on a closing tuple, or nothing
			default:
				send(f, false, "A")
			}
		}
		args.Now = dataplane.Now()
		res, err := d.Sweep(args)
		if err != nil {
			t.Fatal(err)
		}
		if want := recount(t, d); fmt.Sprint(res.Counts) != fmt.Sprint(want) {
			d.WalkConns(func(k dataplane.ConnKey, c dataplane.Conn) bool {
				if c.Flags&dataplane.ConnReply == 0 && (c.Flags&dataplane.ConnCountedActive != 0) != (c.State == conntrack.StateEstablished) {
					est, _ := d.Established(k)
					t.Logf("%v state %v flags %#x est %v", k, c.State, c.Flags, est)
				}
				return true
			})
			t.Fatalf("round %d: counts %v, a recount %v", round, res.Counts, want)
		}
	}
	st, _ := d.Counters()
	if st[dataplane.StatAgeLost] != 0 {
		t.Fatalf("%d aging events lost", st[dataplane.StatAgeLost])
	}
	// Then no traffic: every connection ends at its deadline.
	deadline := map[dataplane.ConnKey]time.Duration{}
	err := d.WalkConns(func(k dataplane.ConnKey, c dataplane.Conn) bool {
		if c.Flags&dataplane.ConnReply == 0 {
			deadline[k] = c.LastSeen + to.Timeout(k.Proto, c.State)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(deadline) == 0 {
		t.Fatal("no connection to age")
	}
	released := 0
	for {
		time.Sleep(100 * time.Millisecond)
		args.Now = dataplane.Now()
		res, err := d.Sweep(args)
		if err != nil {
			t.Fatal(err)
		}
		released += len(res.Released)
		left := 0
		for k, dl := range deadline {
			_, ok, _ := d.LookupConn(k)
			if !ok {
				delete(deadline, k)
				continue
			}
			left++
			if args.Now > dl+1500*time.Millisecond {
				t.Fatalf("%v lives %v past its deadline", k, args.Now-dl)
			}
		}
		if left == 0 {
			if want := recount(t, d); len(res.Counts) != 0 || len(want) != 0 {
				t.Fatalf("counts %v with every connection ended (a recount: %v)", res.Counts, want)
			}
			break
		}
	}
	n := 0
	if err := d.WalkConns(func(dataplane.ConnKey, dataplane.Conn) bool { n++; return true }); err != nil || n != 0 {
		t.Errorf("%d entries left (%v)", n, err)
	}
	if held := d.IndexHeld(); held != 0 {
		t.Errorf("the index still holds %d entries", held)
	}
	t.Logf("%d FULLNAT ports given back", released)
}

// TestEmbryonicWalkSkipsAnEmptyTable: with the established tables aged by
// the index, a small embryonic table is still walked at every sweep (the
// skip of an empty one missed a creation path: TestTimeoutsExpire's UDP
// flow went uncounted), and a connection written there is counted at the
// next sweep.
func TestEmbryonicWalkSkipsAnEmptyTable(t *testing.T) {
	d := openDirector(t)
	setupModes(t, d)
	args := dataplane.SweepArgs{Timeouts: conntrack.DefaultTimeouts(), OrphanAge: time.Minute}
	sweep := func() dataplane.SweepResult {
		t.Helper()
		time.Sleep(200 * time.Millisecond) // past the walk's pacing
		args.Now = dataplane.Now()
		res, err := d.Sweep(args)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := sweep(); !res.Walked || res.Seen != 0 {
		t.Fatalf("first sweep: walked %v, seen %d", res.Walked, res.Seen)
	}
	k := tcpKey(41000)
	flow(t, d, k, dataplane.Decision{RealID: natID, ServiceID: 1, Out: dataplane.ConnKey{Src: client, Dst: rip, SrcPort: 41000, DstPort: 8080}}, 0)
	res := sweep()
	if !res.Walked || res.Counts[natID].Inactive != 1 {
		t.Fatalf("after a new connection: walked %v, counts %v", res.Walked, res.Counts)
	}
	// Not empty: walked again (paced, not skipped).
	if res := sweep(); !res.Walked {
		t.Fatal("a table with an entry was not walked")
	}
}
