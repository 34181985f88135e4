package sched

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func pick(s Scheduler, f Flow) uint32 {
	if d := s.Schedule(f); d != nil {
		return d.ID
	}
	return 0
}

func withLastWeights(ds []*Dest) []*Dest {
	for _, d := range ds {
		d.LastWeight = d.Weight
	}
	return ds
}

// sed: (active+1)/weight, cross-multiplied, ties to the list front.
// List [id2:w3, id1:w1].
func TestSED(t *testing.T) {
	s := newSched(t, "sed")
	ds := added(1, 3)
	s.Update(ds)
	// 1/3 < 1/1.
	if got := pick(s, Flow{}); got != 2 {
		t.Fatalf("idle: got %d want 2", got)
	}
	// id2 active 2: 3/3 = 1/1: a tie stays with the first (id2).
	ds[0].ActiveConns = 2
	s.Changed(ds[0])
	if got := pick(s, Flow{}); got != 2 {
		t.Fatalf("tie: got %d want 2", got)
	}
	// id2 active 3: 4/3 > 1/1.
	ds[0].ActiveConns = 3
	s.Changed(ds[0])
	if got := pick(s, Flow{}); got != 1 {
		t.Fatalf("got %d want 1", got)
	}
	// Inactive connections do not count for sed.
	ds[1].InactConns = 1000
	s.Changed(ds[1])
	if got := pick(s, Flow{}); got != 1 {
		t.Fatalf("inactive counted: got %d want 1", got)
	}
}

// nq: an idle real wins outright, even a light one; otherwise as sed.
func TestNQ(t *testing.T) {
	s := newSched(t, "nq")
	ds := added(1, 3) // [id2:w3, id1:w1]
	s.Update(ds)
	if got := pick(s, Flow{}); got != 2 {
		t.Fatalf("both idle: got %d want 2 (first)", got)
	}
	ds[0].ActiveConns = 5
	s.Changed(ds[0])
	if got := pick(s, Flow{}); got != 1 {
		t.Fatalf("id1 idle: got %d want 1", got)
	}
	// Both busy: id2 (1+1)/3 < id1 (1+1)/1.
	ds[0].ActiveConns, ds[1].ActiveConns = 1, 1
	s.Changed(ds[0])
	s.Changed(ds[1])
	if got := pick(s, Flow{}); got != 2 {
		t.Fatalf("busy: got %d want 2", got)
	}
	// An idle real at weight 0 is not idle-picked.
	ds[1].ActiveConns, ds[1].Weight = 0, 0
	s.Update(ds)
	if got := pick(s, Flow{}); got != 2 {
		t.Fatalf("weight 0 idle: got %d want 2", got)
	}
}

// The hand-computed hash_32 buckets (GOLDEN_RATIO_32 = 0x61C88647, top 8
// bits) of the addresses below:
//
//	10.0.0.1 = 0x0A000001 -> 39     10.0.0.2 = 0x0A000002 -> 137
//	10.1.2.3 = 0x0A010203 -> 2      172.16.5.4 = 0xAC100504 -> 138
var bucketOf = map[string]uint32{"10.0.0.1": 39, "10.0.0.2": 137, "10.1.2.3": 2, "172.16.5.4": 138}

func TestHash32(t *testing.T) {
	for a, want := range bucketOf {
		if got := hash32(addr32(ip(a)), 8); got != want {
			t.Errorf("hash_32(%s) = %d, want %d", a, got, want)
		}
	}
}

// dh: list [id3 id2 id1] fills buckets round-robin, so bucket b belongs to
// list[b%3]: 39 -> id3, 137 -> id1, 2 -> id1, 138 -> id3.
func TestDH(t *testing.T) {
	s := newSched(t, "dh")
	ds := added(1, 1, 1)
	s.Update(ds)
	want := map[string]uint32{"10.0.0.1": 3, "10.0.0.2": 1, "10.1.2.3": 1, "172.16.5.4": 3}
	for dst, id := range want {
		for i := 0; i < 3; i++ { // stable
			if got := pick(s, Flow{Dst: ip(dst), Src: ip("192.0.2.1"), SrcPort: uint16(i)}); got != id {
				t.Errorf("dh %s: got %d want %d", dst, got, id)
			}
		}
	}
	// No fallback: the owner quiesced means no destination.
	ds[2].Weight = 0 // id1
	s.Update(ds)
	if got := pick(s, Flow{Dst: ip("10.0.0.2")}); got != 0 {
		t.Errorf("dh to quiesced owner: got %d want none", got)
	}
}

