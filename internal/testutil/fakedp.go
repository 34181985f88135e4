package testutil

import (
	"errors"

	"github.com/xipvs/xipvs/dataplane"
)

// FakeDataplane is an in-memory data plane for the server's tests and
// the daemon's: its maps are Go maps. One director interface, eth0
// (ifindex 2).
type FakeDataplane struct {
	Services map[dataplane.ServiceKey]uint32
	Reals    map[uint32]dataplane.Real
	Conns    map[dataplane.ConnKey]dataplane.Conn
}

// NewFakeDataplane returns an empty FakeDataplane.
func NewFakeDataplane() *FakeDataplane {
	return &FakeDataplane{Services: map[dataplane.ServiceKey]uint32{}, Reals: map[uint32]dataplane.Real{},
		Conns: map[dataplane.ConnKey]dataplane.Conn{}}
}

func (f *FakeDataplane) Interfaces() []dataplane.Interface {
	return []dataplane.Interface{{Name: "eth0", Index: 2}}
}
func (f *FakeDataplane) SetService(k dataplane.ServiceKey, id uint32) error {
	f.Services[k] = id
	return nil
}
func (f *FakeDataplane) DeleteService(k dataplane.ServiceKey) error {
	if _, ok := f.Services[k]; !ok {
		return errors.New("no such key")
	}
	delete(f.Services, k)
	return nil
}
func (f *FakeDataplane) SetReal(id uint32, r dataplane.Real) error { f.Reals[id] = r; return nil }
func (f *FakeDataplane) DeleteReal(id uint32) error                { delete(f.Reals, id); return nil }
func (f *FakeDataplane) WalkConns(fn func(dataplane.ConnKey, dataplane.Conn) bool) error {
	for k, c := range f.Conns {
		if !fn(k, c) {
			break
		}
	}
	return nil
}
func (f *FakeDataplane) LookupConn(k dataplane.ConnKey) (dataplane.Conn, bool, error) {
	c, ok := f.Conns[k]
	return c, ok, nil
}
func (f *FakeDataplane) DeleteConn(k dataplane.ConnKey) error { delete(f.Conns, k); return nil }

// ServiceKeys lists the services map's keys (server.Adopter).
func (f *FakeDataplane) ServiceKeys() ([]dataplane.ServiceKey, error) {
	var out []dataplane.ServiceKey
	for k := range f.Services {
		out = append(out, k)
	}
	return out, nil
}

// RealIDs lists the reals map's ids (server.Adopter).
func (f *FakeDataplane) RealIDs() ([]uint32, error) {
	var out []uint32
	for id := range f.Reals {
		out = append(out, id)
	}
	return out, nil
}
