package dataplane

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// ServiceKey identifies a virtual service in the data plane.
type ServiceKey struct {
	VIP   netip.Addr
	Port  uint16
	Proto uint8
}

func (k ServiceKey) raw() bpfobj.DirectorSvcKey {
	return bpfobj.DirectorSvcKey{Vip: be32(k.VIP), Port: be16(k.Port), Proto: k.Proto}
}

// SetService adds or replaces a virtual service.
func (d *Dataplane) SetService(k ServiceKey, id uint32, flags SvcFlags) error {
	var err error
	if k.VIP.Is6() {
		d.ipv6.Store(true)
		err = d.objs.Services6.Put(k.raw6(), bpfobj.DirectorSvcVal{Id: id, Flags: uint32(flags)})
	} else {
		err = d.objs.Services.Put(k.raw(), bpfobj.DirectorSvcVal{Id: id, Flags: uint32(flags)})
	}
	if err != nil {
		return fmt.Errorf("set service %v:%d/%d: %w", k.VIP, k.Port, k.Proto, err)
	}
	d.realsMu.Lock()
	defer d.realsMu.Unlock()
	if d.svcKeys[k] {
		return nil
	}
	d.svcKeys[k] = true
	return d.filterVIP(k, 1)
}

// DeleteService removes a virtual service; a missing one is not an error.
func (d *Dataplane) DeleteService(k ServiceKey) error {
	var err error
	if k.VIP.Is6() {
		err = d.objs.Services6.Delete(k.raw6())
	} else {
		err = d.objs.Services.Delete(k.raw())
	}
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete service %v:%d/%d: %w", k.VIP, k.Port, k.Proto, err)
	}
	d.realsMu.Lock()
	defer d.realsMu.Unlock()
	if !d.svcKeys[k] {
		return nil
	}
	delete(d.svcKeys, k)
	return d.filterVIP(k, -1)
}
