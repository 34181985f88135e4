// Package conntrack is the connection model: IPVS's TCP states, their
// timeouts, the expiry decision and the ActiveConn/InActConn tally. It is
// pure: the clock is passed in, the table is read by the caller.
package conntrack

import (
	"fmt"
	"time"
)

// State is an IPVS TCP connection state (include/uapi/linux/ip_vs.h
// numbering, shared with the data plane). UDP connections stay StateNone.
type State uint8

// The IPVS TCP states.
const (
	StateNone State = iota
	StateEstablished
	StateSynSent
	StateSynRecv
	StateFinWait
	StateTimeWait
	StateClose
	StateCloseWait
	StateLastAck
	StateListen
	StateSynAck
	numStates
)

var stateNames = [numStates]string{
	"NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT",
	"CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK",
}

// String is the name ipvsadm -Lc prints.
func (s State) String() string {
	if s < numStates {
		return stateNames[s]
	}
	return fmt.Sprintf("STATE(%d)", uint8(s))
}

// Timeouts holds the idle timeout of every TCP state and of UDP.
type Timeouts struct {
	TCP [numStates]time.Duration
	UDP time.Duration
}

// DefaultTimeouts are IPVS's (ip_vs_proto_tcp.c, ip_vs_proto_udp.c):
// `ipvsadm -L --timeout` shows 900 120 300.
func DefaultTimeouts() Timeouts {
	return Timeouts{
		TCP: [numStates]time.Duration{
			StateNone:        2 * time.Second,
			StateEstablished: 15 * time.Minute,
			StateSynSent:     2 * time.Minute,
			StateSynRecv:     1 * time.Minute,
			StateFinWait:     2 * time.Minute,
			StateTimeWait:    2 * time.Minute,
			StateClose:       10 * time.Second,
			StateCloseWait:   60 * time.Second,
			StateLastAck:     30 * time.Second,
			StateListen:      2 * time.Minute,
			StateSynAck:      2 * time.Minute,
		},
		UDP: 5 * time.Minute,
	}
}

// Proto numbers as in the IP header.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// Timeout is the idle timeout of a connection of proto in state s.
func (t *Timeouts) Timeout(proto uint8, s State) time.Duration {
	if proto == ProtoUDP {
		return t.UDP
	}
	if s < numStates {
		return t.TCP[s]
	}
	return t.TCP[StateClose]
}

// Remaining is how long a connection idle since lastSeen has left at now
// (both on the same monotonic clock); zero or less means expired.
func (t *Timeouts) Remaining(proto uint8, s State, lastSeen, now time.Duration) time.Duration {
	return t.Timeout(proto, s) - (now - lastSeen)
}

// Active reports whether IPVS counts a connection as active (ActiveConn):
// an established TCP connection. All others, UDP included, are inactive.
func Active(proto uint8, s State) bool {
	return proto == ProtoTCP && s == StateEstablished
}

// Counts is one destination's connection tally.
type Counts struct {
	Active, Inactive int
}

// Add counts one connection.
func (c *Counts) Add(proto uint8, s State) {
	if Active(proto, s) {
		c.Active++
	} else {
		c.Inactive++
	}
}
