package dataplane

// aging.go: established connections age by their own timers
// (bpf/aging.h), as IPVS's do: an idle table costs nothing, and what
// aging costs follows the connections that expire. The sweep then walks
// only the embryonic tables, and the established ones at a full pass
// (SweepArgs.Full) as a safety net. ActiveConn and InActConn of the
// established connections are kept by the events that change them
// (est_live), never recounted.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// agingState is what Go knows of aging_conf.
type agingState struct {
	on       bool
	timeouts conntrack.Timeouts
	ports    *ringbuf.Reader // aged_ports
	rec      ringbuf.Record
}

// SetTimerAging turns aging by timers on (Open's default, unless
// Options.SweepAging) or off: off, the sweep walks the established tables
// every time, as before timers, and counts them. Timers armed before
// keep their connections counted but no longer end them; a full sweep
// does.
func (d *Dataplane) SetTimerAging(on bool) error {
	return d.writeAging(on, d.aging.timeouts)
}

// TimerAging reports whether established connections age by timers.
func (d *Dataplane) TimerAging() bool { return d.aging.on }

func (d *Dataplane) writeAging(on bool, to conntrack.Timeouts) error {
	v := bpfobj.DirectorAgingCfg{UdpTimeout: uint64(to.UDP)}
	for i := range v.TcpTimeout {
		v.TcpTimeout[i] = uint64(to.TCP[i])
	}
	if on {
		v.On = 1
	}
	if err := d.objs.AgingConf.Put(uint32(0), &v); err != nil {
		return fmt.Errorf("aging_conf: %w", err)
	}
	d.aging.on, d.aging.timeouts = on, to
	return nil
}

// addLiveCounts adds the established connections' counts (est_live,
// summed over the CPUs) of the configured reals to out.
func (d *Dataplane) addLiveCounts(out map[uint32]conntrack.Counts) error {
	d.realsMu.RLock()
	ids := make([]uint32, 0, len(d.reals))
	for id := range d.reals {
		ids = append(ids, id)
	}
	d.realsMu.RUnlock()
	var per []bpfobj.DirectorLiveCount
	for _, id := range ids {
		if err := d.objs.EstLive.Lookup(id, &per); err != nil {
			return fmt.Errorf("read est_live: %w", err)
		}
		var act, inact int64
		for _, c := range per {
			act += c.Active
			inact += c.Inactive
		}
		// A CPU's share may be negative; the sum is not, unless a timer
		// ended a connection of a real whose counts were reset
		// meanwhile.
		if act > 0 || inact > 0 {
			n := out[id]
			n.Active += int(max(act, 0))
			n.Inactive += int(max(inact, 0))
			out[id] = n
		}
	}
	return nil
}

// resetLive zeroes real id's established counts: the id goes to a new
// real.
func (d *Dataplane) resetLive(id uint32) error {
	zero := make([]bpfobj.DirectorLiveCount, ebpf.MustPossibleCPU())
	if err := d.objs.EstLive.Update(id, zero, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("reset established counts of real %d: %w", id, err)
	}
	return nil
}

// drainAgedPorts appends the FULLNAT ports timers freed since the last
// call to out.
func (d *Dataplane) drainAgedPorts(out []LocalPort) ([]LocalPort, error) {
	a := &d.aging
	if a.ports == nil {
		rd, err := ringbuf.NewReader(d.objs.AgedPorts)
		if err != nil {
			return out, fmt.Errorf("open aged_ports: %w", err)
		}
		a.ports = rd
	}
	a.ports.SetDeadline(time.Now())
	for {
		if err := a.ports.ReadInto(&a.rec); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return out, nil
			}
			return out, fmt.Errorf("read aged_ports: %w", err)
		}
		var p bpfobj.SweepSweepPort
		if len(a.rec.RawSample) < int(unsafe.Sizeof(p)) {
			return out, fmt.Errorf("aged port of %d bytes", len(a.rec.RawSample))
		}
		p = *(*bpfobj.SweepSweepPort)(unsafe.Pointer(&a.rec.RawSample[0]))
		out = append(out, localPortOf(p))
	}
}

func localPortOf(p bpfobj.SweepSweepPort) LocalPort {
	addr := netip.AddrFrom4([4]byte(p.Addr[:4]))
	if p.V6 != 0 {
		addr = netip.AddrFrom16(p.Addr)
	}
	return LocalPort{Addr: addr, Port: fromBE16(p.Port), Proto: p.Proto}
}

func (a *agingState) Close() error {
	if a.ports == nil {
		return nil
	}
	err := a.ports.Close()
	a.ports = nil
	return err
}
