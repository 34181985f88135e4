package testutil

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// HAPlan describes an active-backup pair: a client, two directors and
// DR real servers on one LAN, keepalived (VRRP only, no virtual_server
// blocks) moving the VIP between the directors.
type HAPlan struct {
	Prefix string
	// Net is a /24 without its last octet: client .1, directors .2 and
	// .3, reals .11...
	Net   string
	Reals int
	VIP   netip.Addr
	// Inside, a /24 without its last octet, puts the reals on a LAN of
	// their own behind the directors (eth1 at .2 and .3) for NAT, with
	// their gateway .254 moved by VRRP with the VIP.
	Inside string
	// AdvertInt is VRRP's advertisement interval (1 s if zero).
	AdvertInt time.Duration
}

// HA is a built HAPlan.
type HA struct {
	Plan   HAPlan
	LAN    *LAN
	In     *LAN
	Client *Host
	Reals  []*Host
	DirectorSet
	vrrp    [2]*exec.Cmd
	vrrpOut [2]*strings.Builder
}

// NewHA builds p and starts keepalived on both directors (d1 the VRRP
// master by priority). On error, what was made is removed.
func NewHA(p HAPlan) (_ *HA, err error) {
	if _, err := exec.LookPath("keepalived"); err != nil {
		return nil, fmt.Errorf("keepalived not installed (apt-get install keepalived): %w", err)
	}
	h := &HA{Plan: p, DirectorSet: DirectorSet{Directors: make([]*Host, 2), Daemons: make([]*Daemon, 2)}}
	defer func() {
		if err != nil {
			err = errors.Join(err, h.Close())
		}
	}()
	if h.Dir, err = os.MkdirTemp("", p.Prefix+"-"); err != nil {
		return nil, err
	}
	pfx := func(host int) netip.Prefix { return netip.MustParsePrefix(fmt.Sprintf("%s.%d/24", p.Net, host)) }
	if h.LAN, err = NewLAN(p.Prefix); err != nil {
		return nil, err
	}
	if h.Client, err = h.LAN.AddHost("cl", pfx(1), HostOptions{TxChecksumOff: true}); err != nil {
		return nil, err
	}
	for i := range h.Directors {
		name := fmt.Sprintf("d%d", i+1)
		if h.Directors[i], err = h.LAN.AddHost(name, pfx(2+i), HostOptions{XDPPeer: true}); err != nil {
			return nil, err
		}
		// As in the scale-out lab: no unknown unicast to a director's
		// port (a NIC filters frames for other MACs; a veth does not).
		if err := h.LAN.Switch.Exec("bridge", "link", "set", "dev", "p-"+name, "flood", "off").Run(); err != nil {
			return nil, fmt.Errorf("bridge link set flood off: %w", err)
		}
	}
	if p.Inside != "" {
		if h.In, err = NewLAN(p.Prefix + "i"); err != nil {
			return nil, err
		}
		for i, d := range h.Directors {
			name := fmt.Sprintf("d%d", i+1)
			if err := h.In.Attach(d, name, "eth1", netip.MustParsePrefix(fmt.Sprintf("%s.%d/24", p.Inside, 2+i)), HostOptions{XDPPeer: true}); err != nil {
				return nil, err
			}
			if err := h.In.Switch.Exec("bridge", "link", "set", "dev", "p-"+name, "flood", "off").Run(); err != nil {
				return nil, fmt.Errorf("bridge link set flood off: %w", err)
			}
		}
		h.Ifaces = "eth0,eth1"
	}
	for i := 0; i < p.Reals; i++ {
		lan, addr := h.LAN, pfx(11+i)
		if p.Inside != "" {
			lan, addr = h.In, netip.MustParsePrefix(fmt.Sprintf("%s.%d/24", p.Inside, 11+i))
		}
		rs, err := lan.AddHost(fmt.Sprintf("rs%d", i+1), addr, HostOptions{TxChecksumOff: true})
		if err != nil {
			return nil, err
		}
		if p.Inside != "" {
			err = rs.IP("route", "add", "default", "via", p.Inside+".254")
		} else {
			err = rs.MakeRealServer(p.VIP)
		}
		if err != nil {
			return nil, err
		}
		h.Reals = append(h.Reals, rs)
	}
	for i := range h.Directors {
		if err := h.startVRRP(i); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// keepalivedConf is a VRRP-only keepalived.conf, as LVS pairs whose
// ipvsadm rules live elsewhere write it.
func (h *HA) keepalivedConf(i int) string {
	state, prio := "MASTER", 150
	if i == 1 {
		state, prio = "BACKUP", 100
	}
	adv := h.Plan.AdvertInt
	if adv == 0 {
		adv = time.Second
	}
	gw := ""
	if h.Plan.Inside != "" {
		// The NAT reals' gateway moves with the VIP.
		gw = "\n\t\t" + h.Plan.Inside + ".254/24 dev eth1"
	}
	return fmt.Sprintf(`global_defs {
	router_id xipvs-d%d
	vrrp_garp_master_delay 1
	vrrp_garp_master_repeat 3
}
vrrp_instance VI_1 {
	state %s
	interface eth0
	virtual_router_id 51
	priority %d
	advert_int %g
	virtual_ipaddress {
		%s/32 dev eth0%s
	}
}
`, i+1, state, prio, adv.Seconds(), h.Plan.VIP, gw)
}

func (h *HA) startVRRP(i int) error {
	conf := filepath.Join(h.Dir, fmt.Sprintf("keepalived-d%d.conf", i+1))
	if err := os.WriteFile(conf, []byte(h.keepalivedConf(i)), 0o600); err != nil {
		return err
	}
	pid := func(what string) string { return filepath.Join(h.Dir, fmt.Sprintf("d%d-%s.pid", i+1, what)) }
	cmd := h.Directors[i].Exec("keepalived", "--vrrp", "--dont-fork", "--log-console", "-f", conf,
		"-p", pid("keepalived"), "-r", pid("vrrp"), "-c", pid("checkers"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	h.vrrpOut[i] = &strings.Builder{}
	cmd.Stdout, cmd.Stderr = h.vrrpOut[i], h.vrrpOut[i]
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("keepalived on d%d: %w", i+1, err)
	}
	h.vrrp[i] = cmd
	return nil
}

// StopVRRP kills director i's keepalived (its process group).
func (h *HA) StopVRRP(i int) {
	if c := h.vrrp[i]; c != nil && c.Process != nil {
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		_ = c.Wait()
		h.vrrp[i] = nil
	}
}

// VRRPLog is what director i's keepalived printed.
func (h *HA) VRRPLog(i int) string {
	if h.vrrpOut[i] == nil {
		return ""
	}
	return h.vrrpOut[i].String()
}

// HoldsVIP reports whether director i has the VIP on eth0.
func (h *HA) HoldsVIP(i int) bool {
	out, err := h.Directors[i].Exec("ip", "-4", "addr", "show", "dev", "eth0").CombinedOutput()
	return err == nil && strings.Contains(string(out), " "+h.Plan.VIP.String()+"/32")
}

// WaitVIP waits until director i holds the VIP.
func (h *HA) WaitVIP(i int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !h.HoldsVIP(i) {
		if time.Now().After(deadline) {
			return fmt.Errorf("d%d does not hold %v after %v: %s", i+1, h.Plan.VIP, timeout, h.VRRPLog(i))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// Close stops everything and removes every namespace and file.
func (h *HA) Close() error {
	for i := range h.vrrp {
		h.StopVRRP(i)
	}
	var err error
	if h.In != nil {
		err = h.In.Close()
	}
	return errors.Join(err, h.closeAll(h.LAN))
}
