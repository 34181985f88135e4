// Package api is xipvsd's control API: HTTP+JSON, versioned under /v1/,
// served on a root-only Unix socket. It holds the wire types, the HTTP
// handler (one-line adapters over a Backend) and a typed client.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/conntrack"
)

// SocketPath returns flagValue if set, else $XIPVS_SOCKET, else the
// default for this network namespace (Defaults).
func SocketPath(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if v := os.Getenv("XIPVS_SOCKET"); v != "" {
		return v
	}
	socket, _, _ := Defaults()
	return socket
}

// DestRequest names a destination of a service.
type DestRequest struct {
	Service config.ServiceKey `json:"service"`
	Dest    config.Dest       `json:"dest"`
}

// Dest is a destination with its counts, counters and rates.
type Dest struct {
	config.Dest
	ActiveConns int `json:"active_conns"`
	InactConns  int `json:"inact_conns"`
	// PersistConns counts persistence templates naming the real.
	PersistConns int             `json:"persist_conns"`
	Stats        conntrack.Stats `json:"stats"`
	Rates        conntrack.Rates `json:"rates"`
	Health       Health          `json:"health"`
	// Serving is the weight the scheduler sees (ServingWeight), for
	// scripts and the status page.
	Serving int `json:"serving_weight"`
}

// Failing reports whether the real fails its health check.
func (d Dest) Failing() bool { return d.Health.Checked && !d.Health.Up }

// ServingWeight is the weight the scheduler sees, as -Ln shows it: 0
// while the real fails its check (quiesced, as keepalived's
// inhibit_on_failure shows it), else the configured one.
func (d Dest) ServingWeight() int {
	if d.Failing() {
		return 0
	}
	return d.Weight
}

// Health is a real's health-check state.
type Health struct {
	Checked bool      `json:"checked"`
	Up      bool      `json:"up"`
	Reason  string    `json:"reason,omitempty"`
	Since   time.Time `json:"since,omitzero"`
}

// Service is a virtual service with its destinations, counters and rates.
type Service struct {
	config.Service
	Dests []Dest          `json:"dests"`
	Stats conntrack.Stats `json:"stats"`
	Rates conntrack.Rates `json:"rates"`
	// SorryActive is set while the sorry server takes the new flows.
	SorryActive bool `json:"sorry_active"`
}

// ZeroRequest zeroes one service's counters, or all with no Service.
type ZeroRequest struct {
	Service *config.ServiceKey `json:"service,omitempty"`
}

// Timeouts are ipvsadm's three user-visible timeouts, in seconds.
type Timeouts struct {
	TCP    int `json:"tcp"`
	TCPFin int `json:"tcpfin"`
	UDP    int `json:"udp"`
}

// Info describes the running daemon.
type Info struct {
	Version       string            `json:"version"`
	ConnTableSize int               `json:"conn_table_size"`
	Interfaces    []string          `json:"interfaces"`
	Counters      map[string]uint64 `json:"counters"`
}

// Error is an API error: Message is what ipvsadm would print.
type Error struct {
	Message string `json:"error"`
	// Status is the HTTP status the daemon answered with.
	Status int `json:"-"`
}

func (e *Error) Error() string { return e.Message }

// Backend is what the handler serves.
type Backend interface {
	AddService(config.Service) error
	EditService(config.Service) error
	DeleteService(config.ServiceKey) error
	Clear() error
	AddDest(config.ServiceKey, config.Dest) error
	EditDest(config.ServiceKey, config.Dest) error
	DeleteDest(config.ServiceKey, netip.Addr, uint16) error
	ListServices() []Service
	SetTimeouts(Timeouts) error
	GetTimeouts() Timeouts
	Info() Info
	// WalkConns calls fn for every connection as the table's walk
	// reaches it, until fn returns false.
	WalkConns(fn func(Conn) bool) error
	AddMarks([]config.MarkRule) error
	DeleteMarks(MarkRequest) error
	Marks() []config.MarkRule
	AddLocalAddr(LaddrRequest) error
	DeleteLocalAddr(LaddrRequest) error
	LocalAddrs() []ServiceLaddrs
	Zero(*config.ServiceKey) error
	// Restore applies rules-file lines (ipvsadm -R) all or nothing; it
	// is abandoned, and undone, when ctx ends (the client went away).
	Restore(ctx context.Context, lines []config.Line) error
	// Reload re-reads xipvsd's configuration file and applies the
	// difference, all or nothing.
	Reload(ctx context.Context) error
	// Config is the running configuration.
	Config() *config.Config
	// BGP is the BGP speaker's state.
	BGP(ctx context.Context) BGPStatus
	// StartDaemon, StopDaemon and Daemons run the connection sync
	// daemons (ipvsadm --start-daemon, --stop-daemon, -L --daemon).
	StartDaemon(config.SyncDaemon) error
	StopDaemon(role string) error
	Daemons() []SyncDaemon
}

