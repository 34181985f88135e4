package api

import (
	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/internal/connsync"
)

// SyncDaemon is a running connection sync daemon (ipvsadm -L --daemon)
// with its counters.
type SyncDaemon struct {
	config.SyncDaemon
	Stats connsync.Stats `json:"stats"`
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
