package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Check is a health check of real servers (keepalived's checkers): a
// service's is every real's default, a real's own replaces it. The zero
// value is "no check" (inherit, on a real).
type Check struct {
	// Type is tcp (connect), http or https (GET Path, expect Status and,
	// if set, Body in the answer), udp (send Send, expect an answer that
	// contains Expect, or any answer), exec (run Exec with /bin/sh -c;
	// exit 0 is healthy; XIPVS_REAL_ADDR and XIPVS_REAL_PORT are set),
	// or none (on a real: do not check it even if its service does).
	Type string `json:"type,omitempty"`
	// Port to check; 0 is the real's port (the virtual port for -f).
	Port   uint16 `json:"port,omitempty"`
	Path   string `json:"path,omitempty"`
	Status int    `json:"status,omitempty"`
	// StatusCodes, when set, are the answers that pass instead of Status:
	// codes and ranges, "200,201,300-399" (keepalived's status_code
	// list).
	StatusCodes string `json:"status_codes,omitempty"`
	Body        string `json:"body,omitempty"`
	// Digest, for http and https, is the MD5 of the whole body in hex
	// (keepalived's HTTP_GET digest).
	Digest   string        `json:"digest,omitempty"`
	Send     string        `json:"send,omitempty"`
	Expect   string        `json:"expect,omitempty"`
	Exec     string        `json:"exec,omitempty"`
	Interval time.Duration `json:"interval,omitempty"`
	Timeout  time.Duration `json:"timeout,omitempty"`
	// Rise successes in a row bring a failed real back; Fall failures in
	// a row fail it.
	Rise int `json:"rise,omitempty"`
	Fall int `json:"fall,omitempty"`
	// StartDown: a new real is down until its first check passes
	// (keepalived's alpha); otherwise it takes flows at once.
	StartDown bool `json:"start_down,omitempty"`
}

// Check defaults.
const (
	DefaultCheckInterval = 2 * time.Second
	DefaultCheckTimeout  = time.Second
	DefaultRise          = 2
	DefaultFall          = 3
)

// Enabled reports whether c checks anything.
func (c Check) Enabled() bool { return c.Type != "" && c.Type != "none" }

// WithDefaults fills in what c leaves out.
func (c Check) WithDefaults() Check {
	if c.Interval == 0 {
		c.Interval = DefaultCheckInterval
	}
	if c.Timeout == 0 {
		c.Timeout = min(DefaultCheckTimeout, c.Interval)
	}
	if c.Rise == 0 {
		c.Rise = DefaultRise
	}
	if c.Fall == 0 {
		c.Fall = DefaultFall
	}
	if (c.Type == "http" || c.Type == "https") && c.Status == 0 && c.StatusCodes == "" {
		c.Status = 200
	}
	if (c.Type == "http" || c.Type == "https") && c.Path == "" {
		c.Path = "/"
	}
	return c
}

// Validate checks c.
func (c Check) Validate() error {
	switch c.Type {
	case "", "none", "tcp", "udp":
	case "http", "https":
		if c.Path != "" && !strings.HasPrefix(c.Path, "/") {
			return invalid("check path %q must start with /", c.Path)
		}
		if c.Status != 0 && (c.Status < 100 || c.Status > 599) {
			return invalid("check status %d is not an HTTP status", c.Status)
		}
		if c.StatusCodes != "" {
			if _, err := ParseStatusCodes(c.StatusCodes); err != nil {
				return err
			}
		}
	case "exec":
		if c.Digest != "" {
			return invalid("a body digest is for http and https checks")
		}
		if c.Exec == "" {
			return invalid("an exec check needs a command (--check-exec)")
		}
	default:
		return invalid("check type %q: want tcp, http, https, udp, exec or none", c.Type)
	}
	if c.Digest != "" && (len(c.Digest) != 32 || strings.Trim(strings.ToLower(c.Digest), "0123456789abcdef") != "") {
		return invalid("check digest %q: want an MD5 in hex (32 digits)", c.Digest)
	}
	if c.Type != "exec" && c.Exec != "" {
		return invalid("--check-exec needs --check exec")
	}
	if c.Interval < 0 || c.Timeout < 0 || c.Rise < 0 || c.Fall < 0 {
		return invalid("check interval, timeout, rise and fall must not be negative")
	}
	if c.Interval != 0 && c.Interval < 100*time.Millisecond {
		return invalid("check interval %v: at least 100ms", c.Interval)
	}
	if c.Timeout != 0 && c.Interval != 0 && c.Timeout > c.Interval {
		return invalid("check timeout %v longer than its interval %v", c.Timeout, c.Interval)
	}
	return nil
}

// Args renders c as the xipvsadm options that set it ("" if unset).
func (c Check) Args() string {
	if c.Type == "" {
		return ""
	}
	var b strings.Builder
	b.WriteString(" --check " + c.Type)
	if c.Port != 0 {
		fmt.Fprintf(&b, " --check-port %d", c.Port)
	}
	for _, o := range []struct{ name, v string }{{"check-path", c.Path}, {"check-body", c.Body}, {"check-digest", c.Digest},
		{"check-send", c.Send}, {"check-expect", c.Expect}, {"check-exec", c.Exec}} {
		if o.v != "" {
			fmt.Fprintf(&b, " --%s %s", o.name, quoteWord(o.v))
		}
	}
	if c.StatusCodes != "" {
		fmt.Fprintf(&b, " --check-status %s", c.StatusCodes)
	} else if c.Status != 0 {
		fmt.Fprintf(&b, " --check-status %d", c.Status)
	}
	if c.Interval != 0 {
		fmt.Fprintf(&b, " --check-interval %s", seconds(c.Interval))
	}
	if c.Timeout != 0 {
		fmt.Fprintf(&b, " --check-timeout %s", seconds(c.Timeout))
	}
	if c.Rise != 0 {
		fmt.Fprintf(&b, " --rise %d", c.Rise)
	}
	if c.Fall != 0 {
		fmt.Fprintf(&b, " --fall %d", c.Fall)
	}
	if c.StartDown {
		b.WriteString(" --check-start-down")
	}
	return b.String()
}

func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }

