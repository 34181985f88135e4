// Package realserver prepares a host as an LVS real server, as the
// seeds' real-server.sh scripts do by hand, and undoes it: each VIP on lo
// as a /32 (IPv6: a /128), arp_ignore=1 and arp_announce=2 (all and lo)
// so the host never answers ARP for an IPv4 VIP, and for TUN the
// decapsulation: xipvs's decap XDP program on the interface (no ipip or
// ip6_tunnel module needed), or the kernel's tunl0 device where it exists
// (IPv4). An IPv6 VIP needs no sysctl: Linux answers a neighbour
// solicitation only for an address of the interface it arrived on
// (ndisc_recv_ns looks the target up strictly on that device), so a VIP
// on lo is never advertised. What Up changed is recorded in a state file
// so Down restores exactly that.
package realserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/internal/realserver/decap"
)

// Modes and decapsulations.
const (
	ModeDR     = "dr"
	ModeTUN    = "tun"
	DecapXDP   = "xdp"
	DecapTunl0 = "tunl0"
)

// Options configures Up.
type Options struct {
	VIPs []netip.Addr
	Mode string // dr or tun
	// Interface receives the tunnelled packets (TUN with XDP decap);
	// default: the interface of the default route.
	Interface string
	// Decap is xdp (default) or tunl0.
	Decap string
	// StateFile records what Up changed; default: StatePath().
	StateFile string
}

// State is what Up changed, for Down.
type State struct {
	// Addrs are the VIPs Up added, by device.
	Addrs map[string][]netip.Addr `json:"addrs"`
	// Sysctls are the previous values of the sysctls Up changed.
	Sysctls map[string]string `json:"sysctls"`
	// DecapInterface has the decap program Up attached.
	DecapInterface string `json:"decap_interface,omitempty"`
	// Tunl0Up records that Up set tunl0 up.
	Tunl0Up bool `json:"tunl0_up,omitempty"`
}

// StatePath is the default state file: one per network namespace, so
// real servers in several namespaces of one host do not share it.
func StatePath() string {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &st); err == nil {
		return fmt.Sprintf("/run/xipvs/realserver-%d.json", st.Ino)
	}
	return "/run/xipvs/realserver.json"
}

