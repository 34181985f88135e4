package server

// state_v1.go: the state file of xipvs 0.1 (version 1), read once by a
// newer xipvsd adopting a running 0.1 director, and converted.

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/xipvs/xipvs/config"
)

// serviceV1 is config.Service as 0.1 wrote it: Go field names, no tags.
type serviceV1 struct {
	Proto      config.Proto
	Addr       netip.Addr
	Port       uint16
	FWMark     uint32
	Scheduler  string
	Persistent bool
	Timeout    uint32
	Netmask    netip.Prefix
	SchedFlags []string
	OnePacket  bool
	Check      config.Check `json:"check"`
	OnFailure  string       `json:"on_failure"`
	Sorry      struct {
		Addr netip.AddrPort `json:"addr"`
		Fwd  uint8          `json:"fwd"`
	} `json:"sorry"`
}

// destV1 is config.Dest as 0.1 wrote it.
type destV1 struct {
	Addr       netip.Addr
	Port       uint16
	Fwd        uint8
	Weight     int
	UThreshold uint32
	LThreshold uint32
	Check      config.Check `json:"check"`
}

type stateV1 struct {
	Services []struct {
		ID     uint32    `json:"id"`
		Config serviceV1 `json:"config"`
		Dests  []struct {
			RealID uint32 `json:"real_id"`
			Config destV1 `json:"config"`
		} `json:"dests"`
		LocalAddrs []netip.Addr `json:"local_addrs"`
	} `json:"services"`
	Marks    []config.MarkRule  `json:"marks"`
	Timeouts map[string]float64 `json:"timeouts"`
}

// fwdV1 is 0.1's numbering of forwarding methods (Go iota order).
var fwdV1 = [...]config.Fwd{config.FwdRoute, config.FwdTunnel, config.FwdMasq, config.FwdFullNAT}

func fwdFromV1(n uint8) (config.Fwd, error) {
	if int(n) >= len(fwdV1) {
		return 0, fmt.Errorf("forwarding method %d unknown", n)
	}
	return fwdV1[n], nil
}

// readStateV1 reads a version 1 state file as the current State.
func readStateV1(b []byte) (State, error) {
	var v1 stateV1
	if err := json.Unmarshal(b, &v1); err != nil {
		return State{}, err
	}
	st := State{Version: stateVersion, Marks: v1.Marks, Timeouts: v1.Timeouts}
	for _, s := range v1.Services {
		c := s.Config
		svc := config.Service{ServiceKey: config.ServiceKey{Proto: c.Proto, Addr: c.Addr, Port: c.Port, FWMark: c.FWMark},
			Scheduler: c.Scheduler, Persistent: c.Persistent, Timeout: c.Timeout, Netmask: c.Netmask,
			SchedFlags: c.SchedFlags, OnePacket: c.OnePacket, Check: c.Check, OnFailure: c.OnFailure}
		if c.Sorry.Addr.IsValid() {
			fwd, err := fwdFromV1(c.Sorry.Fwd)
			if err != nil {
				return State{}, fmt.Errorf("service %s sorry server: %w", svc.ServiceKey, err)
			}
			svc.Sorry = config.SorryServer{Addr: c.Sorry.Addr, Fwd: fwd}
		}
		ss := ServiceState{ID: s.ID, Config: svc, LocalAddrs: s.LocalAddrs}
		for _, d := range s.Dests {
			fwd, err := fwdFromV1(d.Config.Fwd)
			if err != nil {
				return State{}, fmt.Errorf("service %s real %v: %w", svc.ServiceKey, d.Config.Addr, err)
			}
			dc := d.Config
			ss.Dests = append(ss.Dests, DestState{RealID: d.RealID, Config: config.Dest{Addr: dc.Addr, Port: dc.Port,
				Fwd: fwd, Weight: dc.Weight, UThreshold: dc.UThreshold, LThreshold: dc.LThreshold, Check: dc.Check}})
		}
		st.Services = append(st.Services, ss)
	}
	return st, nil
}
