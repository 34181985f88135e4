package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A full disk makes the command fail and loses nothing (issue 29): with
// the state file on a 128 KiB tmpfs, services are added one by one until
// xipvsadm refuses one with a clear error; every service it acknowledged
// is listed and saved, none it refused is, and after a kill -9 and a
// restart the director has exactly the acknowledged ones.
func TestFullDiskLosesNothing(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=128k"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	state := filepath.Join(dir, "state.json")
	lab := newDRLab(t, "fd", "--state-file", state)

	acked := 0
	var refusal string
	for i := 0; i < 2000; i++ {
		vs := fmt.Sprintf("10.77.0.100:%d", 1000+i)
		_, errOut, code := lab.admExit(t, "", "-A", "-t", vs, "-s", "wlc")
		if code != 0 {
			refusal = errOut
			break
		}
		acked++
	}
	if refusal == "" {
		t.Fatalf("2000 services fitted a 128 KiB file system")
	}
	t.Logf("%d services acknowledged; then: %s", acked, strings.TrimSpace(refusal))
	if !strings.Contains(refusal, "not saved") || !strings.Contains(refusal, "no space left") {
		t.Errorf("the refusal does not say the configuration could not be saved for lack of space: %q", refusal)
	}
	count := func() int { return strings.Count(lab.adm(t, "-Ln"), "TCP  10.77.0.100:") }
	if n := count(); n != acked {
		t.Errorf("-Ln lists %d services, %d were acknowledged", n, acked)
	}
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), `"scheduler"`); n != acked {
		t.Errorf("the state file holds %d services, %d were acknowledged", n, acked)
	}
	// A command that needs no room still works, and a deletion makes
	// room again.
	if _, errOut, code := lab.admExit(t, "", "-D", "-t", "10.77.0.100:1000"); code != 0 {
		t.Fatalf("-D on a full disk: %s", errOut)
	}
	acked--

	lab.Daemon.Kill()
	lab.start(t)
	if n := count(); n != acked {
		t.Errorf("after kill -9 and a restart: %d services, %d were acknowledged", n, acked)
	}
}

// Sync daemons started with xipvsadm are part of the saved state (issue
// 29): after a kill -9 and a restart the director runs them again, and
// one stopped by command stays stopped.
func TestSyncDaemonsSurviveRestart(t *testing.T) {
	lab := newDRLab(t, "sr")
	lab.adm(t, "--start-daemon", "master", "--mcast-interface", "eth0", "--syncid", "9")
	lab.adm(t, "--start-daemon", "backup", "--mcast-interface", "eth0", "--syncid", "9")
	want := "master sync daemon (mcast=eth0, syncid=9, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n" +
		"backup sync daemon (mcast=eth0, syncid=9, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
	if got := lab.adm(t, "-L", "--daemon"); got != want {
		t.Fatalf("-L --daemon:\n%s\nwant\n%s", got, want)
	}
	lab.Daemon.Kill()
	lab.start(t)
	if got := lab.adm(t, "-L", "--daemon"); got != want {
		t.Errorf("after kill -9 and a restart, -L --daemon:\n%s\nwant\n%s", got, want)
	}
	lab.adm(t, "--stop-daemon", "backup")
	lab.Daemon.Kill()
	lab.start(t)
	if got, want := lab.adm(t, "-L", "--daemon"), strings.SplitAfter(want, "\n")[0]; got != want {
		t.Errorf("after --stop-daemon backup and a restart, -L --daemon:\n%s\nwant\n%s", got, want)
	}
}