func load(path string) (State, error) {
	st := State{Addrs: map[string][]netip.Addr{}, Sysctls: map[string]string{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("state file %s: %w", path, err)
	}
	if st.Addrs == nil {
		st.Addrs = map[string][]netip.Addr{}
	}
	if st.Sysctls == nil {
		st.Sysctls = map[string]string{}
	}
	return st, nil
}

func save(path string, st State) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func sysctlPath(name string) string {
	return "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
}

func readSysctl(name string) (string, error) {
	b, err := os.ReadFile(sysctlPath(name))
	return strings.TrimSpace(string(b)), err
}

// setSysctl writes name=value, remembering the old value the first time.
func (st *State) setSysctl(name, value string) error {
	old, err := readSysctl(name)
	if err != nil {
		return fmt.Errorf("sysctl %s: %w", name, err)
	}
	if old == value {
		return nil
	}
	if _, seen := st.Sysctls[name]; !seen {
		st.Sysctls[name] = old
	}
	if err := os.WriteFile(sysctlPath(name), []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", name, value, err)
	}
	return nil
}

// hostPrefix is vip as a host prefix: /32, or /128 for IPv6.
func hostPrefix(vip netip.Addr) *net.IPNet {
	return &net.IPNet{IP: vip.AsSlice(), Mask: net.CIDRMask(vip.BitLen(), vip.BitLen())}
}

// addVIP puts vip as a host prefix on dev unless it is there already.
func (st *State) addVIP(dev string, vip netip.Addr) (bool, error) {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return false, fmt.Errorf("device %s: %w", dev, err)
	}
	fam := netlink.FAMILY_V4
	if vip.Is6() {
		fam = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(l, fam)
	if err != nil {
		return false, fmt.Errorf("addresses of %s: %w", dev, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == vip {
			return false, nil
		}
	}
	a := &netlink.Addr{IPNet: hostPrefix(vip)}
	if vip.Is6() {
		a.Flags = unix.IFA_F_NODAD // usable at once; lo does no DAD anyway
	}
	if err := netlink.AddrAdd(l, a); err != nil {
		return false, fmt.Errorf("add %v to %s: %w", a.IPNet, dev, err)
	}
	if !slices.Contains(st.Addrs[dev], vip) {
		st.Addrs[dev] = append(st.Addrs[dev], vip)
	}
	return true, nil
}

// DefaultInterface is the interface of the IPv4 default route, else of
// the IPv6 one.
func DefaultInterface() (string, error) {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteList(nil, fam)
		if err != nil {
			return "", err
		}
		for _, r := range routes {
			if r.Dst == nil || r.Dst.IP.IsUnspecified() {
				l, err := netlink.LinkByIndex(r.LinkIndex)
				if err != nil {
					return "", err
				}
				return l.Attrs().Name, nil
			}
		}
	}
	return "", errors.New("no default route: name the interface with --interface")
}

// Up prepares the host. It is idempotent: running it again changes
// nothing, and new VIPs are added to what an earlier Up did. On error,
// what it changed so far is still recorded, so Down undoes it.
func Up(o Options) (changes []string, err error) {
	if len(o.VIPs) == 0 {
		return nil, errors.New("no VIP given (--vip VIP[,VIP...])")
	}
	v4 := false
	for _, v := range o.VIPs {
		if v.Zone() != "" || v.IsUnspecified() || v.IsMulticast() || v.IsLoopback() || v.IsLinkLocalUnicast() || v.Is4In6() {
			return nil, fmt.Errorf("VIP %v: a global unicast IPv4 or IPv6 address is needed", v)
		}
		v4 = v4 || v.Is4()
	}
	switch o.Mode {
	case ModeDR, ModeTUN:
	default:
		return nil, fmt.Errorf("mode %q: use dr or tun (NAT and FULLNAT real servers need no preparation)", o.Mode)
	}
	if o.Decap == "" {
		o.Decap = DecapXDP
	}
	if o.Decap != DecapXDP && o.Decap != DecapTunl0 {
		return nil, fmt.Errorf("decap %q: use xdp or tunl0", o.Decap)
	}
	if o.Mode == ModeDR && (o.Decap != DecapXDP || o.Interface != "") {
		return nil, errors.New("--decap and --interface are for --mode tun")
	}
	if o.Decap == DecapTunl0 && slices.ContainsFunc(o.VIPs, netip.Addr.Is6) {
		return nil, errors.New("--decap tunl0 carries IPv4 only: use --decap xdp for IPv6 VIPs")
	}
	if o.StateFile == "" {
		o.StateFile = StatePath()
	}
	st, err := load(o.StateFile)
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := save(o.StateFile, st); serr != nil && err == nil {
			err = fmt.Errorf("record state in %s: %w", o.StateFile, serr)
		}
	}()
	note := func(format string, args ...any) { changes = append(changes, fmt.Sprintf(format, args...)) }

	vipDev := "lo"
	if o.Mode == ModeTUN && o.Decap == DecapTunl0 {
		// The seeds' TUN script: VIPs on tunl0, rp_filter off there.
		l, lerr := netlink.LinkByName("tunl0")
		if lerr != nil {
			return changes, errors.New("no tunl0 device (this kernel may lack the ipip module): use --decap xdp")
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			if err := netlink.LinkSetUp(l); err != nil {
				return changes, fmt.Errorf("set tunl0 up: %w", err)
			}
			st.Tunl0Up = true
			note("tunl0 up")
		}
		vipDev = "tunl0"
	}
	for _, v := range o.VIPs {
		added, err := st.addVIP(vipDev, v)
		if err != nil {
			return changes, err
		}
		if added {
			note("%v on %s", hostPrefix(v), vipDev)
		}
	}
	var sysctls [][2]string
	if v4 {
		sysctls = [][2]string{
			{"net.ipv4.conf.all.arp_ignore", "1"}, {"net.ipv4.conf.all.arp_announce", "2"},
			{"net.ipv4.conf.lo.arp_ignore", "1"}, {"net.ipv4.conf.lo.arp_announce", "2"},
		}
	}
	if vipDev == "tunl0" {
		sysctls = append(sysctls, [2]string{"net.ipv4.conf.tunl0.rp_filter", "0"}, [2]string{"net.ipv4.conf.all.rp_filter", "0"})
	}
	for _, sc := range sysctls {
		before, _ := readSysctl(sc[0])
		if err := st.setSysctl(sc[0], sc[1]); err != nil {
			return changes, err
		}
		if before != sc[1] {
			note("%s=%s (was %s)", sc[0], sc[1], before)
		}
	}
	if o.Mode == ModeTUN && o.Decap == DecapXDP {
		dev := o.Interface
		if dev == "" {
			if dev, err = DefaultInterface(); err != nil {
				return changes, err
			}
		}
		if st.DecapInterface != "" && st.DecapInterface != dev {
			return changes, fmt.Errorf("the decap program is on %s already; run down first to move it to %s", st.DecapInterface, dev)
		}
		attached, err := decap.Attach(dev, o.VIPs)
		if err != nil {
			return changes, err
		}
		st.DecapInterface = dev
		if attached {
			note("decap XDP program on %s", dev)
		}
	}
	return changes, nil
}

// Down undoes what Up recorded: the decap program, the VIPs it added and
// the sysctls it changed (back to their old values). With nothing
// recorded it does nothing.
func Down(stateFile string) (changes []string, err error) {
	if stateFile == "" {
		stateFile = StatePath()
	}
	st, err := load(stateFile)
	if err != nil {
		return nil, err
	}
	var errs []error
	if st.DecapInterface != "" {
		detached, err := decap.Detach(st.DecapInterface)
		if err != nil {
			errs = append(errs, err)
		} else if detached {
			changes = append(changes, "decap XDP program off "+st.DecapInterface)
		}
	}
	for dev, vips := range st.Addrs {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			errs = append(errs, fmt.Errorf("device %s: %w", dev, err))
			continue
		}
		for _, v := range vips {
			a := &netlink.Addr{IPNet: hostPrefix(v)}
			if err := netlink.AddrDel(l, a); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
				errs = append(errs, fmt.Errorf("remove %v from %s: %w", v, dev, err))
				continue
			}
			changes = append(changes, fmt.Sprintf("%v off %s", a.IPNet, dev))
		}
	}
	for name, old := range st.Sysctls {
		if err := os.WriteFile(sysctlPath(name), []byte(old), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", name, old, err))
			continue
		}
		changes = append(changes, fmt.Sprintf("%s=%s", name, old))
	}
	if st.Tunl0Up {
		if l, err := netlink.LinkByName("tunl0"); err == nil {
			if err := netlink.LinkSetDown(l); err != nil {
				errs = append(errs, err)
			} else {
				changes = append(changes, "tunl0 down")
			}
		}
	}
	if len(errs) > 0 {
		return changes, errors.Join(errs...)
	}
	if err := os.Remove(stateFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return changes, err
	}
	slices.Sort(changes)
	return changes, nil
}
