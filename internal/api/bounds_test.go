package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/xipvs/xipvs/config"
)

// restoreOnly is a Backend that takes restores and counts their lines.
type restoreOnly struct {
	Backend
	lines int
}

func (b *restoreOnly) Restore(_ context.Context, lines []config.Line) error {
	b.lines = len(lines)
	return nil
}

func statusFor(err error) int {
	var ae *Error
	if errors.As(err, &ae) && ae.Status != 0 {
		return ae.Status
	}
	return http.StatusInternalServerError
}

// TestRequestBounds: a request body over its bound is refused while it
// is read, and decoding one allocates at most eight times its bound whatever
// the body is (issue 29: a 120 MB body cost 8.47 GB): a 120 MB rules
// file, a single 120 MB word, a command's body past 1 MiB, more lines
// than MaxRestoreLines and a word past its bound are each refused; a
// rules file of 100,000 lines within the bounds is taken whole.
func TestRequestBounds(t *testing.T) {
	b := &restoreOnly{}
	h := Handler(b, statusFor)
	post := func(path string, body io.Reader) (int, string, uint64) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", path, body))
		runtime.ReadMemStats(&after)
		return rec.Code, rec.Body.String(), after.TotalAlloc - before.TotalAlloc
	}
	line := `{"n":1,"args":["-A","-t","192.0.2.10:80","-s","wlc"]},`
	many := func(n int) io.Reader {
		return io.MultiReader(strings.NewReader("["), strings.NewReader(strings.Repeat(line, n-1)),
			strings.NewReader(strings.TrimSuffix(line, ",")+"]"))
	}
	const mib = 1 << 20
	for _, c := range []struct {
		name     string
		path     string
		body     io.Reader
		want     int
		maxAlloc uint64
	}{
		{"a 120 MB rules file", "/v1/restore", many(120 * mib / len(line)), http.StatusRequestEntityTooLarge, 8 * MaxRestoreBytes},
		{"a 120 MB word", "/v1/restore", io.MultiReader(strings.NewReader(`[{"n":1,"args":["`), bytes.NewReader(bytes.Repeat([]byte("a"), 120*mib)), strings.NewReader(`"]}]`)),
			http.StatusRequestEntityTooLarge, 8 * MaxRestoreBytes},
		{"a 2 MiB command", "/v1/services/add", io.MultiReader(strings.NewReader(`{"scheduler":"`), bytes.NewReader(bytes.Repeat([]byte("a"), 2*mib)), strings.NewReader(`"}`)),
			http.StatusRequestEntityTooLarge, 8 * MaxRequestBytes},
		{"more lines than allowed", "/v1/restore", io.MultiReader(strings.NewReader("["), strings.NewReader(strings.Repeat(`{"n":1,"args":[]},`, MaxRestoreLines)), strings.NewReader(`{"n":1,"args":[]}]`)),
			http.StatusRequestEntityTooLarge, 8 * MaxRestoreBytes},
		{"a word past its bound", "/v1/restore", strings.NewReader(fmt.Sprintf(`[{"n":3,"args":["-A","%s"]}]`, strings.Repeat("a", maxArgBytes+1))),
			http.StatusBadRequest, mib},
	} {
		code, msg, alloc := post(c.path, c.body)
		if code != c.want {
			t.Errorf("%s: status %d (%s), want %d", c.name, code, strings.TrimSpace(msg), c.want)
		}
		if alloc > c.maxAlloc {
			t.Errorf("%s: %d MiB allocated, want at most %d", c.name, alloc>>20, c.maxAlloc>>20)
		}
	}
	if code, msg, _ := post("/v1/restore", many(100000)); code != http.StatusOK || b.lines != 100000 {
		t.Errorf("100,000 lines: status %d (%s), %d lines taken", code, msg, b.lines)
	}
}