// LaddrRequest names a FULLNAT local address of a service.
type LaddrRequest struct {
	Service config.ServiceKey `json:"service"`
	Addr    netip.Addr        `json:"addr"`
}

// ServiceLaddrs are a service's local addresses.
type ServiceLaddrs struct {
	Service config.ServiceKey `json:"service"`
	Laddrs  []Laddr           `json:"laddrs"`
}

// Laddr is a local address and how many of its local ports are in use
// (by every service sharing it).
type Laddr struct {
	Addr  netip.Addr `json:"addr"`
	Conns int        `json:"conns"`
}

// Conn is a connection-table entry (ipvsadm -c).
type Conn struct {
	Proto         config.Proto   `json:"proto"`
	ExpireSeconds int            `json:"expire_seconds"`
	State         string         `json:"state"`
	Client        netip.AddrPort `json:"client"`
	Virtual       netip.AddrPort `json:"virtual"`
	Real          netip.AddrPort `json:"real"`
}

// MarkRequest deletes port-group rules: Rules, or every rule of Mark when
// Rules is empty.
type MarkRequest struct {
	Mark  uint32            `json:"mark"`
	Rules []config.MarkRule `json:"rules"`
}

// StatusOf maps a backend error to an HTTP status.
type StatusOf func(error) int

// Handler returns the HTTP handler of the API.
func Handler(b Backend, status StatusOf) http.Handler {
	mux := http.NewServeMux()
	do := func(pattern string, fn func(r *http.Request) (any, error)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			out, err := fn(r)
			w.Header().Set("Content-Type", "application/json")
			if err != nil {
				code := status(err)
				w.WriteHeader(code)
				_ = json.NewEncoder(w).Encode(&Error{Message: err.Error()})
				return
			}
			if out == nil {
				out = struct{}{}
			}
			_ = json.NewEncoder(w).Encode(out)
		})
	}
	do("POST /v1/services/add", func(r *http.Request) (any, error) {
		var s config.Service
		return nil, decode(r, &s, func() error { return b.AddService(s) })
	})
	do("POST /v1/services/edit", func(r *http.Request) (any, error) {
		var s config.Service
		return nil, decode(r, &s, func() error { return b.EditService(s) })
	})
	do("POST /v1/services/delete", func(r *http.Request) (any, error) {
		var k config.ServiceKey
		return nil, decode(r, &k, func() error { return b.DeleteService(k) })
	})
	do("POST /v1/clear", func(*http.Request) (any, error) { return nil, b.Clear() })
	do("POST /v1/dests/add", func(r *http.Request) (any, error) {
		var d DestRequest
		return nil, decode(r, &d, func() error { return b.AddDest(d.Service, d.Dest) })
	})
	do("POST /v1/dests/edit", func(r *http.Request) (any, error) {
		var d DestRequest
		return nil, decode(r, &d, func() error { return b.EditDest(d.Service, d.Dest) })
	})
	do("POST /v1/dests/delete", func(r *http.Request) (any, error) {
		var d DestRequest
		return nil, decode(r, &d, func() error { return b.DeleteDest(d.Service, d.Dest.Addr, d.Dest.Port) })
	})
	do("GET /v1/services", func(*http.Request) (any, error) { return b.ListServices(), nil })
	do("GET /v1/timeouts", func(*http.Request) (any, error) { return b.GetTimeouts(), nil })
	do("POST /v1/timeouts", func(r *http.Request) (any, error) {
		var t Timeouts
		return nil, decode(r, &t, func() error { return b.SetTimeouts(t) })
	})
	do("GET /v1/info", func(*http.Request) (any, error) { return b.Info(), nil })
	do("POST /v1/marks/add", func(r *http.Request) (any, error) {
		var rules []config.MarkRule
		return nil, decode(r, &rules, func() error { return b.AddMarks(rules) })
	})
	do("POST /v1/marks/delete", func(r *http.Request) (any, error) {
		var m MarkRequest
		return nil, decode(r, &m, func() error { return b.DeleteMarks(m) })
	})
	mux.HandleFunc("GET /v1/conns", func(w http.ResponseWriter, r *http.Request) { serveConns(w, r, b) })
	do("GET /v1/marks", func(*http.Request) (any, error) { return b.Marks(), nil })
	do("POST /v1/laddrs/add", func(r *http.Request) (any, error) {
		var l LaddrRequest
		return nil, decode(r, &l, func() error { return b.AddLocalAddr(l) })
	})
	do("POST /v1/laddrs/delete", func(r *http.Request) (any, error) {
		var l LaddrRequest
		return nil, decode(r, &l, func() error { return b.DeleteLocalAddr(l) })
	})
	do("POST /v1/zero", func(r *http.Request) (any, error) {
		var z ZeroRequest
		return nil, decode(r, &z, func() error { return b.Zero(z.Service) })
	})
	do("POST /v1/restore", func(r *http.Request) (any, error) {
		lines, err := decodeLines(r)
		if err != nil {
			return nil, err
		}
		return nil, b.Restore(r.Context(), lines)
	})
	do("POST /v1/reload", func(r *http.Request) (any, error) { return nil, b.Reload(r.Context()) })
	do("GET /v1/config", func(*http.Request) (any, error) { return b.Config(), nil })
	do("GET /v1/laddrs", func(*http.Request) (any, error) { return b.LocalAddrs(), nil })
	do("GET /v1/bgp", func(r *http.Request) (any, error) { return b.BGP(r.Context()), nil })
	do("POST /v1/daemons/start", func(r *http.Request) (any, error) {
		var d config.SyncDaemon
		return nil, decode(r, &d, func() error { return b.StartDaemon(d) })
	})
	do("POST /v1/daemons/stop", func(r *http.Request) (any, error) {
		var d StopDaemonRequest
		return nil, decode(r, &d, func() error { return b.StopDaemon(d.Role) })
	})
	do("GET /v1/daemons", func(*http.Request) (any, error) { return b.Daemons(), nil })
	return mux
}

