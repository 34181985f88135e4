package dataplane

import (
	"time"
)

// The automatic defence: the slow path watches for overload and engages
// the SYN proxy for every service that can take it (SvcSynProxyAuto: TCP,
// NAT and FULLNAT reals) until the flood is over.

// Auto-defence triggers and hold-down.
const (
	defenceTick = 200 * time.Millisecond
	// defenceHold is how long the defence stays engaged after the last
	// sign of overload.
	defenceHold = 10 * time.Second
)

// DefenceStatus is the defence as the daemon reports it.
type DefenceStatus struct {
	Engaged bool
	// Since is when it last engaged (zero: never).
	Since time.Time
	// Reason is what engaged it last.
	Reason string
}

// housekeeping runs the slow path's periodic work: the SYN proxy's
// resends and timeouts, and the automatic defence.
func (sp *slowPath) housekeeping() {
	defer sp.wg.Done()
	t := time.NewTicker(defenceTick)
	defer t.Stop()
	if len(sp.all) == 0 {
		return
	}
	w := sp.newWorker(sp.all[0])
	var lastDrops, lastSYN, shedLogged uint64
	var lastOverload, shedAt time.Time
	first := true
	for {
		select {
		case <-sp.stop:
			return
		case <-t.C:
		}
		sp.proxyExpire(w)

		drops := sp.rxDrops()
		ctr, _ := sp.d.Counters()
		syn, shed := ctr[StatNewSYN], ctr[StatShed]
		dDrops, dSYN := drops-lastDrops, syn-lastSYN
		lastDrops, lastSYN = drops, syn
		if first {
			first, shedLogged = false, shed
			continue
		}
		// Admission control sheds in XDP; say so, at most every 10 s.
		if shed > shedLogged && time.Since(shedAt) >= 10*time.Second {
			sp.d.log.Warn("admission control: SYNs from new sources over --admit-rate dropped",
				"dropped", shed-shedLogged)
			shedLogged, shedAt = shed, time.Now()
		}
		sp.d.defenceMu.Lock()
		def := sp.d.defence
		sp.d.defenceMu.Unlock()
		if !def.Auto {
			continue
		}
		rate := dSYN * uint64(time.Second/defenceTick)
		reason := ""
		switch {
		case dDrops > 0:
			reason = "the slow path dropped new flows (AF_XDP ring full)"
		case def.AutoSYNRate > 0 && rate >= def.AutoSYNRate:
			reason = "new SYNs over --synproxy-auto-rate"
		}
		now := time.Now()
		if reason != "" {
			lastOverload = now
			if !sp.d.engaged.Load() {
				sp.d.engage(true, reason)
				sp.d.log.Warn("flood defence engaged: SYN proxy on for TCP services of NAT and FULLNAT reals",
					"reason", reason, "new_syn_per_s", rate, "slow_path_drops", dDrops)
			}
			continue
		}
		if sp.d.engaged.Load() && now.Sub(lastOverload) >= defenceHold {
			sp.d.engage(false, "")
			sp.d.log.Info("flood defence disengaged", "quiet_for", defenceHold.String())
		}
	}
}

// rxDrops sums what the AF_XDP sockets could not take.
func (sp *slowPath) rxDrops() uint64 {
	var n uint64
	for _, qs := range sp.all {
		if st, err := qs.sock.Stats(); err == nil {
			n += st.Rx_dropped + st.Rx_ring_full
		}
	}
	return n
}

// counter reads one global counter summed over CPUs (0 on error).
func (d *Dataplane) counter(i int) uint64 {
	c, err := d.Counters()
	if err != nil || i >= len(c) {
		return 0
	}
	return c[i]
}

// engage turns the automatic SYN proxy on or off.
func (d *Dataplane) engage(on bool, reason string) {
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

// Defence returns the defence's state.
func (d *Dataplane) DefenceStatus() DefenceStatus {
	d.defenceMu.Lock()
	defer d.defenceMu.Unlock()
	return DefenceStatus{Engaged: d.engaged.Load(), Since: d.defenceSince, Reason: d.defenceReason}
}
