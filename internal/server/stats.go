package server

import (
	"context"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
)

// TrafficReader reads the data plane's per-real counters; the data
// plane implements it. Without one, only connection counts are kept.
type TrafficReader interface {
	RealTraffic(id uint32) (dataplane.Traffic, error)
	ResetRealTraffic(id uint32) error
}

func (s *Server) traffic() TrafficReader {
	t, _ := s.opts.Dataplane.(TrafficReader)
	return t
}

// destStatsLocked is d's counters now; s.mu is held.
func (s *Server) destStatsLocked(d *dest) conntrack.Stats {
	var tr dataplane.Traffic
	if t := s.traffic(); t != nil {
		tr, _ = t.RealTraffic(d.realID)
	}
	return destStats(d, tr)
}

func destStats(d *dest, tr dataplane.Traffic) conntrack.Stats {
	return conntrack.Stats{Conns: d.conns + tr.Conns, InPkts: tr.InPkts, InBytes: tr.InBytes, OutPkts: tr.OutPkts, OutBytes: tr.OutBytes}
}

// readTraffic reads the data plane's counters of every real. The map
// lookups are syscalls, so they run without s.mu (which every new flow
// waits for): the reals are listed under the lock, read outside it, and
// a real added meanwhile reads as zero until the next time.
func (s *Server) readTraffic() map[*dest]dataplane.Traffic {
	t := s.traffic()
	if t == nil {
		return nil
	}
	s.mu.Lock()
	ids := make(map[*dest]uint32, len(s.reals))
	for _, sv := range s.services {
		for _, d := range sv.dests {
			ids[d] = d.realID
		}
	}
	s.mu.Unlock()
	out := make(map[*dest]dataplane.Traffic, len(ids))
	for d, id := range ids {
		if tr, err := t.RealTraffic(id); err == nil {
			out[d] = tr
		}
	}
	return out
}

// serviceStatsLocked is sv's counters: its reals' and those of reals
// deleted from it (IPVS keeps a service's totals when a real goes).
func (s *Server) serviceStatsLocked(sv *service, per map[*dest]conntrack.Stats) conntrack.Stats {
	st := sv.retired
	for _, d := range sv.dests {
		st = st.Add(per[d])
	}
	return st
}

// retireDestLocked adds d's counters to its service's retired totals
// before d goes; s.mu is held.
func (s *Server) retireDestLocked(d *dest) {
	d.svc.retired = d.svc.retired.Add(s.destStatsLocked(d))
}

// startDestStats zeroes the counters of a real id being (re)used.
func (s *Server) startDestStats(d *dest) {
	d.xdpSeen, d.seqCounted = 0, 0
	if t := s.traffic(); t != nil {
		if err := t.ResetRealTraffic(d.realID); err != nil {
			s.log.Warn("reset real counters", "id", d.realID, "err", err)
		}
	}
}

// EstimateRates samples every service's and real's counters into the
// rate estimators; RunEstimator calls it every conntrack.EstimatorInterval.
func (s *Server) EstimateRates() {
	traffic := s.readTraffic()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sv := range s.services {
		per := make(map[*dest]conntrack.Stats, len(sv.dests))
		for _, d := range sv.dests {
			per[d] = destStats(d, traffic[d])
			d.est.Sample(per[d])
		}
		sv.est.Sample(s.serviceStatsLocked(sv, per))
	}
}

// RunEstimator samples rates every conntrack.EstimatorInterval until
// ctx ends.
func (s *Server) RunEstimator(ctx context.Context) {
	Every(ctx, conntrack.EstimatorInterval, s.EstimateRates)
}

// Zero zeroes the counters and rates of one service and its reals, or of
// every service when k is nil (ipvsadm -Z).
func (s *Server) Zero(k *config.ServiceKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var svcs []*service
	if k != nil {
		sv, ok := s.services[*k]
		if !ok {
			return ErrNoService
		}
		svcs = append(svcs, sv)
	} else {
		for _, sv := range s.services {
			svcs = append(svcs, sv)
		}
	}
	for _, sv := range svcs {
		sv.retired = conntrack.Stats{}
		for _, d := range sv.dests {
			d.conns = 0
			s.startDestStats(d)
			d.est.Reset(conntrack.Stats{})
		}
		sv.est.Reset(conntrack.Stats{})
	}
	if k != nil {
		s.log.Info("counters zeroed", "service", k.String())
	} else {
		s.log.Info("counters zeroed", "service", "all")
	}
	return nil
}