// sh: list [id2:w2, id1:w1] fills buckets id2,id2,id1,... so bucket b is
// id1's when b%3 == 2: 39 -> id2, 137 -> id1, 2 -> id1, 138 -> id2.
func TestSH(t *testing.T) {
	s := newSched(t, "sh")
	ds := added(1, 2)
	s.Update(ds)
	want := map[string]uint32{"10.0.0.1": 2, "10.0.0.2": 1, "10.1.2.3": 1, "172.16.5.4": 2}
	for src, id := range want {
		if got := pick(s, Flow{Src: ip(src), SrcPort: 999}); got != id {
			t.Errorf("sh %s: got %d want %d", src, got, id)
		}
	}
	// sh-port hashes port+addr: 10.0.0.1 from port 1 is 0x0A000002,
	// 10.0.0.2's bucket.
	s.(Flagged).SetFlags(FlagPort)
	if got := pick(s, Flow{Src: ip("10.0.0.1"), SrcPort: 1}); got != 1 {
		t.Errorf("sh-port: got %d want 1", got)
	}
	s.(Flagged).SetFlags(0)
	// id1 at weight 0 keeps one bucket in three (the kernel gives a
	// weight-0 real one bucket per round) but is unavailable.
	ds[1].Weight = 0
	s.Update(ds)
	if got := pick(s, Flow{Src: ip("10.0.0.2")}); got != 0 {
		t.Errorf("sh without fallback: got %d want none", got)
	}
	// sh-fallback: ihash 137, first retry bucket (137+137)&255 = 18,
	// 18%3 = 0: id2.
	s.(Flagged).SetFlags(FlagFallback)
	if got := pick(s, Flow{Src: ip("10.0.0.2")}); got != 2 {
		t.Errorf("sh-fallback: got %d want 2", got)
	}
	// Nothing available: none even with fallback.
	ds[0].Overloaded = true
	if got := pick(s, Flow{Src: ip("10.0.0.2")}); got != 0 {
		t.Errorf("sh-fallback, all unavailable: got %d want none", got)
	}
}

// sipHash is a reference SipHash-c-d written from the paper, used to
// check the kernel-compatible hsiphash32.
func sipHash(c, d int, k0, k1 uint64, msg []byte) uint64 {
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	round := func() {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13) ^ v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16) ^ v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21) ^ v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17) ^ v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	n := len(msg)
	for len(msg) >= 8 {
		m := binary.LittleEndian.Uint64(msg)
		v3 ^= m
		for i := 0; i < c; i++ {
			round()
		}
		v0 ^= m
		msg = msg[8:]
	}
	var last [8]byte
	copy(last[:], msg)
	last[7] = byte(n)
	m := binary.LittleEndian.Uint64(last[:])
	v3 ^= m
	for i := 0; i < c; i++ {
		round()
	}
	v0 ^= m
	v2 ^= 0xff
	for i := 0; i < d; i++ {
		round()
	}
	return v0 ^ v1 ^ v2 ^ v3
}

func TestSipHash(t *testing.T) {
	// The reference vectors of SipHash-2-4 (key 00..0f): the empty
	// message and the paper's 15-byte example.
	k0, k1 := uint64(0x0706050403020100), uint64(0x0f0e0d0c0b0a0908)
	if got := sipHash(2, 4, k0, k1, nil); got != 0x726fdb47dd0e0e31 {
		t.Fatalf("SipHash-2-4(empty) = %#x", got)
	}
	msg := make([]byte, 15)
	for i := range msg {
		msg[i] = byte(i)
	}
	if got := sipHash(2, 4, k0, k1, msg); got != 0xa129ca6149be45e5 {
		t.Fatalf("SipHash-2-4(00..0e) = %#x", got)
	}
	// hsiphash on 64-bit is SipHash-1-3 truncated to 32 bits.
	for _, v := range []uint32{0, 1, 0x0A000001, 0xdeadbeef, 0xffffffff} {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], v)
		want := uint32(sipHash(1, 3, mhKey1[0], mhKey1[1], b[:]))
		if got := hsiphash32(v, mhKey1); got != want {
			t.Errorf("hsiphash32(%#x) = %#x, want %#x", v, got, want)
		}
	}
}

