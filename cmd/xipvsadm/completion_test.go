package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// TestCompletion: bash completes schedulers after -s and options after
// a dash from the script; zsh's is the same script behind bashcompinit.
func TestCompletion(t *testing.T) {
	var b bytes.Buffer
	bashCompletion(&b)
	script := b.String() + `
COMP_WORDS=(xipvsadm -A -t 10.0.0.1:80 -s w); COMP_CWORD=5; _xipvsadm; echo "${COMPREPLY[*]}"
COMP_WORDS=(xipvsadm --sched); COMP_CWORD=1; _xipvsadm; echo "${COMPREPLY[*]}"
`
	out, err := exec.Command("bash", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "wlc wrr" {
		t.Fatalf("after -s w: %q, want the schedulers wlc wrr", lines)
	}
	if !strings.Contains(lines[1], "--scheduler") {
		t.Errorf("after --sched: %q", lines[1])
	}
	var z bytes.Buffer
	zshCompletion(&z)
	if !strings.HasPrefix(z.String(), "#compdef xipvsadm\n") || !strings.Contains(z.String(), "bashcompinit") || !strings.HasSuffix(z.String(), b.String()) {
		t.Errorf("zsh completion:\n%s", z.String())
	}
}
