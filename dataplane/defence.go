package dataplane

import (
	"fmt"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// The automatic defence: the slow path watches for overload and engages
// the SYN proxy for every service that can take it (SvcSynProxyAuto: TCP,
// NAT and FULLNAT reals) until the flood is over.

// DefenceStatus is the defence as the daemon reports it.
type DefenceStatus struct {
	Engaged bool `json:"engaged"`
	// Since is when it last engaged (zero: never).
	Since time.Time `json:"since"`
	// Reason is what engaged it last.
	Reason string `json:"reason"`
}

// Defence returns the defence's settings.
func (d *Dataplane) Defence() Defence {
	d.defenceMu.Lock()
	defer d.defenceMu.Unlock()
	return d.defence
}

// Engaged reports whether the automatic SYN proxy is on.
func (d *Dataplane) Engaged() bool { return d.engaged.Load() }

// DefenceWScale is the window scale the SYN proxy's SYN-ACKs advertise.
func (d *Dataplane) DefenceWScale() uint8 { return uint8(d.defenceWScale.Load()) }

// Engage turns the automatic SYN proxy on or off.
func (d *Dataplane) Engage(on bool, reason string) {
	d.defenceMu.Lock()
	defer d.defenceMu.Unlock()
	def := d.defence
	def.Engaged = on
	if err := d.writeDefence(def); err != nil {
		d.log.Warn("flood defence: writing the data plane's settings", "err", err)
		return
	}
	if on {
		d.defenceSince, d.defenceReason = time.Now(), reason
	} else {
		d.disengagedAt.Store(time.Now().UnixNano())
	}
	d.engaged.Store(on)
}

// DefenceStatus returns the defence's state.
func (d *Dataplane) DefenceStatus() DefenceStatus {
	d.defenceMu.Lock()
	defer d.defenceMu.Unlock()
	return DefenceStatus{Engaged: d.engaged.Load(), Since: d.defenceSince, Reason: d.defenceReason}
}

// Defence is the director's flood defence, as XDP reads it.
type Defence struct {
	// Engaged turns the SYN proxy on for SvcSynProxyAuto services.
	Engaged bool
	// MSS and WScale are what the proxy's SYN-ACKs advertise (0: 1460
	// and 7, Linux's usual for a 1500-byte MTU).
	MSS    uint16
	WScale uint8
	// AdmitRate paces SYNs from sources that have not completed a
	// handshake recently, per second across the director (0: no limit);
	// AdmitBurst is how many one CPU may take at once.
	AdmitRate, AdmitBurst uint64
	// Auto engages the SYN proxy by itself when the slow path drops new
	// flows or, with AutoSYNRate set, when new SYNs come faster.
	Auto        bool
	AutoSYNRate uint64
	// SloppyTCP lets any TCP packet but a RST that has no connection
	// start one (IPVS's sloppy_tcp): a flow that ECMP moves here from
	// another director is scheduled mid-stream and picked up. Off, as in
	// IPVS, only a SYN starts a connection and other packets pass to
	// the kernel (counted as pass_no_conn).
	SloppyTCP bool
}

// Defaults of Defence.
const (
	DefaultProxyMSS    = 1460
	DefaultProxyWScale = 7
)

// SetDefence sets the defence (Engaged is left to the automatic defence
// when Auto is set).
func (d *Dataplane) SetDefence(def Defence) error {
	d.defenceMu.Lock()
	defer d.defenceMu.Unlock()
	if def.Auto {
		def.Engaged = d.engaged.Load()
	}
	if err := d.writeDefence(def); err != nil {
		return err
	}
	d.defence = def
	d.engaged.Store(def.Engaged)
	return nil
}

// writeDefence writes def where XDP reads it.
func (d *Dataplane) writeDefence(def Defence) error {
	v := bpfobj.DirectorDefenceCfg{Mss: def.MSS, Wscale: def.WScale}
	if v.Mss == 0 { // the zero Defence: the defaults
		v.Mss, v.Wscale = DefaultProxyMSS, DefaultProxyWScale
	}
	if def.Engaged {
		v.Flags |= uint32(bpfobj.DirectorDefenceFlagDEF_F_ENGAGED)
	}
	if def.SloppyTCP {
		v.Flags |= uint32(bpfobj.DirectorDefenceFlagDEF_F_SLOPPY_TCP)
	}
	if def.AdmitRate > 0 {
		cpus, err := ebpf.PossibleCPU()
		if err != nil {
			return err
		}
		// Each CPU paces its share of the rate (GCRA, bpf/synproxy.h).
		v.AdmitInterval = uint64(cpus) * uint64(time.Second) / def.AdmitRate
		if v.AdmitInterval == 0 {
			v.AdmitInterval = 1
		}
		burst := def.AdmitBurst
		if burst == 0 {
			burst = 1
		}
		v.AdmitBurst = burst * v.AdmitInterval
	}
	if err := d.objs.Defence.Put(uint32(0), &v); err != nil {
		return fmt.Errorf("set defence: %w", err)
	}
	d.defenceWScale.Store(uint32(v.Wscale))
	return nil
}

// Proxying reports whether a flow's decision puts it through the proxy:
// its service proxies always, or while the defence is engaged (and for a
// while after, so that ACKs to cookies XDP sent then still find it).
func (d *Dataplane) Proxying(dec *Decision) bool {
	if dec.SynProxy {
		return true
	}
	if !dec.SynProxyAuto {
		return false
	}
	return d.engaged.Load() || time.Since(time.Unix(0, d.disengagedAt.Load())) < 10*time.Second
}
