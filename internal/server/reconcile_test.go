package server

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

func rules(t *testing.T, s string) *config.Config {
	t.Helper()
	c, err := config.ParseRules(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// failingDP fails SetReal for one real address, after precheck passed:
// the case Reconcile must undo.
type failingDP struct {
	*testutil.FakeDataplane
	failAddr string
}

func (f *failingDP) SetReal(id uint32, r dataplane.Real) error {
	if r.Addr.String() == f.failAddr {
		return errors.New("injected map failure")
	}
	return f.FakeDataplane.SetReal(id, r)
}

func TestReconcileByDifference(t *testing.T) {
	s, dp, _ := newTestServer(t)
	if err := s.Reconcile(rules(t, "-A -t 10.0.0.100:80 -s rr\n-a -t 10.0.0.100:80 -r 10.0.0.11 -g\n-a -t 10.0.0.100:80 -r 10.0.0.12 -g\n")); err != nil {
		t.Fatal(err)
	}
	id11 := s.services[config.ServiceKey{Proto: config.TCP, Addr: vip, Port: 80}].dests[1].realID
	// A connection on 10.0.0.11 survives a reload that keeps that real.
	k := dataplane.ConnKey{Src: rs2, Dst: vip, SrcPort: 1, DstPort: 80, Proto: 6}
	dp.Conns[k] = dataplane.Conn{RealID: id11}
	want := rules(t, "-A -t 10.0.0.100:80 -s wrr\n-a -t 10.0.0.100:80 -r 10.0.0.11 -g -w 5\n-A -u 10.0.0.100:53 -s rr\n")
	if err := s.Reconcile(want); err != nil {
		t.Fatal(err)
	}
	got := s.Config()
	if len(got.Services) != 2 || got.Services[0].Service.Scheduler != "wrr" || len(got.Services[0].Dests) != 1 ||
		got.Services[0].Dests[0].Weight != 5 {
		t.Errorf("after reconcile: %+v", got)
	}
	if _, ok := dp.Conns[k]; !ok {
		t.Error("the kept real's connection was expired")
	}
	if s.services[config.ServiceKey{Proto: config.TCP, Addr: vip, Port: 80}].dests[0].realID != id11 {
		t.Error("the kept real got a new id")
	}
}

func TestReconcileRollsBack(t *testing.T) {
	fdp := &failingDP{FakeDataplane: testutil.NewFakeDataplane()}
	s, _, _ := newTestServer(t)
	s.opts.Dataplane = fdp
	start := rules(t, "-A -t 10.0.0.100:80 -s rr\n-a -t 10.0.0.100:80 -r 10.0.0.11 -g\n-A -u 10.0.0.100:53 -s rr\n")
	if err := s.Reconcile(start); err != nil {
		t.Fatal(err)
	}
	before := s.Config()
	fdp.failAddr = "10.0.0.13"
	bad := rules(t, "-A -t 10.0.0.100:80 -s wrr\n-a -t 10.0.0.100:80 -r 10.0.0.12 -g\n-a -t 10.0.0.100:80 -r 10.0.0.13 -g\n-A -t 10.0.0.100:443 -s rr\n")
	err := s.Reconcile(bad)
	if err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("reconcile: %v", err)
	}
	if after := s.Config(); !reflect.DeepEqual(after, before) {
		t.Errorf("not rolled back:\n%+v\nwant:\n%+v", after, before)
	}
	// Invalid input fails before anything changes (an unknown scheduler
	// is refused by the rules parser already; an API client can still
	// send one).
	unknown := before.Clone()
	unknown.Services[0].Service.Scheduler = "nosuch"
	for _, w := range []*config.Config{
		unknown,
		{Services: []config.ServiceConfig{before.Services[0], before.Services[0]}},
	} {
		if err := s.Reconcile(w); err == nil {
			t.Errorf("accepted %+v", w)
		}
		if after := s.Config(); !reflect.DeepEqual(after, before) {
			t.Errorf("changed by a refused configuration: %+v", after)
		}
	}
}

// blockingDP blocks SetReal for one address until released, then fails
// it: a restore that is slow and then rolls back.
type blockingDP struct {
	*testutil.FakeDataplane
	addr             string
	entered, release chan struct{}
}

func (b *blockingDP) SetReal(id uint32, r dataplane.Real) error {
	if r.Addr.String() == b.addr {
		close(b.entered)
		<-b.release
		return errors.New("injected map failure")
	}
	return b.FakeDataplane.SetReal(id, r)
}

// TestCommandWaitsForRestore: a command sent while a restore runs lands
// after it, so the restore's rollback cannot undo the command, and the
// command is not lost.
func TestCommandWaitsForRestore(t *testing.T) {
	bdp := &blockingDP{FakeDataplane: testutil.NewFakeDataplane(), addr: "10.0.0.13", entered: make(chan struct{}), release: make(chan struct{})}
	s, _, _ := newTestServer(t)
	s.opts.Dataplane = bdp
	restored := make(chan error, 1)
	go func() {
		restored <- s.ApplyLines(context.Background(), lines(t, "-A -t 10.0.0.100:80 -s rr\n-a -t 10.0.0.100:80 -r 10.0.0.13 -g\n"))
	}()
	<-bdp.entered
	added := make(chan error, 1)
	go func() {
		added <- s.AddService(config.Service{ServiceKey: config.ServiceKey{Proto: config.UDP, Addr: vip, Port: 53}, Scheduler: "rr"})
	}()
	select {
	case err := <-added:
		t.Fatalf("command landed in the middle of a restore (%v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(bdp.release)
	if err := <-restored; err == nil {
		t.Fatal("restore did not fail")
	}
	if err := <-added; err != nil {
		t.Fatal(err)
	}
	got := s.Config()
	if len(got.Services) != 1 || got.Services[0].Service.Proto != config.UDP {
		t.Errorf("after a failed restore and a command: %+v, want only the command's UDP service", got.Services)
	}
}

func lines(t *testing.T, s string) []config.Line {
	t.Helper()
	ls, err := config.ReadRules(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return ls
}
