package api

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xipvs/xipvs/config"
)

// TestConnLines: the header and a line are ipvsadm -Lnc's (its
// print_conn format, written with fmt here), and a line reads back.
func TestConnLines(t *testing.T) {
	if want := fmt.Sprintf("IPVS connection entries\npro expire %-11s %-18s %-18s %s\n", "state", "source", "virtual", "destination"); ConnHeader != want {
		t.Errorf("header %q, want %q", ConnHeader, want)
	}
	for _, c := range []Conn{
		{Proto: config.TCP, ExpireSeconds: 899, State: "ESTABLISHED", Client: netip.MustParseAddrPort("10.77.0.1:43210"),
			Virtual: netip.MustParseAddrPort("10.77.0.100:80"), Real: netip.MustParseAddrPort("10.77.0.11:80")},
		{Proto: config.UDP, ExpireSeconds: 5, State: "UDP", Client: netip.MustParseAddrPort("[2001:db8:77::1]:5353"),
			Virtual: netip.MustParseAddrPort("[2001:db8::100]:53"), Real: netip.MustParseAddrPort("[2001:db8::11]:53")},
	} {
		e := c.ExpireSeconds
		want := fmt.Sprintf("%-3s %02d:%02d %-11s %-18s %-18s %s\n", c.Proto.String(), e/60, e%60, c.State, c.Client, c.Virtual, c.Real)
		line := string(AppendConnLine(nil, c))
		if line != want {
			t.Errorf("line %q, want %q", line, want)
		}
		back, err := ParseConnLine(line[:len(line)-1])
		if err != nil || back != c {
			t.Errorf("read back %+v (%v), want %+v", back, err, c)
		}
	}
}

// TestNoDaemonSaysWhy: a client whose socket is not there, or that
// nothing listens on, says so and what to do, not Go's HTTP error.
func TestNoDaemonSaysWhy(t *testing.T) {
	dir := t.TempDir()
	_, err := NewClient(filepath.Join(dir, "none.sock")).Services()
	if !errors.Is(err, ErrNoDaemon) || !strings.Contains(err.Error(), "is xipvsd running?") || strings.Contains(err.Error(), "http://") {
		t.Errorf("no socket: %v", err)
	}
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	err = NewClient(stale).StreamConns(io.Discard)
	if !errors.Is(err, ErrNoDaemon) || !strings.Contains(err.Error(), "xipvsd is not running") {
		t.Errorf("stale socket: %v", err)
	}
}
