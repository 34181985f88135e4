package e2e

import (
	"strings"
	"testing"
	"time"
)

// One client's connections stay on one real while its persistence
// template lives; once the template has expired (short timeout, no
// connections left), rr schedules the client afresh.
func TestPersistence(t *testing.T) {
	lab := newDRLab(t, "per")
	lab.serveHTTP(t)
	lab.serveUDP(t, 53)
	vs := lab.vip.String() + ":80"
	lab.adm(t, "-A", "-t", vs, "-s", "rr", "-p", "600")
	lab.adm(t, "-a", "-t", vs, "-r", "10.77.0.11", "-g")
	lab.adm(t, "-a", "-t", vs, "-r", "10.77.0.12", "-g")
	first := lab.httpGet(t)
	for i := 1; i < 20; i++ {
		if got := lab.httpGet(t); got != first {
			t.Fatalf("connection %d answered by %s, the first by %s: persistence broken", i, got, first)
		}
	}
	if list := lab.adm(t, "-Ln"); !strings.Contains(list, "TCP  10.77.0.100:80 rr persistent 600\n") {
		t.Errorf("-Ln:\n%s", list)
	}

	// Expiry, on UDP whose connections time out after --set's 2 s.
	lab.adm(t, "--set", "900", "120", "2")
	us := lab.vip.String() + ":53"
	lab.adm(t, "-A", "-u", us, "-s", "rr", "-p", "2")
	lab.adm(t, "-a", "-u", us, "-r", "10.77.0.11", "-g")
	lab.adm(t, "-a", "-u", us, "-r", "10.77.0.12", "-g")
	pinned := lab.udpAsk(t, 53)
	for i := 0; i < 4; i++ {
		if got := lab.udpAsk(t, 53); got != pinned {
			t.Fatalf("UDP flow %d answered by %s, the first by %s", i, got, pinned)
		}
	}
	// Connections expire after 2 s, then the template 2 s after its
	// last use; the sweeper runs every second.
	time.Sleep(7 * time.Second)
	next := lab.udpAsk(t, 53)
	if next == pinned {
		t.Fatalf("after the template expired the client went to %s again; rr should move on", next)
	}
	if again := lab.udpAsk(t, 53); again != next {
		t.Fatalf("new template not honoured: %s then %s", next, again)
	}
}

// The seeds' firewall-mark walk-through: ports 80 and 443 of one VIP as
// one rr service (so one rr sequence spans both ports), then persistent
// (so a client stays on one real across both ports).
func TestPortGroup(t *testing.T) {
	lab := newDRLab(t, "fwm")
	lab.serveHTTP(t, 80, 443)
	lab.adm(t, "--add-mark", "-f", "6666", "-t", lab.vip.String()+":80,443")
	lab.adm(t, "-A", "-f", "6666", "-s", "rr")
	lab.adm(t, "-a", "-f", "6666", "-r", "10.77.0.11", "-g")
	lab.adm(t, "-a", "-f", "6666", "-r", "10.77.0.12", "-g")
	var got []string
	for _, port := range []int{80, 443, 80, 443} {
		got = append(got, lab.httpGetPort(t, port))
	}
	// Two separate services would each start at rs2; one group
	// alternates across the ports.
	if want := []string{"rs2", "rs1", "rs2", "rs1"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("ports 80,443,80,443 answered by %v, want %v", got, want)
	}
	lab.adm(t, "-E", "-f", "6666", "-s", "rr", "-p", "3000")
	first := lab.httpGetPort(t, 443)
	for i, port := range []int{80, 443, 80, 443, 80} {
		if g := lab.httpGetPort(t, port); g != first {
			t.Fatalf("persistent group: request %d (port %d) answered by %s, first by %s", i, port, g, first)
		}
	}
	list := lab.adm(t, "-Ln")
	if !strings.Contains(list, "FWM  6666 rr persistent 3000\n") {
		t.Errorf("-Ln:\n%s", list)
	}
	if marks := lab.adm(t, "--get-mark"); marks != "--add-mark -f 6666 -t 10.77.0.100:80\n--add-mark -f 6666 -t 10.77.0.100:443\n" {
		t.Errorf("--get-mark:\n%s", marks)
	}
}
