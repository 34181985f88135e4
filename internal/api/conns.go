package api

// conns.go: the connection table, streamed. GET /v1/conns writes each
// connection as the director's walk of its tables reaches it, so that
// neither xipvsd nor the client ever holds the table: memory stays what
// one batch of the walk and the socket's buffers take, whatever the
// table holds. Two formats:
//   - format=text: one line per connection as ipvsadm -Lnc prints it
//     (AppendConnLine), what xipvsadm copies straight to its output;
//   - JSON (the default): an array of Conn, written element by element,
//     for scripts.
// A walk that fails part way ends the body early and says why in the
// X-Xipvs-Error trailer; the client reports it after what it printed.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/xipvs/xipvs/config"
)

// ConnHeader is ipvsadm -Lc's header.
const ConnHeader = "IPVS connection entries\npro expire state       source             virtual            destination\n"

// errTrailer carries a walk's failure after a streamed body.
const errTrailer = "X-Xipvs-Error"

// pad appends s left-aligned in a field of width w and a space.
func pad(b []byte, s string, w int) []byte {
	b = append(b, s...)
	for i := len(s); i < w; i++ {
		b = append(b, ' ')
	}
	return append(b, ' ')
}

func twoDigits(b []byte, n int) []byte {
	if n < 10 {
		b = append(b, '0')
	}
	return strconv.AppendInt(b, int64(n), 10)
}

// AppendConnLine appends c as ipvsadm -Lnc prints it ("%-3s %02d:%02d
// %-11s %-18s %-18s %s\n"), addresses numeric.
func AppendConnLine(b []byte, c Conn) []byte {
	b = pad(b, c.Proto.String(), 3)
	e := max(c.ExpireSeconds, 0)
	b = twoDigits(b, e/60)
	b = append(b, ':')
	b = twoDigits(b, e%60)
	b = append(b, ' ')
	b = pad(b, c.State, 11)
	b = pad(b, c.Client.String(), 18)
	b = pad(b, c.Virtual.String(), 18)
	b = append(b, c.Real.String()...)
	return append(b, '\n')
}

// ParseConnLine reads a line AppendConnLine wrote (without its newline).
func ParseConnLine(line string) (Conn, error) {
	f := strings.Fields(line)
	if len(f) != 6 {
		return Conn{}, fmt.Errorf("connection line %q: %d fields", line, len(f))
	}
	var c Conn
	switch f[0] {
	case "TCP":
		c.Proto = config.TCP
	case "UDP":
		c.Proto = config.UDP
	default:
		return Conn{}, fmt.Errorf("connection line %q: protocol %q", line, f[0])
	}
	mm, ss, ok := strings.Cut(f[1], ":")
	m, err1 := strconv.Atoi(mm)
	s, err2 := strconv.Atoi(ss)
	if !ok || err1 != nil || err2 != nil {
		return Conn{}, fmt.Errorf("connection line %q: expire %q", line, f[1])
	}
	c.ExpireSeconds, c.State = m*60+s, f[2]
	for i, p := range []*netip.AddrPort{&c.Client, &c.Virtual, &c.Real} {
		ap, err := netip.ParseAddrPort(f[3+i])
		if err != nil {
			return Conn{}, fmt.Errorf("connection line %q: %w", line, err)
		}
		*p = ap
	}
	return c, nil
}

// serveConns streams the connection table (see the file's comment).
func serveConns(w http.ResponseWriter, r *http.Request, b Backend) {
	text := r.URL.Query().Get("format") == "text"
	w.Header().Set("Trailer", errTrailer)
	if text {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	} else {
		w.Header().Set("Content-Type", "application/json")
	}
	rc := http.NewResponseController(w)
	bw := bufio.NewWriterSize(w, 64<<10)
	var line []byte
	n := 0
	var werr error
	if !text {
		_, werr = bw.WriteString("[")
	}
	err := b.WalkConns(func(c Conn) bool {
		line = line[:0]
		if text {
			line = AppendConnLine(line, c)
		} else {
			if n > 0 {
				line = append(line, ",\n"...)
			}
			j, _ := json.Marshal(c)
			line = append(line, j...)
		}
		if _, werr = bw.Write(line); werr != nil {
			return false // the client went away
		}
		if n++; n == 1 {
			// The first line at once, the rest as the buffer fills.
			werr = errors.Join(bw.Flush(), rc.Flush())
		}
		return werr == nil && r.Context().Err() == nil
	})
	if !text && werr == nil {
		_, werr = bw.WriteString("]\n")
	}
	if werr == nil {
		werr = bw.Flush()
	}
	if err != nil {
		w.Header().Set(errTrailer, err.Error())
	}
}

// StreamConns writes the connection table to w as ipvsadm -Lnc's lines
// (no header), as the director walks it.
func (c *Client) StreamConns(w io.Writer) error {
	return c.conns("text", func(body io.Reader) error {
		_, err := io.Copy(w, body)
		return err
	})
}

// StreamConnsJSON writes the connection table to w as a JSON array of
// Conn, as the director walks it.
func (c *Client) StreamConnsJSON(w io.Writer) error {
	return c.conns("json", func(body io.Reader) error {
		_, err := io.Copy(w, body)
		return err
	})
}

// WalkConns calls fn for every connection, as the director walks its
// table; an error from fn stops the walk and is returned.
func (c *Client) WalkConns(fn func(Conn) error) error {
	return c.conns("text", func(body io.Reader) error {
		sc := bufio.NewScanner(body)
		for sc.Scan() {
			conn, err := ParseConnLine(sc.Text())
			if err != nil {
				return err
			}
			if err := fn(conn); err != nil {
				return err
			}
		}
		return sc.Err()
	})
}

// conns runs GET /v1/conns in format and hands the body to read; no
// deadline covers the body, which is as long as the table.
func (c *Client) conns(format string, read func(io.Reader) error) error {
	req, err := http.NewRequest("GET", "http://xipvsd/v1/conns?format="+format, nil)
	if err != nil {
		return err
	}
	hc := *c.hc
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return noDaemon(c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Message == "" {
			e.Message = fmt.Sprintf("xipvsd: %s", resp.Status)
		}
		return e
	}
	if err := read(resp.Body); err != nil {
		return err
	}
	if msg := resp.Trailer.Get(errTrailer); msg != "" {
		return fmt.Errorf("the connection listing stopped early: %s", msg)
	}
	return nil
}
