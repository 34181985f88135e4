package dataplane

import "fmt"

// Counters returns the data plane's global counters summed over CPUs.
func (d *Dataplane) Counters() ([NumStats]uint64, error) {
	var out [NumStats]uint64
	for i := range out {
		var per []uint64
		if err := d.objs.Stats.Lookup(uint32(i), &per); err != nil {
			return out, fmt.Errorf("read counter %s: %w", StatNames()[i], err)
		}
		for _, v := range per {
			out[i] += v
		}
		out[i] += d.slowStats[i].Load()
	}
	return out, nil
}

// Verdict is an XDP action.
type Verdict uint32

// XDP actions.
const (
	XDPAborted  Verdict = 0
	XDPDrop     Verdict = 1
	XDPPass     Verdict = 2
	XDPTx       Verdict = 3
	XDPRedirect Verdict = 4
)

func (v Verdict) String() string {
	switch v {
	case XDPAborted:
		return "XDP_ABORTED"
	case XDPDrop:
		return "XDP_DROP"
	case XDPPass:
		return "XDP_PASS"
	case XDPTx:
		return "XDP_TX"
	case XDPRedirect:
		return "XDP_REDIRECT"
	}
	return fmt.Sprintf("XDP(%d)", uint32(v))
}
