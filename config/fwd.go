package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Fwd is a destination's packet-forwarding method: an index into
// FwdMethods, which says everything else about it.
type Fwd uint8

// Forwarding methods (ipvsadm -g, -i, -m; DPVS's ipvsadm -b).
const (
	FwdRoute   Fwd = iota // direct routing, ipvsadm -g (the default)
	FwdTunnel             // IP-in-IP, ipvsadm -i
	FwdMasq               // NAT, ipvsadm -m
	FwdFullNAT            // full NAT, DPVS's ipvsadm -b (--fullnat)
)

// FwdMethod is a forwarding method: every name it goes by, its code in
// the data plane and on the sync wire, and what it does to a packet.
type FwdMethod struct {
	Column string   // ipvsadm -L's Forward column
	Name   string   // in saved files and on the API (stable, unlike Fwd's numbers)
	Switch string   // the ipvsadm switch that selects it
	Long   string   // the switch's long form, without --
	YAML   []string // what a YAML file may call it besides Name
	LBKind []string // keepalived's lb_kind values for it
	// Code is the data plane's code, bpf/consts.h's enum fwd_method
	// (IPVS's IP_VS_CONN_F_* values, DPVS's for FULLNAT), named there
	// FWD_ + CName: checked against the object's BTF.
	Code  uint8
	CName string
	// Sync is the IP_VS_CONN_F_* method a sync message carries: FULLNAT,
	// which IPVS lacks, travels as masquerading.
	Sync uint8
	// Rewrites: addresses are rewritten, so the reals' replies come back
	// through the director (NAT, FULLNAT). Encaps: an outer header (TUN).
	Rewrites, Encaps bool
}

// FwdMethods are the forwarding methods, by Fwd.
var FwdMethods = [...]FwdMethod{
	FwdRoute: {Column: "Route", Name: "route", Switch: "-g", Long: "gatewaying", YAML: []string{"", "dr", "g", "gatewaying"},
		LBKind: []string{"DR"}, Code: 3, CName: "DROUTE", Sync: 3},
	FwdTunnel: {Column: "Tunnel", Name: "tunnel", Switch: "-i", Long: "ipip", YAML: []string{"tun", "ipip", "i"},
		LBKind: []string{"TUN"}, Code: 2, CName: "TUNNEL", Sync: 2, Encaps: true},
	FwdMasq: {Column: "Masq", Name: "masq", Switch: "-m", Long: "masquerading", YAML: []string{"nat", "masquerading", "m"},
		LBKind: []string{"NAT"}, Code: 0, CName: "MASQ", Sync: 0, Rewrites: true},
	// As DPVS's ipvsadm prints and takes it: -b on -a and -e, --fullnat.
	FwdFullNAT: {Column: "FullNat", Name: "fullnat", Switch: "-b", Long: "fullnat", YAML: []string{"b"},
		LBKind: []string{"FNAT", "FULLNAT"}, Code: 5, CName: "FULLNAT", Sync: 0, Rewrites: true},
}

// Method is f's entry in FwdMethods (the zero FwdMethod for an unknown f).
func (f Fwd) Method() FwdMethod {
	if int(f) < len(FwdMethods) {
		return FwdMethods[f]
	}
	return FwdMethod{}
}

// String is the name ipvsadm -L prints in the Forward column.
func (f Fwd) String() string {
	if int(f) < len(FwdMethods) {
		return FwdMethods[f].Column
	}
	return "Fwd(" + strconv.Itoa(int(f)) + ")"
}

// Switch is the ipvsadm flag that selects f.
func (f Fwd) Switch() string {
	if int(f) < len(FwdMethods) {
		return FwdMethods[f].Switch
	}
	return FwdMethods[FwdRoute].Switch
}

// MarshalText writes f as route, tunnel, masq or fullnat.
func (f Fwd) MarshalText() ([]byte, error) {
	if int(f) >= len(FwdMethods) {
		return nil, fmt.Errorf("forwarding method %d unknown", f)
	}
	return []byte(FwdMethods[f].Name), nil
}

// UnmarshalText reads what MarshalText writes.
func (f *Fwd) UnmarshalText(b []byte) error {
	for i, m := range FwdMethods {
		if string(b) == m.Name {
			*f = Fwd(i)
			return nil
		}
	}
	return fmt.Errorf("forwarding method %q unknown: want %s", b, fwdList(func(m FwdMethod) []string { return []string{m.Name} }))
}

// fwdByYAML is the method a YAML file's method: names (any case).
func fwdByYAML(s string) (Fwd, bool) {
	s = strings.ToLower(s)
	for i, m := range FwdMethods {
		if s == m.Name || slices.Contains(m.YAML, s) {
			return Fwd(i), true
		}
	}
	return 0, false
}

// fwdByLBKind is the method keepalived's lb_kind names (any case).
func fwdByLBKind(s string) (Fwd, bool) {
	s = strings.ToUpper(s)
	for i, m := range FwdMethods {
		if slices.Contains(m.LBKind, s) {
			return Fwd(i), true
		}
	}
	return 0, false
}

// fwdList lists what names gives of every method, "a, b, c or d".
func fwdList(names func(FwdMethod) []string) string {
	var all []string
	for _, m := range FwdMethods {
		all = append(all, names(m)...)
	}
	if len(all) < 2 {
		return strings.Join(all, "")
	}
	return strings.Join(all[:len(all)-1], ", ") + " or " + all[len(all)-1]
}
