package dataplane

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/cilium/ebpf/btf"

	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// The constants below come from the named enums of bpf/consts.h, through
// the Go types bpf2go generates from the object's BTF (-type): C and Go
// cannot drift apart.

// Forwarding methods (IPVS IP_VS_CONN_F_* numbering; FULLNAT as DPVS).
const (
	FwdMasq    = Fwd(bpfobj.DirectorFwdMethodFWD_MASQ)
	FwdTunnel  = Fwd(bpfobj.DirectorFwdMethodFWD_TUNNEL)
	FwdRoute   = Fwd(bpfobj.DirectorFwdMethodFWD_DROUTE)
	FwdFullNAT = Fwd(bpfobj.DirectorFwdMethodFWD_FULLNAT)
)

// Connection entry flags.
const (
	// ConnReply marks the reply entry of a NAT or FULLNAT connection,
	// keyed by the real server's reply tuple.
	ConnReply = ConnFlags(bpfobj.DirectorConnFlagCONN_F_REPLY)
	// ConnFullNAT marks both entries of a FULLNAT connection.
	ConnFullNAT = ConnFlags(bpfobj.DirectorConnFlagCONN_F_FULLNAT)
	// ConnPersist marks the forward entry of a persistent service's
	// connection: the sweep lists its template.
	ConnPersist = ConnFlags(bpfobj.DirectorConnFlagCONN_F_PERSIST)
	// ConnSPPending: a SYN-proxied connection whose handshake with the
	// real the slow path is completing; XDP hands its packets there.
	ConnSPPending = ConnFlags(bpfobj.DirectorConnFlagCONN_F_SP_PENDING)
	// ConnSynProxy: a SYN-proxied connection; XDP shifts its sequence
	// numbers, timestamps and window (the seqadjs map).
	ConnSynProxy = ConnFlags(bpfobj.DirectorConnFlagCONN_F_SYNPROXY)
	// ConnSynSeen: a SYN opened the TCP connection; only such a one is
	// promoted to the established table.
	ConnSynSeen = ConnFlags(bpfobj.DirectorConnFlagCONN_F_SYN_SEEN)
	// ConnCounted: an established connection counted in its real's
	// ActiveConn/InActConn by events (bpf/aging.h); ConnCountedActive:
	// as active.
	ConnCounted       = ConnFlags(bpfobj.DirectorConnFlagCONN_F_COUNTED)
	ConnCountedActive = ConnFlags(bpfobj.DirectorConnFlagCONN_F_COUNTED_ACTIVE)
)

const realFlagMACValid = uint8(bpfobj.DirectorRealFlagREAL_F_MAC_VALID)

// realFlagLocalOK: an lblc real that may keep its destination addresses.
const realFlagLocalOK = uint8(bpfobj.DirectorRealFlagREAL_F_LOCAL_OK)

// Indexes of the global counters (Counters).
const (
	StatPass           = int(bpfobj.DirectorStatIdxSTAT_PASS)
	StatFwd            = int(bpfobj.DirectorStatIdxSTAT_FORWARD)
	StatSlowPath       = int(bpfobj.DirectorStatIdxSTAT_SLOW_PATH)
	StatDropNoXSK      = int(bpfobj.DirectorStatIdxSTAT_DROP_NO_XSK)
	StatDropNoMAC      = int(bpfobj.DirectorStatIdxSTAT_DROP_NO_MAC)
	StatDropNoReal     = int(bpfobj.DirectorStatIdxSTAT_DROP_NO_REAL)
	StatPassMalformed  = int(bpfobj.DirectorStatIdxSTAT_PASS_MALFORMED)
	StatPassFragment   = int(bpfobj.DirectorStatIdxSTAT_PASS_FRAGMENT)
	StatReply          = int(bpfobj.DirectorStatIdxSTAT_REPLY)
	StatICMPFragNeeded = int(bpfobj.DirectorStatIdxSTAT_ICMP_FRAG_NEEDED)
	StatDropTooBig     = int(bpfobj.DirectorStatIdxSTAT_DROP_TOO_BIG)
	StatTOASkipped     = int(bpfobj.DirectorStatIdxSTAT_TOA_SKIPPED)
	StatDropAdjust     = int(bpfobj.DirectorStatIdxSTAT_DROP_ADJUST)
	StatEstFull        = int(bpfobj.DirectorStatIdxSTAT_EST_FULL)
	StatICMPForward    = int(bpfobj.DirectorStatIdxSTAT_ICMP_FORWARD)
	StatSPSynAck       = int(bpfobj.DirectorStatIdxSTAT_SP_SYNACK)
	StatSPDrop         = int(bpfobj.DirectorStatIdxSTAT_SP_DROP)
	StatShed           = int(bpfobj.DirectorStatIdxSTAT_SHED)
	StatNewSYN         = int(bpfobj.DirectorStatIdxSTAT_NEW_SYN)
	StatPassNoConn     = int(bpfobj.DirectorStatIdxSTAT_PASS_NO_CONN)
	StatSyncLost       = int(bpfobj.DirectorStatIdxSTAT_SYNC_LOST)
	StatAgeLost        = int(bpfobj.DirectorStatIdxSTAT_AGE_LOST)
	StatAged           = int(bpfobj.DirectorStatIdxSTAT_AGED)
	StatEmbNew         = int(bpfobj.DirectorStatIdxSTAT_EMB_NEW)
	// NumStats is how many global counters there are.
	NumStats = int(bpfobj.DirectorStatIdxSTAT_MAX)
)