// Request bounds, checked while the body is read, before it is decoded
// further: what a command, and a rules file (-R), may be. A million
// rules-file lines of ipvsadm's length fit; no request can make xipvsd
// hold more than a small multiple of MaxRestoreBytes.
const (
	MaxRequestBytes = 1 << 20
	MaxRestoreBytes = 64 << 20
	MaxRestoreLines = 1 << 20
	maxLineArgs     = 256
	maxArgBytes     = 4096
)

func tooLarge(limit int) error {
	return &Error{Message: fmt.Sprintf("request too large: xipvsd takes at most %d MiB", limit>>20), Status: http.StatusRequestEntityTooLarge}
}

func badRequest(err error) error {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return tooLarge(int(tooBig.Limit))
	}
	return &Error{Message: fmt.Sprintf("bad request: %v", err), Status: http.StatusBadRequest}
}

func decode(r *http.Request, v any, then func() error) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, MaxRequestBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest(err)
	}
	return then()
}

// decodeLines reads a rules file's lines one at a time (the body is
// never held whole), refusing a body, a line count, a line or an
// argument over its bound as soon as it is seen.
func decodeLines(r *http.Request) ([]config.Line, error) {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, MaxRestoreBytes))
	dec.DisallowUnknownFields()
	if t, err := dec.Token(); err != nil {
		return nil, badRequest(err)
	} else if t != json.Delim('[') {
		return nil, badRequest(errors.New("want an array of lines"))
	}
	var lines []config.Line
	for dec.More() {
		if len(lines) == MaxRestoreLines {
			return nil, &Error{Message: fmt.Sprintf("request too large: at most %d lines", MaxRestoreLines), Status: http.StatusRequestEntityTooLarge}
		}
		var l config.Line
		if err := dec.Decode(&l); err != nil {
			return nil, badRequest(err)
		}
		if len(l.Args) > maxLineArgs {
			return nil, badRequest(fmt.Errorf("line %d: %d words, at most %d", l.N, len(l.Args), maxLineArgs))
		}
		for _, a := range l.Args {
			if len(a) > maxArgBytes {
				return nil, badRequest(fmt.Errorf("line %d: a word of %d bytes, at most %d", l.N, len(a), maxArgBytes))
			}
		}
		lines = append(lines, l)
	}
	if _, err := dec.Token(); err != nil {
		return nil, badRequest(err)
	}
	return lines, nil
}

// Client talks to xipvsd over its Unix socket.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the daemon at socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	return &Client{socket: socket, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// ErrNoDaemon is returned when nothing listens on the socket.
var ErrNoDaemon = errors.New("cannot reach xipvsd")

// noDaemon says why the socket did not answer, and what to do.
func noDaemon(socket string, err error) error {
	why := err.Error()
	switch {
	case errors.Is(err, syscall.ENOENT):
		why = "no such socket: is xipvsd running? (systemctl status xipvsd; --socket or XIPVS_SOCKET name another)"
	case errors.Is(err, syscall.ECONNREFUSED):
		why = "nothing listens on it: xipvsd is not running (the socket is left from an earlier one)"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		why = "permission denied: run xipvsadm as root"
	}
	return fmt.Errorf("%w at %s: %s", ErrNoDaemon, socket, why)
}

