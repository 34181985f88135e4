package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xipvs/xipvs/internal/api"
)

// serveDownload adds a handler of size bytes at /big to every real's
// server on port (serveEcho answers everything else).
func (lab *modeLab) serveBig(t *testing.T, port, size int) {
	t.Helper()
	for _, rs := range lab.rs {
		name := lab.rsName(rs)
		var ln net.Listener
		if err := rs.Do(func() (err error) { ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port)); return }); err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/big" {
				_, _ = w.Write(make([]byte, size))
				return
			}
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%s %s %d", name, r.RemoteAddr, n)
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
}

func (lab *drLab) counters(t *testing.T) map[string]uint64 {
	t.Helper()
	info, err := api.NewClient(lab.Socket).Info()
	if err != nil {
		t.Fatal(err)
	}
	return info.Counters
}

// The SYN proxy, NAT and FULLNAT: every connection is answered by the
// director's cookie SYN-ACK, opened to the real only after the client's
// ACK, and then forwarded with the real's sequence numbers, timestamps
// and window shifted to what the client was told: requests, a 4 MB
// download and TOA for FULLNAT all work as without it.
func TestSynProxy(t *testing.T) {
	lab := newModeLab(t, "syp", labPlan{outside: "10.92.0", inside: "10.93.0", realsGateway: "10.93.0.1"})
	lip := "10.93.0.250"
	if err := lab.lb.IP("addr", "add", lip+"/32", "dev", "eth1"); err != nil {
		t.Fatal(err)
	}
	const big = 4 << 20
	lab.serveBig(t, 8080, big)
	nat, fnat := lab.vip.String()+":80", lab.vip.String()+":81"
	lab.adm(t, "-A", "-t", nat, "-s", "rr", "-j", "enable")
	for _, rs := range lab.rs {
		lab.adm(t, "-a", "-t", nat, "-r", rs.Addr.Addr().String()+":8080", "-m")
	}
	lab.adm(t, "-A", "-t", fnat, "-s", "wlc", "--synproxy", "enable")
	lab.adm(t, "--add-laddr", "-z", lip, "-t", fnat)
	lab.adm(t, "-a", "-t", fnat, "-r", lab.rs[0].Addr.Addr().String()+":8080", "-b")
	if out := lab.adm(t, "-Ln"); !strings.Contains(out, "TCP  "+nat+" rr synproxy") {
		t.Errorf("-Ln does not show the SYN proxy:\n%s", out)
	}
	if out := lab.adm(t, "-Sn"); !strings.Contains(out, "-A -t "+nat+" -s rr -j enable") {
		t.Errorf("-S does not keep the SYN proxy:\n%s", out)
	}
	// A DR real cannot sit behind the proxy.
	if _, err := lab.Adm(xipvsadmBin, "-a", "-t", nat, "-r", "10.92.0.50", "-g"); err == nil || !strings.Contains(err.Error(), "synproxy") {
		t.Errorf("a DR real on a SYN-proxied service: %v, want refused", err)
	}

	seen := map[string]int{}
	for i := 0; i < 4; i++ {
		name, addr, local := lab.ask(t, 80)
		seen[name]++
		if !strings.HasPrefix(addr, local.Addr().String()+":") {
			t.Errorf("NAT real %s saw %s, want the client %s", name, addr, local)
		}
	}
	if seen["rs1"] != 2 || seen["rs2"] != 2 {
		t.Errorf("rr through the proxy: %v", seen)
	}
	toa := captureTOA(t, lab.rs[0], 8080, false)
	name, addr, local := lab.ask(t, 81)
	if name != "rs1" || !strings.HasPrefix(addr, lip+":") {
		t.Errorf("FULLNAT through the proxy: %s saw %s", name, addr)
	}
	if got, ok := toa(); !ok || got != local {
		t.Errorf("TOA through the proxy: %v (found %v), want %v", got, ok, local)
	}
	for _, port := range []int{80, 81} {
		start := time.Now()
		hc := lab.cl.HTTPClient(20 * time.Second)
		resp, err := hc.Get(fmt.Sprintf("http://%s:%d/big", lab.vip, port))
		if err != nil {
			t.Fatalf("download via %d: %v", port, err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != big {
			t.Errorf("download via %d: %d of %d bytes: %v", port, n, big, err)
		}
		t.Logf("port %d: %d bytes in %v", port, n, time.Since(start))
	}
	c := lab.counters(t)
	if c["xdp_sp_synack"] < 7 || c["slow_proxy_established"] < 7 || c["slow_proxy_failed"] != 0 {
		t.Errorf("counters: sp_synack %d, proxy established %d, failed %d; want 7, 7, 0",
			c["xdp_sp_synack"], c["slow_proxy_established"], c["slow_proxy_failed"])
	}
	// A real that refuses (nothing listens: its stack answers RST): the
	// client, whose handshake the director completed, is reset.
	closed := lab.vip.String() + ":82"
	lab.adm(t, "-A", "-t", closed, "-s", "rr", "-j", "enable")
	lab.adm(t, "-a", "-t", closed, "-r", lab.rs[0].Addr.Addr().String()+":9", "-m")
	// The reset reaches the client so fast that it may be reported to
	// connect() itself, else once to the write, the read then seeing the
	// end of the stream.
	var conn net.Conn
	err := lab.cl.Do(func() (err error) { conn, err = net.DialTimeout("tcp4", closed, 2*time.Second); return })
	switch {
	case err != nil:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("connect through the proxy to a refusing real: %v, want reset", err)
		}
	default:
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, werr := fmt.Fprint(conn, "GET / HTTP/1.0\r\n\r\n")
		n, rerr := conn.Read(make([]byte, 64))
		if !errors.Is(werr, syscall.ECONNRESET) && !errors.Is(rerr, syscall.ECONNRESET) && !(errors.Is(rerr, io.EOF) && n == 0) {
			t.Errorf("through the proxy to a refusing real: write %v, read %d bytes, %v; want the connection reset", werr, n, rerr)
		}
	}
	if c := lab.counters(t); c["slow_proxy_failed"] != 1 {
		t.Errorf("slow_proxy_failed %d, want 1", c["slow_proxy_failed"])
	}
}