func mhDests(n int, weight func(i int) int) []*Dest {
	var ds []*Dest
	for i := 0; i < n; i++ {
		d := &Dest{ID: uint32(i + 1), Addr: netip.AddrFrom4([4]byte{10, 0, 1, byte(i + 1)}), Port: 80, Weight: weight(i)}
		ds = append([]*Dest{d}, ds...)
	}
	return withLastWeights(ds)
}

func mhTable(s Scheduler) []*Dest { return s.(*mh).lookup }

// mh fills every slot, and slots follow the weights.
func TestMHTableWeights(t *testing.T) {
	s := newSched(t, "mh")
	s.Update(mhDests(3, func(i int) int { return []int{1, 1, 2}[i] }))
	count := map[uint32]int{}
	for _, d := range mhTable(s) {
		if d == nil {
			t.Fatal("empty slot")
		}
		count[d.ID]++
	}
	// 4093 slots over turns 1,1,2: 1023/1023/2047 within one round.
	if count[1]+count[2]+count[3] != 4093 {
		t.Fatalf("counts %v", count)
	}
	for id, want := range map[uint32]int{1: 1023, 2: 1023, 3: 2047} {
		if d := count[id] - want; d < -2 || d > 2 {
			t.Errorf("real %d has %d slots, want about %d", id, count[id], want)
		}
	}
}

// The golden table: three reals 10.0.1.1-3:80 with weights 1,1,2. The
// summary (slot counts and an FNV-1a hash of the owner of every slot)
// was recorded from this implementation after TestSipHash and
// TestMHTableWeights passed; it pins the table against regressions.
func TestMHGolden(t *testing.T) {
	s := newSched(t, "mh")
	s.Update(mhDests(3, func(i int) int { return []int{1, 1, 2}[i] }))
	h := fnv.New64a()
	var first []uint32
	for i, d := range mhTable(s) {
		fmt.Fprintf(h, "%d,", d.ID)
		if i < 16 {
			first = append(first, d.ID)
		}
	}
	got := fmt.Sprintf("%v %#x", first, h.Sum64())
	const want = "[3 2 3 3 3 3 2 3 3 3 1 3 1 2 3 2] 0x3214f4dc3c29a5b1"
	if got != want {
		t.Fatalf("mh table changed:\n got %s\nwant %s", got, want)
	}
}

