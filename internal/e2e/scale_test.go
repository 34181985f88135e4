package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// bigRules is an ipvsadm rules file of n services (-A lines) on VIPs of
// 10.N.x.y, with a real on every hundredth.
func bigRules(n, net int) string {
	var b strings.Builder
	b.WriteString("-C\n")
	for i := 0; i < n; i++ {
		vs := fmt.Sprintf("10.%d.%d.%d:80", net, i>>8&0xff, i&0xff)
		if i >= 65536 {
			vs = fmt.Sprintf("10.%d.%d.%d:81", net, i>>8&0xff, i&0xff)
		}
		fmt.Fprintf(&b, "-A -t %s -s rr\n", vs)
		if i%100 == 0 {
			fmt.Fprintf(&b, "-a -t %s -r 10.77.0.11 -g\n", vs)
		}
	}
	return b.String()
}

// countServices counts the services -Sn lists (so the daemon holds) on
// 10.100/16 and on 10.101/16.
func countServices(t *testing.T, lab *drLab) (old, new int) {
	t.Helper()
	out := lab.adm(t, "-Sn")
	return strings.Count(out, "-A -t 10.100."), strings.Count(out, "-A -t 10.101.")
}

// TestRestoreAtScale: -R of 100,000 services (and 1,000 reals) completes
// in seconds (one state write, no search per line); a kill -9 in the
// middle of the next one restarts with the old or the new configuration,
// never a mix.
func TestRestoreAtScale(t *testing.T) {
	lab := newDRLab(t, "big", "--service-table-size", "262144")
	const n = 100_000
	first := bigRules(n, 100)
	start := time.Now()
	if _, errOut, code := lab.admExit(t, first, "-R"); code != 0 {
		t.Fatalf("-R of %d services: exit %d: %s", n, code, errOut)
	}
	took := time.Since(start)
	t.Logf("-R of %d services and %d reals (%d lines): %v", n, n/100, strings.Count(first, "\n"), took)
	if got, _ := countServices(t, lab); got != n {
		t.Fatalf("%d services after -R, want %d", got, n)
	}
	if c := strings.Count(lab.adm(t, "-Sn"), "-a -t "); c != n/100 {
		t.Fatalf("%d reals after -R, want %d", c, n/100)
	}

	// The next restore replaces every service; kill -9 half-way.
	second := bigRules(n, 101)
	cmd := exec.Command(xipvsadmBin, "-R")
	cmd.Env = append(cmd.Environ(), "XIPVS_SOCKET="+lab.Socket)
	cmd.Stdin = strings.NewReader(second)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(took / 2)
	lab.Daemon.Kill()
	_ = cmd.Wait()
	lab.start(t)
	old, nw := countServices(t, lab)
	switch {
	case old == n && nw == 0:
		t.Logf("killed mid-restore: restarted with the old configuration")
	case nw == n && old == 0:
		t.Logf("killed after the restore landed: restarted with the new configuration")
	default:
		t.Errorf("after kill -9 in the middle of -R: %d old and %d new services: neither the old nor the new configuration", old, nw)
	}
}