func (c *Client) call(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://xipvsd"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return noDaemon(c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Message == "" {
			e.Message = fmt.Sprintf("xipvsd: %s", resp.Status)
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode response: %w", err)
		}
	}
	return nil
}

// AddService adds a virtual service.
func (c *Client) AddService(s config.Service) error {
	return c.call("POST", "/v1/services/add", s, nil)
}

// EditService changes a virtual service.
func (c *Client) EditService(s config.Service) error {
	return c.call("POST", "/v1/services/edit", s, nil)
}

// DeleteService removes a virtual service.
func (c *Client) DeleteService(k config.ServiceKey) error {
	return c.call("POST", "/v1/services/delete", k, nil)
}

// Clear removes every virtual service.
func (c *Client) Clear() error { return c.call("POST", "/v1/clear", nil, nil) }

// AddDest adds a real server.
func (c *Client) AddDest(k config.ServiceKey, d config.Dest) error {
	return c.call("POST", "/v1/dests/add", DestRequest{k, d}, nil)
}

// EditDest changes a real server.
func (c *Client) EditDest(k config.ServiceKey, d config.Dest) error {
	return c.call("POST", "/v1/dests/edit", DestRequest{k, d}, nil)
}

// DeleteDest removes a real server.
func (c *Client) DeleteDest(k config.ServiceKey, d config.Dest) error {
	return c.call("POST", "/v1/dests/delete", DestRequest{k, d}, nil)
}

// Services lists the virtual services.
func (c *Client) Services() ([]Service, error) {
	var out []Service
	return out, c.call("GET", "/v1/services", nil, &out)
}

// Timeouts returns the tcp, tcpfin and udp timeouts.
func (c *Client) Timeouts() (Timeouts, error) {
	var t Timeouts
	return t, c.call("GET", "/v1/timeouts", nil, &t)
}

// SetTimeouts sets timeouts; zero fields are left unchanged.
func (c *Client) SetTimeouts(t Timeouts) error {
	return c.call("POST", "/v1/timeouts", t, nil)
}

// Info describes the daemon.
func (c *Client) Info() (Info, error) {
	var i Info
	return i, c.call("GET", "/v1/info", nil, &i)
}

// AddMarks binds ports to firewall marks (port groups for -f services).
func (c *Client) AddMarks(rules []config.MarkRule) error {
	return c.call("POST", "/v1/marks/add", rules, nil)
}

// DeleteMarks removes port-group rules; with no rules, every rule of mark.
func (c *Client) DeleteMarks(mark uint32, rules []config.MarkRule) error {
	return c.call("POST", "/v1/marks/delete", MarkRequest{Mark: mark, Rules: rules}, nil)
}

// Marks lists the port-group rules.
func (c *Client) Marks() ([]config.MarkRule, error) {
	var out []config.MarkRule
	return out, c.call("GET", "/v1/marks", nil, &out)
}

// AddLocalAddr adds a FULLNAT local address to a service.
func (c *Client) AddLocalAddr(k config.ServiceKey, a netip.Addr) error {
	return c.call("POST", "/v1/laddrs/add", LaddrRequest{Service: k, Addr: a}, nil)
}

// DeleteLocalAddr removes a FULLNAT local address from a service.
func (c *Client) DeleteLocalAddr(k config.ServiceKey, a netip.Addr) error {
	return c.call("POST", "/v1/laddrs/delete", LaddrRequest{Service: k, Addr: a}, nil)
}

// LocalAddrs lists every service's local addresses.
func (c *Client) LocalAddrs() ([]ServiceLaddrs, error) {
	var out []ServiceLaddrs
	return out, c.call("GET", "/v1/laddrs", nil, &out)
}

// Zero zeroes the counters of service k, or of every service if k is nil.
func (c *Client) Zero(k *config.ServiceKey) error {
	return c.call("POST", "/v1/zero", ZeroRequest{Service: k}, nil)
}

// Restore applies rules-file lines (ipvsadm -R): all of them, or, if one
// fails, none; the error names the line.
func (c *Client) Restore(lines []config.Line) error {
	return c.call("POST", "/v1/restore", lines, nil)
}

// Reload makes xipvsd re-read its configuration file (as SIGHUP does).
func (c *Client) Reload() error { return c.call("POST", "/v1/reload", nil, nil) }

// Config returns the running configuration.
func (c *Client) Config() (*config.Config, error) {
	var out config.Config
	return &out, c.call("GET", "/v1/config", nil, &out)
}