// Removing one of N reals moves about 1/N of the clients: those it had,
// plus few others.
func TestMHDisruption(t *testing.T) {
	const n = 10
	s := newSched(t, "mh")
	ds := mhDests(n, func(int) int { return 1 })
	s.Update(ds)
	r := rand.New(rand.NewPCG(1, 2))
	srcs := make([]netip.Addr, 20000)
	before := make([]uint32, len(srcs))
	for i := range srcs {
		srcs[i] = netip.AddrFrom4([4]byte{byte(r.IntN(223) + 1), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		before[i] = pick(s, Flow{Src: srcs[i]})
	}
	gone := ds[4].ID
	s.Update(append(append([]*Dest{}, ds[:4]...), ds[5:]...))
	moved, lost := 0, 0
	for i, src := range srcs {
		after := pick(s, Flow{Src: src})
		if after == gone || after == 0 {
			t.Fatalf("picked removed real or none")
		}
		if before[i] == gone {
			lost++
		} else if after != before[i] {
			moved++
		}
	}
	frac := float64(lost+moved) / float64(len(srcs))
	t.Logf("removed real had %.1f%%, others moved %.1f%%", 100*float64(lost)/float64(len(srcs)), 100*float64(moved)/float64(len(srcs)))
	if frac > 1.0/n+0.05 {
		t.Fatalf("%.1f%% of clients moved, want about %.1f%%", 100*frac, 100.0/n)
	}
}

// mh keeps a quiesced real's slots (last_weight), so its clients find
// none (or, with mh-fallback, another real) and nobody else moves.
func TestMHQuiesce(t *testing.T) {
	s := newSched(t, "mh")
	ds := mhDests(3, func(int) int { return 1 })
	s.Update(ds)
	var victim netip.Addr
	for i := 0; i < 256; i++ {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
		if pick(s, Flow{Src: a}) == ds[0].ID {
			victim = a
			break
		}
	}
	ds[0].Weight = 0 // LastWeight stays 1
	s.Update(ds)
	if got := pick(s, Flow{Src: victim}); got != 0 {
		t.Fatalf("quiesced owner: got %d want none", got)
	}
	s.(Flagged).SetFlags(FlagFallback)
	if got := pick(s, Flow{Src: victim}); got == 0 || got == ds[0].ID {
		t.Fatalf("mh-fallback: got %d", got)
	}
}

// lblc: a destination address sticks to its real until that real is
// overloaded (active > weight while another is under half its weight),
// quiesced or removed. List [id2:w1, id1:w1].
func TestLBLC(t *testing.T) {
	s := newSched(t, "lblc")
	ds := added(1, 1)
	s.Update(ds)
	x := Flow{Dst: ip("10.9.9.9")}
	if got := pick(s, x); got != 2 {
		t.Fatalf("first: got %d want 2 (wlc, list front)", got)
	}
	// id2 gets busier than id1 but is not overloaded: sticks.
	ds[0].ActiveConns = 1
	s.Changed(ds[0])
	if got := pick(s, x); got != 2 {
		t.Fatalf("sticky: got %d want 2", got)
	}
	// active 2 > weight 1 and id1 has 0*2 < 1: overloaded, moves to id1.
	ds[0].ActiveConns = 2
	s.Changed(ds[0])
	if got := pick(s, x); got != 1 {
		t.Fatalf("overloaded: got %d want 1", got)
	}
	// The entry now names id1; id2 recovering does not move it back.
	ds[0].ActiveConns = 0
	s.Changed(ds[0])
	ds[1].ActiveConns = 1
	s.Changed(ds[1])
	if got := pick(s, x); got != 1 {
		t.Fatalf("after move: got %d want 1", got)
	}
	// Removing id1 sends the address to wlc's pick.
	s.Update(ds[:1])
	if got := pick(s, x); got != 2 {
		t.Fatalf("removed: got %d want 2", got)
	}
}

// lblc's full expiration check drops entries unused for the expiration
// time; it runs every 30th check interval.
func TestLBLCExpire(t *testing.T) {
	s := newSched(t, "lblc").(*lblc)
	s.expire = 10 * time.Minute
	s.Update(added(1))
	now := time.Duration(0)
	s.Schedule(Flow{Dst: ip("10.9.9.9"), Now: now})
	for i := 0; i < 31; i++ {
		now += localityCheckInterval
		s.Schedule(Flow{Dst: ip("10.8.8.8"), Now: now})
	}
	if _, ok := s.table[ip("10.9.9.9")]; ok {
		t.Fatal("stale entry survived the full check")
	}
	if _, ok := s.table[ip("10.8.8.8")]; !ok {
		t.Fatal("live entry removed")
	}
}

// lblcr: an overloaded member makes the set grow; a set unchanged for the
// expiration time sheds its most loaded member. List [id2:w1, id1:w1].
func TestLBLCR(t *testing.T) {
	s := newSched(t, "lblcr").(*lblcr)
	s.expire = time.Hour
	ds := added(1, 1)
	s.Update(ds)
	x := Flow{Dst: ip("10.9.9.9")}
	if got := pick(s, x); got != 2 {
		t.Fatalf("first: got %d want 2", got)
	}
	ds[0].ActiveConns = 2 // id2 overloaded, id1 under
	s.Changed(ds[0])
	if got := pick(s, x); got != 1 {
		t.Fatalf("grow: got %d want 1", got)
	}
	if n := len(s.table[x.Dst].set); n != 2 {
		t.Fatalf("set size %d, want 2", n)
	}
	// Both in the set: the least loaded member (id1) takes it.
	ds[1].ActiveConns = 1
	s.Changed(ds[1])
	if got := pick(s, x); got != 1 {
		t.Fatalf("set min: got %d want 1", got)
	}
	// After the expiration with no change, the busiest (id2) is shed.
	x.Now = 2 * time.Hour
	pick(s, x)
	set := s.table[x.Dst].set
	if len(set) != 1 || set[0].ID != 1 {
		t.Fatalf("after shedding: set %v", set)
	}
}

// No scheduler ever picks a weight-0 or overloaded real.
func TestNeverUnavailable(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, name := range Names() {
		s := newSched(t, name)
		if f, ok := s.(Flagged); ok {
			f.SetFlags(FlagFallback | FlagPort)
		}
		ds := added(0, 3, 1, 0, 2, 5, 1, 0)
		for _, d := range ds {
			d.LastWeight = 1
		}
		ds[2].Overloaded = true
		s.Update(ds)
		for i := 0; i < 2000; i++ {
			d := ds[r.IntN(len(ds))]
			d.ActiveConns, d.InactConns = r.IntN(10), r.IntN(10)
			s.Changed(d)
			f := Flow{Src: netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), 1}),
				Dst: netip.AddrFrom4([4]byte{10, 1, byte(r.IntN(256)), 1}), SrcPort: uint16(r.IntN(65536))}
			if got := s.Schedule(f); got != nil && !got.Available() {
				t.Fatalf("%s picked unavailable real %d (weight %d, overloaded %v)", name, got.ID, got.Weight, got.Overloaded)
			}
		}
	}
}

