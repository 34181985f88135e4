package api

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/xipvs/xipvs/internal/testutil"
)

// TestDefaultsPerNamespace: the host's namespace keeps the plain paths;
// another namespace gets its own, which xipvsadm run there finds too.
func TestDefaultsPerNamespace(t *testing.T) {
	testutil.RequirePrivileged(t)
	sock, state, pins := Defaults()
	if sock != DefaultSocket || state != DefaultStateFile || pins != DefaultPinDir {
		t.Errorf("host namespace: %s %s %s", sock, state, pins)
	}
	ns, err := testutil.AddNetns(fmt.Sprintf("xpaths%d", os.Getpid()%100000))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = testutil.DelNetns(ns.Name) })
	var in [3]string
	if err := ns.Do(func() error {
		in[0], in[1], in[2] = Defaults()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sfx := ""
	for i, p := range in {
		if p == []string{sock, state, pins}[i] || !strings.Contains(p, "-") {
			t.Errorf("namespace path %s is the host's", p)
		}
		if i == 0 {
			sfx = strings.TrimSuffix(strings.TrimPrefix(p, "/run/xipvs/xipvsd"), ".sock")
		} else if !strings.Contains(p, sfx) {
			t.Errorf("%s lacks the namespace's suffix %s", p, sfx)
		}
	}
}
