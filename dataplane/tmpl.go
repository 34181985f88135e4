package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// Persistence templates in the data plane (bpf/picks.h tmpls): XDP makes
// one for each client network of a persistent service whose new flow it
// schedules, and sends the next ones to its real; the server keeps its
// own copy (internal/server/flow.go), makes the slow path's, and ends
// them (expiry, a real gone or failing), here too.

// TemplateUse is a template as the data plane holds it: its real and
// when a new connection last followed it (the kernel's monotonic clock,
// as Now).
type TemplateUse struct {
	RealID   uint32
	LastUsed time.Duration
	// Controls is how many established connections aged by timers follow
	// it (IPVS's n_control; bpf/aging.h): while any does, it lives. Kept
	// by the data plane; SetTemplate leaves it as it is.
	Controls int
}

func tmplKeyOf(t Template) bpfobj.DirectorSweepTmpl {
	k := bpfobj.DirectorSweepTmpl{SvcId: t.ServiceID, Vport: be16(t.VPort)}
	if t.Client.Is4() {
		a := t.Client.As4()
		copy(k.Client[:4], a[:])
	} else {
		k.Client = t.Client.As16()
		k.V6 = 1
	}
	return k
}

func templateOf(k *bpfobj.DirectorSweepTmpl) Template {
	client := netip.AddrFrom4([4]byte(k.Client[:4]))
	if k.V6 != 0 {
		client = netip.AddrFrom16(k.Client)
	}
	return Template{ServiceID: k.SvcId, Client: client, VPort: fromBE16(k.Vport)}
}

// LookupTemplate returns template t, if the data plane has it.
func (d *Dataplane) LookupTemplate(t Template) (TemplateUse, bool, error) {
	k := tmplKeyOf(t)
	var v bpfobj.DirectorTmplVal
	if err := d.objs.Tmpls.Lookup(&k, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return TemplateUse{}, false, nil
		}
		return TemplateUse{}, false, fmt.Errorf("lookup template: %w", err)
	}
	return TemplateUse{RealID: v.RealId, LastUsed: time.Duration(v.LastUsed), Controls: int(max(v.Controls, 0))}, true, nil
}

// SetTemplate writes template t.
func (d *Dataplane) SetTemplate(t Template, u TemplateUse) error {
	k := tmplKeyOf(t)
	v := bpfobj.DirectorTmplVal{RealId: u.RealID, LastUsed: uint64(u.LastUsed)}
	var old bpfobj.DirectorTmplVal
	if err := d.objs.Tmpls.Lookup(&k, &old); err == nil {
		v.Controls = old.Controls // XDP's timers keep it
	}
	if err := d.objs.Tmpls.Put(&k, &v); err != nil {
		return fmt.Errorf("write template: %w", err)
	}
	return nil
}

// DeleteTemplate removes template t; one already gone is no error.
func (d *Dataplane) DeleteTemplate(t Template) error {
	k := tmplKeyOf(t)
	if err := d.objs.Tmpls.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete template: %w", err)
	}
	return nil
}

// DeleteTemplates removes the templates for which end says so (every
// one, walked in batches); a template that is already gone is no error.
func (d *Dataplane) DeleteTemplates(end func(Template, TemplateUse) bool) error {
	var gone []bpfobj.DirectorSweepTmpl
	err := d.Templates(func(t Template, u TemplateUse) {
		if end(t, u) {
			gone = append(gone, tmplKeyOf(t))
		}
	})
	if err != nil {
		return err
	}
	for i := range gone {
		if err := d.objs.Tmpls.Delete(&gone[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete template: %w", err)
		}
	}
	return nil
}

// Templates calls fn for every template of the data plane.
func (d *Dataplane) Templates(fn func(Template, TemplateUse)) error {
	const chunk = 4096
	keys, vals := make([]bpfobj.DirectorSweepTmpl, chunk), make([]bpfobj.DirectorTmplVal, chunk)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.Tmpls.BatchLookup(&cursor, keys, vals, nil)
		for i := range keys[:n] {
			fn(templateOf(&keys[i]), TemplateUse{RealID: vals[i].RealId, LastUsed: time.Duration(vals[i].LastUsed), Controls: int(max(vals[i].Controls, 0))})
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read templates: %w", err)
		}
	}
}
