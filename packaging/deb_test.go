// Package packaging holds xipvs's packaging (the systemd unit, nfpm's
// configuration, the maintainer scripts) and its test.
package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xipvs/xipvs/internal/testutil"
)

// TestDeb builds the .deb with make deb, installs it with dpkg into a
// scratch root, checks its files (the binaries run, man pages, bash
// completion, the unit, configuration files kept as conffiles), verifies
// the unit with systemd-analyze where available, and removes it.
func TestDeb(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, tool := range []string{"dpkg", "dpkg-deb", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not available", tool)
		}
	}
	root, err := testutil.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	build := exec.Command("make", "deb")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(root, "build", "xipvs_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v", debs)
	}
	deb := debs[0]

	r := t.TempDir()
	admin := filepath.Join(r, "var/lib/dpkg")
	for _, d := range []string{"info", "updates"} {
		if err := os.MkdirAll(filepath.Join(admin, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(admin, "status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dpkg := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("dpkg", append([]string{"--root=" + r, "--admindir=" + admin, "--force-script-chrootless", "--log=/dev/null"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	dpkg("-i", deb)
	for _, f := range []string{"usr/sbin/xipvsd", "usr/sbin/xipvsadm", "lib/systemd/system/xipvsd.service",
		"usr/share/man/man8/xipvsd.8.gz", "usr/share/man/man8/xipvsadm.8.gz", "usr/share/bash-completion/completions/xipvsadm",
		"etc/xipvs/xipvs.yaml", "etc/default/xipvsd", "usr/share/doc/xipvs/README.md", "usr/share/doc/xipvs/grafana/xipvs-dashboard.json"} {
		if _, err := os.Stat(filepath.Join(r, f)); err != nil {
			t.Errorf("not installed: %s", f)
		}
	}
	if out, err := exec.Command(filepath.Join(r, "usr/sbin/xipvsd"), "--version").Output(); err != nil || !strings.HasPrefix(string(out), "xipvsd ") {
		t.Errorf("installed xipvsd --version: %q, %v", out, err)
	}
	comp, _ := os.ReadFile(filepath.Join(r, "usr/share/bash-completion/completions/xipvsadm"))
	if !strings.Contains(string(comp), "--start-daemon") || !strings.Contains(string(comp), "complete -F _xipvsadm xipvsadm") {
		t.Errorf("bash completion:\n%s", comp)
	}
	if out, err := exec.Command("bash", "-n", filepath.Join(r, "usr/share/bash-completion/completions/xipvsadm")).CombinedOutput(); err != nil {
		t.Errorf("bash completion does not parse: %v %s", err, out)
	}
	conf, _ := os.ReadFile(filepath.Join(admin, "info", "xipvs.conffiles"))
	if !strings.Contains(string(conf), "/etc/xipvs/xipvs.yaml") || !strings.Contains(string(conf), "/etc/default/xipvsd") {
		t.Errorf("conffiles: %q", conf)
	}
	if out, err := exec.Command("man", "-l", filepath.Join(r, "usr/share/man/man8/xipvsd.8.gz")).Output(); err == nil && !strings.Contains(string(out), "--bgp-asn") {
		t.Errorf("xipvsd(8) lacks the options:\n%s", out)
	}
	for _, p := range []string{"xipvsd.8.gz", "xipvsadm.8.gz"} {
		out, err := exec.Command("man", "-l", filepath.Join(r, "usr/share/man/man8", p)).Output()
		if err != nil {
			continue // no man(1) here
		}
		for _, sec := range []string{"FILES", "EXIT STATUS", "EXAMPLES", "/run/xipvs/xipvsd.sock"} {
			if !strings.Contains(string(out), sec) {
				t.Errorf("%s lacks %s", p, sec)
			}
		}
	}
	// The unit, as installed, pointed at the installed binary.
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		unit, err := os.ReadFile(filepath.Join(r, "lib/systemd/system/xipvsd.service"))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "xipvsd.service")
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(unit), "/usr/sbin/xipvsd", filepath.Join(r, "usr/sbin/xipvsd"))), 0o644); err != nil {
			t.Fatal(err)
		}
		verify := exec.Command("systemd-analyze", "verify", p)
		verify.Env = append(os.Environ(), "MANPATH="+filepath.Join(r, "usr/share/man"))
		if out, err := verify.CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	} else {
		t.Log("systemd-analyze not available: the unit is not verified")
	}
	dpkg("--purge", "xipvs")
	for _, f := range []string{"usr/sbin/xipvsd", "lib/systemd/system/xipvsd.service", "etc/xipvs/xipvs.yaml"} {
		if _, err := os.Stat(filepath.Join(r, f)); err == nil {
			t.Errorf("left after purge: %s", f)
		}
	}
}
