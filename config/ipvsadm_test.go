package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/xipvs/xipvs/sched"
)

func TestParseArgs(t *testing.T) {
	vs := ServiceKey{Proto: TCP, Addr: netip.MustParseAddr("192.168.0.210"), Port: 80}
	tests := []struct {
		line  string
		check func(t *testing.T, c *Command)
	}{
		{"-A -t 192.168.0.210:80 -s rr", func(t *testing.T, c *Command) {
			if c.Op != OpAddService || c.Service.ServiceKey != vs || c.Service.Scheduler != "rr" {
				t.Errorf("%+v", c)
			}
		}},
		{"--add-service --tcp-service=192.168.0.210:80 --scheduler wrr", func(t *testing.T, c *Command) {
			if c.Op != OpAddService || c.Service.ServiceKey != vs || c.Service.Scheduler != "wrr" {
				t.Errorf("%+v", c)
			}
		}},
		{"-A -t 192.168.0.210:http", func(t *testing.T, c *Command) {
			if c.Service.Port != 80 || c.Service.Scheduler != "wlc" {
				t.Errorf("port name or default scheduler: %+v", c.Service)
			}
		}},
		{"-a -t 192.168.0.210:80 -r 192.168.0.175:80 -g", func(t *testing.T, c *Command) {
			if c.Op != OpAddDest || c.Dest.Addr != netip.MustParseAddr("192.168.0.175") || c.Dest.Port != 80 || c.Dest.Fwd != FwdRoute || c.Dest.Weight != 1 {
				t.Errorf("%+v", c.Dest)
			}
		}},
		{"-a -t 192.168.0.210:80 -r 192.168.0.175 -w 3", func(t *testing.T, c *Command) {
			if c.Dest.Port != 80 || c.Dest.Weight != 3 {
				t.Errorf("port defaults to the virtual port: %+v", c.Dest)
			}
		}},
		{"-a -t 202.99.59.110:80 -r 10.1.1.2:8080 -m -w 1", func(t *testing.T, c *Command) {
			if c.Dest.Fwd != FwdMasq || c.Dest.Port != 8080 {
				t.Errorf("%+v", c.Dest)
			}
		}},
		{"-e -t 192.168.0.210:80 -r 192.168.0.175 -i", func(t *testing.T, c *Command) {
			if c.Op != OpEditDest || c.Dest.Fwd != FwdTunnel {
				t.Errorf("%+v", c)
			}
		}},
		// The seeds' line: ipvsadm silently gives a DR real the virtual port.
		{"-a -t 192.168.0.220:443 -r 192.168.0.20:80 -g", func(t *testing.T, c *Command) {
			if c.Dest.Port != 443 {
				t.Errorf("DR real port: got %d, want the virtual port 443", c.Dest.Port)
			}
		}},
		{"-A -t 192.168.0.210:80 -s sh -b sh-fallback,sh-port", func(t *testing.T, c *Command) {
			if b, err := sched.ParseFlags(c.Service.Scheduler, c.Service.SchedFlags); err != nil || b != sched.FlagFallback|sched.FlagPort {
				t.Errorf("flags %v: %v %v", c.Service.SchedFlags, b, err)
			}
		}},
		{"-E -f 6666 -s rr -p 3000", func(t *testing.T, c *Command) {
			if c.Op != OpEditService || c.Service.FWMark != 6666 || !c.Service.Persistent || c.Service.Timeout != 3000 || c.Service.Netmask.Bits() != 32 {
				t.Errorf("%+v", c.Service)
			}
		}},
		{"-A -t 192.168.0.210:0 -p -M 255.255.255.0", func(t *testing.T, c *Command) {
			if c.Service.Port != 0 || c.Service.Timeout != DefaultTimeout || c.Service.Netmask.Bits() != 24 {
				t.Errorf("%+v", c.Service)
			}
		}},
		{"--add-mark -f 6666 -t 192.168.0.220:80,443,8000-8010", func(t *testing.T, c *Command) {
			a := netip.MustParseAddr("192.168.0.220")
			want := []MarkRule{{6666, TCP, a, 80, 80}, {6666, TCP, a, 443, 443}, {6666, TCP, a, 8000, 8010}}
			if c.Op != OpAddMark || len(c.Marks) != 3 || c.Marks[0] != want[0] || c.Marks[1] != want[1] || c.Marks[2] != want[2] {
				t.Errorf("%+v", c.Marks)
			}
		}},
		{"--add-mark -f 7 -u 10.0.0.1", func(t *testing.T, c *Command) {
			if len(c.Marks) != 1 || !c.Marks[0].AllPorts() || c.Marks[0].Proto != UDP {
				t.Errorf("%+v", c.Marks)
			}
		}},
		{"--del-mark -f 7", func(t *testing.T, c *Command) {
			if c.Op != OpDelMark || c.Service.FWMark != 7 || len(c.Marks) != 0 {
				t.Errorf("%+v", c)
			}
		}},
		{"-Ln", func(t *testing.T, c *Command) {
			if c.Op != OpList || !c.List.Numeric {
				t.Errorf("%+v", c)
			}
		}},
		{"-Lnc", func(t *testing.T, c *Command) {
			if c.Op != OpList || !c.List.Numeric || !c.List.Conn {
				t.Errorf("%+v", c)
			}
		}},
		{"-L -n --rate", func(t *testing.T, c *Command) {
			if !c.List.Rate || !c.List.Numeric {
				t.Errorf("%+v", c)
			}
		}},
		{"", func(t *testing.T, c *Command) {
			if c.Op != OpList {
				t.Errorf("bare ipvsadm lists: %+v", c)
			}
		}},
		{"--set 900 120 300", func(t *testing.T, c *Command) {
			if c.Op != OpSetTimeout || c.Timeouts != [3]int{900, 120, 300} {
				t.Errorf("%+v", c)
			}
		}},
		{"-A -t 192.168.0.210:80 -s rr -p", func(t *testing.T, c *Command) {
			if !c.Service.Persistent || c.Service.Timeout != 300 || c.Service.Netmask.Bits() != 32 {
				t.Errorf("%+v", c.Service)
			}
		}},
		{"-A -t 192.168.0.210:0 -p 360 -M 255.255.255.0", func(t *testing.T, c *Command) {
			if c.Service.Timeout != 360 || c.Service.Netmask.Bits() != 24 {
				t.Errorf("%+v", c.Service)
			}
		}},
		{"-A -f 66 -s rr -p", func(t *testing.T, c *Command) {
			if c.Service.FWMark != 66 {
				t.Errorf("%+v", c.Service)
			}
		}},
		{"-D -t 192.168.0.210:80", func(t *testing.T, c *Command) {
			if c.Op != OpDelService {
				t.Errorf("%+v", c)
			}
		}},
		{"-C", func(t *testing.T, c *Command) {
			if c.Op != OpClear {
				t.Errorf("%+v", c)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.line, func(t *testing.T) {
			c, err := ParseArgs(strings.Fields(tc.line))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestParseArgsErrors(t *testing.T) {
	for _, line := range []string{
		"-A -D -t 1.2.3.4:80",
		"-A",
		"-a -t 1.2.3.4:80",
		"-A -t nothost:80",
		"-A -t 1.2.3.4:80 -u 1.2.3.4:80",
		"-a -t 1.2.3.4:80 -r 5.6.7.8 -w -1",
		"-a -t 1.2.3.4:80 -r 5.6.7.8 -w 70000",
		"-a -t 1.2.3.4:80 -r 5.6.7.8 -g -m",
		"-A -t 1.2.3.4:0 -s rr",
		"-A -t 1.2.3.4:80 -p 0",
		"-A -t 1.2.3.4:80 -p 10 -M 255.0.255.0",
		"-Q",
		"--bogus",
		"--set 1 2",
		"-A -t 1.2.3.4:80 extra",
		"-A -t 1.2.3.4:80 -s rr -b sh-port",
		"-A -t 1.2.3.4:80 -s sh -b sh-nope",
		"--add-mark -t 1.2.3.4:80",
		"--add-mark -f 1",
		"--add-mark -f 1 -t 1.2.3.4:90-80",
		"--add-mark -f 1 -t 1.2.3.4:0",
		"--add-mark -f 1 -t 1.2.3.4:80,",
	} {
		if c, err := ParseArgs(strings.Fields(line)); err == nil {
			t.Errorf("%q accepted: %+v", line, c)
		} else {
			var pe *ParseError
			if !errors.As(err, &pe) && !errors.Is(err, ErrInvalid) {
				t.Errorf("%q: error of unexpected type %T: %v", line, err, err)
			}
		}
	}
}

// TestUnknownSchedulerRefused: a scheduler name is checked by the
// config package (through sched), so xipvsadm's local check of a rules
// file refuses it before asking xipvsd.
func TestUnknownSchedulerRefused(t *testing.T) {
	if _, err := ParseArgs([]string{"-A", "-t", "192.0.2.1:80", "-s", "wlcx"}); !errors.Is(err, ErrNoScheduler) {
		t.Errorf("-s wlcx: %v, want %v", err, ErrNoScheduler)
	}
	lines := []Line{{N: 1, Args: []string{"-A", "-t", "192.0.2.1:80", "-s", "rr"}}, {N: 2, Args: []string{"-E", "-t", "192.0.2.1:80", "-s", "nosuch"}}}
	err := CheckLines(lines)
	var le *LineError
	if !errors.As(err, &le) || le.N != 2 || !errors.Is(err, ErrNoScheduler) {
		t.Errorf("CheckLines: %v, want line 2: %v", err, ErrNoScheduler)
	}
	if _, err := ParseArgs([]string{"-A", "-t", "192.0.2.1:80", "-s", "rr", "-b", "sh-port"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("rr with sh-port: %v, want invalid", err)
	}
}

// TestSetTimeoutRange: a timeout the kernel would refuse (more than
// INT_MAX jiffies) is a command-line error, not silently ignored.
func TestSetTimeoutRange(t *testing.T) {
	if _, err := ParseArgs([]string{"--set", "9999999999", "1", "1"}); err == nil {
		t.Error("--set 9999999999 1 1 accepted")
	}
	c, err := ParseArgs([]string{"--set", "2147483", "0", "5"})
	if err != nil || c.Timeouts != [3]int{2147483, 0, 5} {
		t.Errorf("--set 2147483 0 5: %+v, %v", c, err)
	}
}

// TestParseArgsIPv6: ipvsadm's IPv6 syntax (bracketed addresses, -f -6,
// -M as a prefix length, --add-laddr -z with an IPv6 address).
func TestParseArgsIPv6(t *testing.T) {
	vip := netip.MustParseAddr("2001:db8::1")
	tests := []struct {
		line  string
		check func(t *testing.T, c *Command)
	}{
		{"-A -t [2001:db8::1]:80 -s rr", func(t *testing.T, c *Command) {
			k := c.Service.ServiceKey
			if k.Addr != vip || k.Port != 80 || k.Proto != TCP || !k.IsV6() || k.V6 {
				t.Errorf("%+v", k)
			}
		}},
		{"-A -u [2001:db8::1]:53 -s sh", func(t *testing.T, c *Command) {
			if c.Service.Proto != UDP || c.Service.Port != 53 || c.Service.Addr != vip {
				t.Errorf("%+v", c.Service)
			}
		}},
		{"-a -t [2001:db8::1]:80 -r [2001:db8::11]:8080 -m -w 3", func(t *testing.T, c *Command) {
			if c.Dest.Addr != netip.MustParseAddr("2001:db8::11") || c.Dest.Port != 8080 || c.Dest.Weight != 3 {
				t.Errorf("%+v", c.Dest)
			}
		}},
		{"-a -t [2001:db8::1]:80 -r 2001:db8::11 -g", func(t *testing.T, c *Command) {
			if c.Dest.Addr != netip.MustParseAddr("2001:db8::11") || c.Dest.Port != 80 {
				t.Errorf("bare IPv6 real takes the virtual port: %+v", c.Dest)
			}
		}},
		{"-A -t [2001:db8::1]:80 -p 600", func(t *testing.T, c *Command) {
			if c.Service.Netmask != netip.PrefixFrom(netip.IPv6Unspecified(), 128) || c.Service.Timeout != 600 {
				t.Errorf("IPv6 default mask /128: %+v", c.Service)
			}
		}},
		{"-A -t [2001:db8::1]:80 -p -M 64", func(t *testing.T, c *Command) {
			if c.Service.Netmask != netip.PrefixFrom(netip.IPv6Unspecified(), 64) {
				t.Errorf("-M 64: %v", c.Service.Netmask)
			}
		}},
		// -M before -t: read once the family is known.
		{"-A -p -M 48 -t [2001:db8::1]:0", func(t *testing.T, c *Command) {
			if c.Service.Netmask.Bits() != 48 || !c.Service.Netmask.Addr().Is6() {
				t.Errorf("-M 48: %v", c.Service.Netmask)
			}
		}},
		{"-A -f 5 -6 -s rr", func(t *testing.T, c *Command) {
			if c.Service.FWMark != 5 || !c.Service.V6 || !c.Service.IsV6() {
				t.Errorf("%+v", c.Service)
			}
		}},
		{"-A -6 -f 5 -s rr -p", func(t *testing.T, c *Command) {
			if !c.Service.IsV6() || c.Service.Netmask.Bits() != 128 {
				t.Errorf("-6 before -f: %+v", c.Service)
			}
		}},
		{"-a -f 5 -6 -r [2001:db8::11] -g", func(t *testing.T, c *Command) {
			if !c.Service.IsV6() || c.Dest.Addr != netip.MustParseAddr("2001:db8::11") {
				t.Errorf("%+v %+v", c.Service, c.Dest)
			}
		}},
		{"--add-laddr -t [2001:db8::1]:80 -z 2001:db8:1::100", func(t *testing.T, c *Command) {
			if c.Op != OpAddLaddr || c.LocalAddr != netip.MustParseAddr("2001:db8:1::100") {
				t.Errorf("%+v", c)
			}
		}},
		{"--add-mark -f 5 -t [2001:db8::1]:80,443", func(t *testing.T, c *Command) {
			if len(c.Marks) != 2 || c.Marks[0].Addr != vip || c.Marks[1].PortLo != 443 {
				t.Errorf("%+v", c.Marks)
			}
			if got := c.Marks[0].String(); got != "-f 5 -t [2001:db8::1]:80" {
				t.Errorf("rule renders as %q", got)
			}
		}},
		{"--add-mark -f 5 -u 2001:db8::1", func(t *testing.T, c *Command) {
			if len(c.Marks) != 1 || c.Marks[0].Addr != vip || !c.Marks[0].AllPorts() {
				t.Errorf("%+v", c.Marks)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.line, func(t *testing.T) {
			c, err := ParseArgs(strings.Fields(tc.line))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
	for _, line := range []string{
		"-a -t [2001:db8::1]:80 -r 10.0.0.1 -g",         // mixed families
		"-a -t 10.0.0.1:80 -r [2001:db8::11]:80 -m",     // mixed families
		"-a -t 10.0.0.1:80 -r [2001:db8::11]:80 -i",     // IPVS allows it; xipvs does not
		"-A -t [2001:db8::1]:80 -p -M 0",                // ipvsadm: 1..128
		"-A -t [2001:db8::1]:80 -p -M 129",              //
		"-A -t [2001:db8::1]:80 -p -M 255.255.255.0",    // a dotted mask is IPv4's
		"-A -t [2001:db8::1]:80 -6",                     // -6 without -f
		"-A -t [ff02::1]:80",                            // multicast
		"-A -t [::]:80",                                 // unspecified
		"--add-laddr -t [2001:db8::1]:80 -z 10.0.0.9",   // laddr of the other family
		"--add-laddr -t 10.0.0.1:80 -z 2001:db8:1::100", //
		"-A -t [fe80::1%eth0]:80",                       // zoned
	} {
		if c, err := ParseArgs(strings.Fields(line)); err == nil {
			t.Errorf("%q accepted: %+v", line, c)
		}
	}
}
