package server

import (
	"net/netip"
	"testing"
	"time"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

// The sweep's steps, alone.

func newSweep(now time.Duration) *sweep {
	return &sweep{now: now, to: conntrack.DefaultTimeouts(), persistent: map[uint32]*persistSweep{},
		counts: map[uint32]*conntrack.Counts{}, replies: map[dataplane.ConnKey]dataplane.Conn{}, owned: map[dataplane.ConnKey]bool{}}
}

var (
	swClient = netip.MustParseAddr("198.51.100.1")
	swVIP    = netip.MustParseAddr("192.0.2.1")
	swReal   = netip.MustParseAddr("10.0.0.11")
)

// natPair returns the forward and reply entries of one NAT connection.
func natPair(fwdSeen, replySeen time.Duration) (entry, entry) {
	k := dataplane.ConnKey{Src: swClient, Dst: swVIP, SrcPort: 4000, DstPort: 80, Proto: conntrack.ProtoTCP}
	out := dataplane.ConnKey{Src: swClient, Dst: swReal, SrcPort: 4000, DstPort: 8080}
	fwd := dataplane.Conn{RealID: 1, State: conntrack.StateEstablished, LastSeen: fwdSeen, Out: out}
	rk := fwd.Peer(k.Proto)
	rep := dataplane.Conn{RealID: 1, LastSeen: replySeen, Flags: dataplane.ConnReply,
		Out: dataplane.ConnKey{Src: swVIP, Dst: swClient, SrcPort: 80, DstPort: 4000}}
	return entry{k, fwd}, entry{rk, rep}
}

// TestSweepJudgePairs: a NAT connection is idle only when both of its
// entries are; its reply entry is then owned, not an orphan.
func TestSweepJudgePairs(t *testing.T) {
	est := conntrack.DefaultTimeouts().TCP[conntrack.StateEstablished]
	now := est + time.Hour
	for _, c := range []struct {
		name            string
		fwd, reply      time.Duration
		wantExpired     bool
		wantActiveCount int
	}{
		{"both idle", 0, 0, true, 0},
		{"replies recent", 0, now - time.Second, false, 1},
		{"forward recent", now - time.Second, 0, false, 1},
	} {
		sw := newSweep(now)
		f, r := natPair(c.fwd, c.reply)
		sw.paired = []entry{f}
		sw.replies[r.k] = r.c
		sw.judgePairs()
		if got := len(sw.expired) == 1; got != c.wantExpired {
			t.Errorf("%s: expired %v, want %v", c.name, got, c.wantExpired)
		}
		if !sw.owned[r.k] {
			t.Errorf("%s: reply entry not owned", c.name)
		}
		n := 0
		if cnt := sw.counts[1]; cnt != nil {
			n = cnt.Active
		}
		if n != c.wantActiveCount {
			t.Errorf("%s: active %d, want %d", c.name, n, c.wantActiveCount)
		}
	}
}

// TestSweepExpireRereads: an entry refreshed between the walk and the
// expiry is kept; an expired NAT entry goes with its reply entry, whose
// local port is released.
func TestSweepExpireRereads(t *testing.T) {
	est := conntrack.DefaultTimeouts().TCP[conntrack.StateEstablished]
	now := est + time.Hour
	dp := testutil.NewFakeDataplane()
	f, r := natPair(0, 0)
	dp.Conns[f.k], dp.Conns[r.k] = f.c, r.c
	sw := newSweep(now)
	sw.expired = []entry{f}
	refreshed := f.c
	refreshed.LastSeen = now
	dp.Conns[f.k] = refreshed
	if err := sw.expire(dp); err != nil {
		t.Fatal(err)
	}
	if len(dp.Conns) != 2 || len(sw.releases) != 0 {
		t.Fatalf("refreshed connection deleted: %v", dp.Conns)
	}
	dp.Conns[f.k] = f.c
	if err := sw.expire(dp); err != nil {
		t.Fatal(err)
	}
	if len(dp.Conns) != 0 || len(sw.releases) != 1 || sw.releases[0].k != r.k {
		t.Errorf("after expiry: conns %v, releases %v", dp.Conns, sw.releases)
	}
}

// TestSweepDropOrphans: a reply entry without its forward entry goes once
// idle for orphanReplyAge, not before.
func TestSweepDropOrphans(t *testing.T) {
	dp := testutil.NewFakeDataplane()
	_, r := natPair(0, time.Minute)
	dp.Conns[r.k] = r.c
	sw := newSweep(time.Minute + orphanReplyAge/2)
	sw.replies[r.k] = r.c
	if err := sw.dropOrphans(dp); err != nil || len(dp.Conns) != 1 {
		t.Fatalf("young orphan dropped (%v)", err)
	}
	sw.now = time.Minute + orphanReplyAge
	if err := sw.dropOrphans(dp); err != nil || len(dp.Conns) != 0 {
		t.Errorf("old orphan kept (%v)", err)
	}
}
