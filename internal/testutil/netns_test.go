package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestAddNetnsLeftOver: a namespace a killed run left behind (nothing in
// it) is replaced; one a live process is in is refused, untouched.
func TestAddNetnsLeftOver(t *testing.T) {
	RequirePrivileged(t)
	name := fmt.Sprintf("xtn%d", os.Getpid()%100000)
	if err := Run("ip", "netns", "add", name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = DelNetns(name) })
	if err := Run("ip", "-n", name, "link", "add", "stale0", "type", "veth", "peer", "name", "stale1"); err != nil {
		t.Fatal(err)
	}
	ns, err := AddNetns(name)
	if err != nil {
		t.Fatalf("left-over namespace: %v", err)
	}
	if err := ns.IP("link", "show", "stale0"); err == nil {
		t.Fatal("the left-over namespace was kept, not replaced")
	}
	sleeper := ns.Exec("sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	// Wait until sleep is in the namespace.
	for i := 0; i < 100; i++ {
		if pids, _ := exec.Command("ip", "netns", "pids", name).Output(); strings.TrimSpace(string(pids)) != "" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := AddNetns(name); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a namespace in use: %v, want refused as in use", err)
	}
}
