package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStatusCodes: --check-status takes one code or codes and ranges
// (keepalived's status_code list), which -S writes back, keepalived.conf
// reads, and a check passes only within; a bad list is refused.
func TestStatusCodes(t *testing.T) {
	c, err := ParseArgs(strings.Fields("-A -t 10.0.0.1:80 --check http --check-status 200,301-302"))
	if err != nil {
		t.Fatal(err)
	}
	ck := c.Service.Check.WithDefaults()
	if ck.StatusCodes != "200,301-302" || ck.Status != 0 || !strings.Contains(ck.Args(), "--check-status 200,301-302") {
		t.Errorf("parsed %+v, args %q", ck, ck.Args())
	}
	for code, want := range map[int]bool{200: true, 301: true, 302: true, 303: false, 204: false} {
		if ck.StatusOK(code) != want {
			t.Errorf("status %d passes: %v, want %v", code, !want, want)
		}
	}
	if ck.Validate() != nil {
		t.Error(ck.Validate())
	}
	for _, bad := range []string{"300-200", "200-", "abc", "200,700", "99-100"} {
		if _, err := ParseStatusCodes(bad); err == nil {
			t.Errorf("status codes %q accepted", bad)
		}
		if c, err := ParseArgs(strings.Fields("-A -t 10.0.0.1:80 --check http --check-status " + bad)); err == nil {
			t.Errorf("--check-status %s accepted: %+v", bad, c.Service.Check)
		}
	}
	one, _ := ParseArgs(strings.Fields("-A -t 10.0.0.1:80 --check http --check-status 204"))
	if k := one.Service.Check.WithDefaults(); k.Status != 204 || k.StatusCodes != "" || !k.StatusOK(204) || k.StatusOK(200) {
		t.Errorf("one code: %+v", k)
	}
	p := filepath.Join(t.TempDir(), "keepalived.conf")
	conf := "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n HTTP_GET {\n url {\n path /\n status_code 200 300-399\n }\n }\n }\n}\n"
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := ParseKeepalived(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := k.Config.Services[0].Dests[0].Check.StatusCodes; got != "200,300-399" {
		t.Errorf("keepalived's status_code 200 300-399: %q", got)
	}
}
