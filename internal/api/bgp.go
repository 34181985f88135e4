package api

import (
	"net/netip"
	"time"
)

// BGPStatus is the BGP speaker's state (xipvsadm -L --bgp, /v1/bgp).
type BGPStatus struct {
	// Enabled is false when xipvsd runs without BGP.
	Enabled    bool       `json:"enabled"`
	ASN        uint32     `json:"asn,omitempty"`
	RouterID   netip.Addr `json:"router_id,omitzero"`
	ListenPort uint16     `json:"listen_port,omitempty"`
	// Draining is set once xipvsd withdrew its routes to stop.
	Draining bool       `json:"draining,omitempty"`
	Peers    []BGPPeer  `json:"peers"`
	Routes   []BGPRoute `json:"routes"`
}

// BGPPeer is a BGP session.
type BGPPeer struct {
	Addr  netip.Addr `json:"addr"`
	ASN   uint32     `json:"asn"`
	State string     `json:"state"` // idle, connect, active, opensent, openconfirm, established
	// Since is when the session last came up or went down.
	Since time.Time `json:"since,omitzero"`
	// HoldTime is the negotiated hold time (the configured one before
	// the session is up).
	HoldTime time.Duration `json:"hold_time"`
	// BFD is the BFD session's state ("" without BFD).
	BFD string `json:"bfd,omitempty"`
	// Advertised counts the prefixes sent to the peer.
	Advertised uint64 `json:"advertised"`
	// LastError is why the session last went down.
	LastError string `json:"last_error,omitempty"`
}

// BGPRoute is a prefix xipvsd announces, or would announce were its VIP
// healthy.
type BGPRoute struct {
	Prefix    netip.Prefix `json:"prefix"`
	Announced bool         `json:"announced"`
	// Why says why it is (or is not) announced.
	Why   string    `json:"why"`
	Since time.Time `json:"since,omitzero"`
}

// BGP returns the BGP speaker's state.
func (c *Client) BGP() (BGPStatus, error) {
	var out BGPStatus
	return out, c.call("GET", "/v1/bgp", nil, &out)
}
