package server

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/internal/neigh"
	"github.com/xipvs/xipvs/internal/testutil"
)

// failingDisk writes the state file until told the disk is full: then
// it has no room to reserve (full), or reserves and fails to write
// (failWrite: a reservation the state outgrew, an I/O error).
type failingDisk struct {
	path            string
	full, failWrite bool
	f               *StateFile
}

func (f *failingDisk) reserve(n int) error {
	if f.full {
		return &os.PathError{Op: "fallocate", Path: f.path + ".tmp", Err: syscall.ENOSPC}
	}
	return f.f.Reserve(n)
}

func (f *failingDisk) persist(st State) error {
	if f.full || f.failWrite {
		return &os.PathError{Op: "write", Path: f.path + ".tmp", Err: syscall.ENOSPC}
	}
	return f.f.Save(st)
}

// TestCommandNotSavedIsUndone: a change whose state cannot be written
// fails with ErrNotSaved and leaves the running configuration, the data
// plane's maps and the saved file as they were: for every kind of
// command and for -R, whether the disk had no room to reserve (nothing
// is changed: the maps keep every id) or the write failed after the
// change (it is undone: the same configuration, a deleted service or
// real back under a new id); the next command, once the disk has room,
// works.
func TestCommandNotSavedIsUndone(t *testing.T) {
	for _, failWrite := range []bool{false, true} {
		t.Run(map[bool]string{false: "no room", true: "write fails"}[failWrite], func(t *testing.T) { notSaved(t, failWrite) })
	}
}

func notSaved(t *testing.T, failWrite bool) {
	dp := testutil.NewFakeDataplane()
	path := filepath.Join(t.TempDir(), "state.json")
	disk := &failingDisk{path: path, f: &StateFile{Path: path}}
	s := New(Options{Dataplane: dp, Now: (&clock{}).Now, Persist: disk.persist, Reserve: disk.reserve,
		Route: func(netip.Addr) (neigh.NextHop, error) { return neigh.NextHop{Ifindex: 2, MTU: 1500}, nil }})
	for _, l := range []string{"-A -t 10.0.0.100:80 -s wlc", "-a -t 10.0.0.100:80 -r 10.0.0.11 -g",
		"-a -t 10.0.0.100:80 -r 10.0.0.12 -g", "-A -t 10.0.0.100:443 -s rr"} {
		apply(t, s, l)
	}
	saved, err := os.ReadFile(disk.path)
	if err != nil {
		t.Fatal(err)
	}
	before := s.Config()
	svcs, reals := maps.Clone(dp.Services), maps.Clone(dp.Reals)

	disk.full, disk.failWrite = !failWrite, failWrite
	k := config.ServiceKey{Proto: config.TCP, Addr: vip, Port: 80}
	for name, change := range map[string]func() error{
		"-A": func() error {
			return s.AddService(config.Service{ServiceKey: config.ServiceKey{Proto: config.TCP, Addr: vip, Port: 8080}, Scheduler: "rr"})
		},
		"-E": func() error { return s.EditService(config.Service{ServiceKey: k, Scheduler: "rr"}) },
		"-D": func() error { return s.DeleteService(k) },
		"-C": s.Clear,
		"-a": func() error {
			return s.AddDest(k, config.Dest{Addr: netip.MustParseAddr("10.0.0.13"), Port: 80, Weight: 1, Fwd: config.FwdRoute})
		},
		"-e": func() error { return s.EditDest(k, config.Dest{Addr: rs1, Port: 80, Weight: 5, Fwd: config.FwdRoute}) },
		"-d": func() error { return s.DeleteDest(k, rs2, 80) },
		"-R": func() error {
			lines, err := config.ReadRules(strings.NewReader("-A -u 10.0.0.100:53 -s rr\n-a -u 10.0.0.100:53 -r 10.0.0.14:53 -g\n"))
			if err != nil {
				return err
			}
			return s.ApplyLines(context.Background(), lines)
		},
	} {
		err := change()
		if !errors.Is(err, ErrNotSaved) {
			t.Errorf("%s on a full disk: %v, want %v", name, err, ErrNotSaved)
		}
		if got := s.Config(); !reflect.DeepEqual(got, before) {
			t.Errorf("%s on a full disk changed the configuration:\n%v\nwant\n%v", name, got, before)
		}
		if !failWrite && !maps.Equal(dp.Services, svcs) {
			t.Errorf("%s on a full disk changed the services map: %v, want %v", name, dp.Services, svcs)
		}
		if !failWrite && !reflect.DeepEqual(dp.Reals, reals) {
			t.Errorf("%s on a full disk changed the reals map: %v, want %v", name, dp.Reals, reals)
		}
		if len(dp.Services) != len(svcs) || len(dp.Reals) != len(reals) {
			t.Errorf("%s on a full disk left %d services and %d reals in the maps, want %d and %d", name, len(dp.Services), len(dp.Reals), len(svcs), len(reals))
		}
		if b, _ := os.ReadFile(disk.path); string(b) != string(saved) {
			t.Errorf("%s on a full disk changed the saved file", name)
		}
	}

	disk.full, disk.failWrite = false, false
	apply(t, s, "-A -t 10.0.0.100:8080 -s rr")
	st, err := ReadStateFile(disk.path)
	if err != nil || len(st.Services) != 3 {
		t.Fatalf("after the disk has room: %d services saved (%v), want 3", len(st.Services), err)
	}
}