// The argmin tree chooses exactly what the kernel's linear scan does.
func TestArgminMatchesScan(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	scanWLC := func(ds []*Dest) *Dest {
		var least *Dest
		for _, d := range ds {
			if least == nil {
				if d.Available() {
					least = d
				}
				continue
			}
			if !d.Overloaded && overhead(least)*int64(d.Weight) > overhead(d)*int64(least.Weight) {
				least = d
			}
		}
		return least
	}
	s := newSched(t, "wlc")
	ds := added(make([]int, 37)...)
	for _, d := range ds {
		d.Weight = r.IntN(4)
	}
	s.Update(ds)
	for i := 0; i < 5000; i++ {
		d := ds[r.IntN(len(ds))]
		switch r.IntN(3) {
		case 0:
			d.ActiveConns = r.IntN(5)
		case 1:
			d.InactConns = r.IntN(300)
		case 2:
			d.Overloaded = r.IntN(4) == 0
		}
		s.Changed(d)
		if got, want := s.Schedule(Flow{}), scanWLC(ds); got != want {
			t.Fatalf("step %d: tree picked %v, scan %v", i, got, want)
		}
	}
}

func BenchmarkSchedule(b *testing.B) {
	for _, name := range Names() {
		for _, n := range []int{10, 100, 1000} {
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				s, _ := New(name)
				ws := make([]int, n)
				for i := range ws {
					ws[i] = 1 + i%5
				}
				s.Update(withLastWeights(added(ws...)))
				flows := make([]Flow, 1024)
				for i := range flows {
					a := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1})
					flows[i] = Flow{Src: a, Dst: a, SrcPort: uint16(i)}
				}
				i := 0
				for b.Loop() {
					// What the daemon does per new flow: pick, count the
					// new connection, tell the scheduler.
					d := s.Schedule(flows[i&1023])
					if d != nil {
						d.InactConns++
						s.Changed(d)
					}
					i++
				}
			})
		}
	}
}

// IPv6 addresses hash as the kernel's ip_vs_dh/sh/lblc hashkeys fold
// them: addr_fold = ip6[0]^ip6[1]^ip6[2]^ip6[3], then hash_32 of its host
// order. By hand: 2001:db8::a00:1 folds to 0x20010db8^0x0a000001 =
// 0x2a010db9, and 0x2a010db9 * 0x61C88647 mod 2^32 >> 24 = 5;
// 2001:db8::2 folds to 0x20010dba, bucket 160.
func TestIPv6Fold(t *testing.T) {
	for a, want := range map[string]uint32{"2001:db8::a00:1": 5, "2001:db8::2": 160} {
		if got := hash32(addr32(ip(a)), 8); got != want {
			t.Errorf("hash_32(fold(%s)) = %d, want %d", a, got, want)
		}
	}
	// dh, list [id3 id2 id1]: bucket 5 is id1's, 160 id2's.
	s := newSched(t, "dh")
	s.Update(added(1, 1, 1))
	for dst, id := range map[string]uint32{"2001:db8::a00:1": 1, "2001:db8::2": 2} {
		if got := pick(s, Flow{Dst: ip(dst), Src: ip("2001:db8:77::1")}); got != id {
			t.Errorf("dh %s: got %d want %d", dst, got, id)
		}
	}
	// sh, list [id2:w2, id1:w1]: bucket 5 is id1's, 160 id2's.
	s = newSched(t, "sh")
	s.Update(added(1, 2))
	for src, id := range map[string]uint32{"2001:db8::a00:1": 1, "2001:db8::2": 2} {
		if got := pick(s, Flow{Src: ip(src)}); got != id {
			t.Errorf("sh %s: got %d want %d", src, got, id)
		}
	}
}
