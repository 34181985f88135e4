package slowpath

import (
	"time"

	"github.com/xipvs/xipvs/dataplane"
)

// Auto-defence triggers and hold-down.
const (
	defenceTick = 200 * time.Millisecond
	// defenceHold is how long the defence stays engaged after the last
	// sign of overload.
	defenceHold = 10 * time.Second
)

// housekeeping runs the slow path's periodic work: the SYN proxy's
// resends and timeouts, and the automatic defence.
func (sp *SlowPath) housekeeping() {
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
		syn, shed := ctr[dataplane.StatNewSYN], ctr[dataplane.StatShed]
		dDrops, dSYN := drops-lastDrops, syn-lastSYN
		lastDrops, lastSYN = drops, syn
		if first {
			first, shedLogged = false, shed
			continue
		}
		// Admission control sheds in XDP; say so, at most every 10 s.
		if shed > shedLogged && time.Since(shedAt) >= 10*time.Second {
			sp.log.Warn("admission control: SYNs from new sources over --admit-rate dropped",
				"dropped", shed-shedLogged)
			shedLogged, shedAt = shed, time.Now()
		}
		def := sp.d.Defence()
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
			if !sp.d.Engaged() {
				sp.d.Engage(true, reason)
				sp.log.Warn("flood defence engaged: SYN proxy on for TCP services of NAT and FULLNAT reals",
					"reason", reason, "new_syn_per_s", rate, "slow_path_drops", dDrops)
			}
			continue
		}
		if sp.d.Engaged() && now.Sub(lastOverload) >= defenceHold {
			sp.d.Engage(false, "")
			sp.log.Info("flood defence disengaged", "quiet_for", defenceHold.String())
		}
	}
}

// rxDrops sums what the AF_XDP sockets could not take.
func (sp *SlowPath) rxDrops() uint64 {
	var n uint64
	for _, qs := range sp.all {
		if st, err := qs.sock.Stats(); err == nil {
			n += st.Rx_dropped + st.Rx_ring_full
		}
	}
	return n
}