// quoteWord quotes s for a rules file when it has blanks or quotes.
func quoteWord(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t'\"") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

// parseSeconds reads a duration in seconds ("2", "0.5") or Go's form
// ("500ms").
func parseSeconds(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 && f < 86400 {
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("bad duration %q", s)
	}
	return d, nil
}

// OnFailure values: what a failing real's service does with it.
const (
	OnFailureQuiesce = "quiesce" // weight 0: no new flows, established ones go on (the default)
	OnFailureRemove  = "remove"  // out of scheduling, and its persistence templates dropped
)

// SorryServer is where a service's new flows go while every real fails
// its check.
type SorryServer struct {
	Addr netip.AddrPort `json:"addr"`
	Fwd  Fwd            `json:"fwd"`
}

// IsSet reports whether a sorry server is configured.
func (s SorryServer) IsSet() bool { return s.Addr.IsValid() }

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct{ Lo, Hi int }

// ParseStatusCodes reads a status code list: codes and ranges separated
// by commas or spaces, "200,201,300-399".
func ParseStatusCodes(v string) ([]StatusRange, error) {
	var out []StatusRange
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		lo, hi, isRange := strings.Cut(f, "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 100 || b > 599 || a > b {
			return nil, invalid("check status %q: want HTTP codes and ranges, as 200,300-399", f)
		}
		out = append(out, StatusRange{a, b})
	}
	if len(out) == 0 {
		return nil, invalid("check status %q: no code", v)
	}
	return out, nil
}

// StatusOK reports whether an answer's status code passes c: one of
// StatusCodes when set, else Status.
func (c Check) StatusOK(code int) bool {
	if c.StatusCodes == "" {
		return code == c.Status
	}
	rs, err := ParseStatusCodes(c.StatusCodes)
	if err != nil {
		return false
	}
	for _, r := range rs {
		if code >= r.Lo && code <= r.Hi {
			return true
		}
	}
	return false
}

// WantStatus says what status c wants, for a failure's reason.
func (c Check) WantStatus() string {
	if c.StatusCodes != "" {
		return c.StatusCodes
	}
	return strconv.Itoa(c.Status)
}
