package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xipvs/xipvs/internal/testutil"
)

// labKeepalivedConf is a keepalived.conf as an LVS admin writes it for
// the lab: VRRP (ignored by xipvsd), a DR web service with HTTP_GET,
// an API over NAT with TCP_CHECK and a sorry server, a TUN service, and
// a firewall-mark service.
const labKeepalivedConf = `! Configuration File for keepalived
global_defs {
   router_id LVS_LAB
}
vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int 1
    virtual_ipaddress {
        10.75.0.100
    }
}

virtual_server 10.75.0.100 80 {
    delay_loop 1
    lb_algo rr
    lb_kind DR
    protocol TCP
    real_server 10.75.0.11 80 {
        weight 1
        HTTP_GET {
            url {
              path /health
              status_code 200
            }
            connect_timeout 1
            retry 1
        }
    }
    real_server 10.75.0.12 80 {
        weight 1
        HTTP_GET {
            url {
              path /health
              status_code 200
            }
            connect_timeout 1
            retry 1
        }
    }
}

virtual_server 10.75.0.100 8080 {
    delay_loop 1
    lb_algo wlc
    lb_kind NAT
    protocol TCP
    sorry_server 10.76.0.15 8080
    real_server 10.76.0.14 8080 {
        weight 2
        TCP_CHECK {
            connect_port 8080
            connect_timeout 1
        }
    }
}

virtual_server 10.75.0.101 80 {
    delay_loop 1
    lb_algo rr
    lb_kind TUN
    protocol TCP
    real_server 10.75.0.13 80 {
        TCP_CHECK {
            connect_timeout 1
        }
    }
}

# Port 443 of the web VIP is bound to mark 5 with xipvsadm --add-mark
# (where LVS admins use iptables -j MARK).
virtual_server fwmark 5 {
    lb_algo sh
    lb_kind DR
    real_server 10.75.0.11 443 {
        weight 1
    }
}
`

// TestKeepalivedConf is issue 21's acceptance for keepalived.conf: a
// file with DR, NAT and TUN virtual servers, HTTP_GET and TCP_CHECK, a
// fwmark service and a sorry server runs under xipvsd and balances real
// traffic; its -Ln is what keepalived + IPVS would list for it (written
// here by hand: one service per virtual_server, lb_kind as the Forward
// column, the sorry server not listed while a real is up, ipvsadm's
// sorting: services by fwmark, protocol, address and port, reals by
// address and port); the sorry server takes over when the NAT real
// fails.
func TestKeepalivedConf(t *testing.T) {
	vip, vip2 := netip.MustParseAddr("10.75.0.100"), netip.MustParseAddr("10.75.0.101")
	l := testutil.NewTestLab(t, testutil.LabPlan{Prefix: fmt.Sprintf("xe%dka", os.Getpid()%10000),
		Outside: "10.75.0", Inside: "10.76.0", OutsideReals: 3, InsideReals: 2, VIPs: []netip.Addr{vip, vip2}})
	lab := &drLab{Lab: l, cl: l.Client, lb: l.Director, rs: l.Reals, vip: vip}
	for _, rs := range lab.rs[:2] {
		realserver(t, rs, "up", "--vip", vip.String(), "--mode", "dr")
	}
	realserver(t, lab.rs[2], "up", "--vip", vip2.String(), "--mode", "tun", "--interface", "eth0")
	for _, rs := range lab.rs[:3] {
		rs := rs
		t.Cleanup(func() { _ = rs.Exec(xipvsadmBin, "realserver", "down").Run() })
	}
	for _, rs := range lab.rs[3:] {
		if err := rs.IP("route", "add", "default", "via", "10.76.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	lab.serveEcho(t, 80, 443, 8080)
	conf := filepath.Join(t.TempDir(), "keepalived.conf")
	if err := os.WriteFile(conf, []byte(labKeepalivedConf), 0o600); err != nil {
		t.Fatal(err)
	}
	// --dry-run says what it used, ignored and cannot honour.
	out, err := lab.lb.Exec(xipvsdBin, "-i", "eth0,eth1", "--config", conf, "--dry-run").CombinedOutput()
	if err != nil {
		t.Fatalf("--dry-run: %v: %s", err, out)
	}
	for _, want := range []string{"lines used", "lines ignored", "vrrp_instance VI_1 {", "configuration OK: 4 services"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--dry-run output lacks %q:\n%s", want, out)
		}
	}
	if err := lab.StartDaemon(xipvsdBin, "--config", conf); err != nil {
		t.Fatal(err)
	}
	lab.adm(t, "--add-mark", "-f", "5", "-t", vip.String()+":443")

	want := `IP Virtual Server version 1.2.1 (size=1048576)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.75.0.100:80 rr
  -> 10.75.0.11:80                Route   1      0          0         
  -> 10.75.0.12:80                Route   1      0          0         
TCP  10.75.0.100:8080 wlc
  -> 10.76.0.14:8080              Masq    2      0          0         
TCP  10.75.0.101:80 rr
  -> 10.75.0.13:80                Tunnel  1      0          0         
FWM  5 sh
  -> 10.75.0.11:443               Route   1      0          0         
`
	if got := lab.adm(t, "-Ln"); got != want {
		t.Errorf("-Ln:\n%s\nwant (keepalived + IPVS):\n%s", got, want)
	}

	// Real traffic through every service.
	count := map[string]int{}
	for i := 0; i < 4; i++ {
		name, _, _ := lab.ask(t, 80)
		count[name]++
	}
	if count["rs1"] != 2 || count["rs2"] != 2 {
		t.Errorf("DR rr: %v", count)
	}
	if name, seen, local := lab.ask(t, 8080); name != "rs4" || seen != local.String() {
		t.Errorf("NAT: answered by %s, which saw %s (client %s)", name, seen, local)
	}
	if name, _, _ := lab.askAt(t, netip.AddrPortFrom(vip2, 80)); name != "rs3" {
		t.Errorf("TUN: answered by %s", name)
	}
	if name, _, _ := lab.ask(t, 443); name != "rs1" {
		t.Errorf("fwmark 5: answered by %s", name)
	}

	// The NAT real fails its TCP_CHECK (its server stops): the sorry
	// server takes the new flows.
	lab.stopServer(t, lab.rs[3], 8080)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(lab.adm(t, "-L", "--health"), "DOWN") {
		if time.Now().After(deadline) {
			t.Fatalf("rs4 not down:\n%s", lab.adm(t, "-L", "--health"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if name, _, _ := lab.ask(t, 8080); name != "rs5" {
		t.Errorf("with every real down, answered by %s, want the sorry server rs5", name)
	}

	// A reload of the edited file applies the difference and keeps the
	// port groups added with xipvsadm.
	edited := strings.Replace(labKeepalivedConf, "real_server 10.75.0.13 80 {\n", "real_server 10.75.0.13 80 {\n        weight 4\n", 1)
	if err := os.WriteFile(conf, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	lab.adm(t, "reload")
	if got := lab.adm(t, "-Ln"); !strings.Contains(got, destLine("10.75.0.13:80", "Tunnel", 4)) {
		t.Errorf("-Ln after the reload:\n%s", got)
	}
	if name, _, _ := lab.ask(t, 443); name != "rs1" {
		t.Errorf("fwmark 5 after the reload: answered by %s", name)
	}
}
