package api

import "github.com/xipvs/xipvs/config"

// SyncDaemon is a running connection sync daemon (ipvsadm -L --daemon)
// with its counters.
type SyncDaemon struct {
	config.SyncDaemon
	Stats SyncStats `json:"stats"`
}

// SyncStats counts what a sync daemon did.
type SyncStats struct {
	Messages  uint64 `json:"messages"`  // sent (master) or received (backup)
	Conns     uint64 `json:"conns"`     // sent, or inserted
	Bytes     uint64 `json:"bytes"`     // UDP payload
	Malformed uint64 `json:"malformed"` // backup: messages dropped whole
	Skipped   uint64 `json:"skipped"`   // backup: records of another service or real...
	Errors    uint64 `json:"errors"`
}

// StopDaemonRequest names the daemon --stop-daemon stops.
type StopDaemonRequest struct {
	Role string `json:"role"`
}

// StartDaemon starts a connection sync daemon.
func (c *Client) StartDaemon(d config.SyncDaemon) error {
	return c.call("POST", "/v1/daemons/start", d, nil)
}

// StopDaemon stops the master or backup sync daemon.
func (c *Client) StopDaemon(role string) error {
	return c.call("POST", "/v1/daemons/stop", StopDaemonRequest{Role: role}, nil)
}

// Daemons lists the running sync daemons.
func (c *Client) Daemons() ([]SyncDaemon, error) {
	var out []SyncDaemon
	return out, c.call("GET", "/v1/daemons", nil, &out)
}