// SvcFlags are a service key's data plane flags (bpf/consts.h svc_flag).
type SvcFlags uint32

const (
	// SvcSynProxy: the SYN proxy answers the service's SYNs (-j enable).
	SvcSynProxy = SvcFlags(bpfobj.DirectorSvcFlagSVC_F_SYNPROXY)
	// SvcSynProxyAuto: the SYN proxy answers them while the defence is
	// engaged (a TCP service of NAT and FULLNAT reals).
	SvcSynProxyAuto = SvcFlags(bpfobj.DirectorSvcFlagSVC_F_SYNPROXY_AUTO)
	// SvcTOARoom: FULLNAT reals; the proxy's SYN-ACK advertises an MSS
	// that leaves room for the TOA option.
	SvcTOARoom = SvcFlags(bpfobj.DirectorSvcFlagSVC_F_TOA_ROOM)
	// SvcPersist: a persistent service; its new flows follow the
	// templates (tmpl.go), its client netmask in SvcPersistMask.
	SvcPersist = SvcFlags(bpfobj.DirectorSvcFlagSVC_F_PERSIST)
	// SvcTmplPort0: its templates ignore the virtual port (-f, port 0,
	// FTP).
	SvcTmplPort0 = SvcFlags(bpfobj.DirectorSvcFlagSVC_F_TMPL_PORT0)
	// SvcLocal: an lblc service whose new flows follow their destination
	// address's entry, kept as a port-zero template of the service keyed
	// by that address (LocalEntry), to a real marked LocalOK.
	SvcLocal = SvcFlags(bpfobj.DirectorSvcFlagSVC_F_LOCAL)
	// SvcRoom: a service with a real under an upper threshold; each new
	// connection XDP binds takes room from its real (SetRoom), and a real
	// without room left sends the flow to Go.
	SvcRoom = SvcFlags(bpfobj.DirectorSvcFlagSVC_F_ROOM)
	// SvcLocalSet: an lblcr service, whose entry's real with no room left
	// is skipped (lblc binds it anyway).
	SvcLocalSet = SvcFlags(bpfobj.DirectorSvcFlagSVC_F_LOCAL_SET)
)

// LocalEntry is the key of an lblc service's entry for destination
// address dst in the template map.
func LocalEntry(serviceID uint32, dst netip.Addr) Template {
	return Template{ServiceID: serviceID, Client: dst}
}

// SvcPersistMask is the flags' field of a persistent service's client
// netmask, a prefix length (bpf/consts.h SVC_MASK_SHIFT).
func SvcPersistMask(bits int) SvcFlags { return SvcFlags(bits) << 24 }

// StatIsEvent reports whether counter i counts an event on a packet
// another counter already counts (toa_skipped, est_full, new_syn), so that a sum
// of the others is the packets the program saw.
func StatIsEvent(i int) bool {
	switch i {
	case StatTOASkipped, StatEstFull, StatNewSYN, StatSyncLost, StatAgeLost, StatAged, StatEmbNew:
		return true
	}
	return false
}

// StatNames names the global counters by index, as bpf/consts.h's enum
// stat_idx does without its STAT_ prefix, in lower case ("drop_no_xsk").
// The names are read from the object's BTF.
var StatNames = sync.OnceValue(func() []string {
	names, err := enumNames("stat_idx", "STAT_", NumStats)
	if err != nil {
		panic(err) // the embedded object is built with its BTF
	}
	return names
})

// enumNames returns the names of a C enum's values 0..n-1, trimmed of
// prefix and lower-cased.
func enumNames(enum, prefix string, n int) ([]string, error) {
	vals, err := enumValues(enum, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]string, n)
	for i := range out {
		if out[i] = vals[uint64(i)]; out[i] == "" {
			return nil, fmt.Errorf("enum %s: no name for %d", enum, i)
		}
	}
	return out, nil
}

// enumValues returns a C enum's names by value, trimmed of prefix and
// lower-cased, as the director object's BTF has them.
func enumValues(enum, prefix string) (map[uint64]string, error) {
	spec, err := bpfobj.LoadDirector()
	if err != nil {
		return nil, err
	}
	var e *btf.Enum
	if err := spec.Types.TypeByName(enum, &e); err != nil {
		return nil, fmt.Errorf("enum %s in the director's BTF: %w", enum, err)
	}
	out := map[uint64]string{}
	for _, v := range e.Values {
		out[v.Value] = strings.ToLower(strings.TrimPrefix(v.Name, prefix))
	}
	return out, nil
}
