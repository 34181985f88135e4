// Package testutil holds what tests, the demo and the benchmark harness
// share: network namespaces and veth topologies made with iproute2, a
// way to run code inside a namespace, and the privileged-test gate.
package testutil

import (
	"os"
	"testing"
)

// RequirePrivileged skips t unless the process is root. With
// XIPVS_REQUIRE_PRIVILEGED=1 (set by .ci/run) the skip is a failure.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("XIPVS_REQUIRE_PRIVILEGED") == "1" {
		t.Fatal("privileged test cannot run: not root, and XIPVS_REQUIRE_PRIVILEGED=1")
	}
	t.Skip("privileged test: run as root (XDP, namespaces)")
}
