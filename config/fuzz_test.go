package config

import (
	"net/netip"
	"strings"
	"testing"
)

func init() {
	// Fuzzing must not ask DNS about random names.
	LookupHost = func(host string) (netip.Addr, error) {
		if host == "localhost" {
			return netip.MustParseAddr("127.0.0.1"), nil
		}
		return netip.Addr{}, errNoHost
	}
}

var errNoHost = &ParseError{Msg: "no such host"}

// Whatever the arguments, ParseArgs returns a command or an error, and a
// command it accepts re-validates.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"-A -t 192.168.0.210:80 -s rr", "-a -t 192.168.0.210:80 -r 192.168.0.175:80 -g -w 2",
		"-Lnc", "-Ln --stats --exact", "-E -f 6666 -s rr -p 3000", "-A -t 10.0.0.1:0 -p -M 24",
		"--add-mark -f 6 -t 10.0.0.1:80,443,8000-8010", "-P -t 10.0.0.1:80 -z 10.0.0.9",
		"--set 900 120 300", "-e -t 1.2.3.4:http -r localhost -i", "-b sh-port -A -t 1.1.1.1:1 -s sh",
		"-a -t 1.1.1.1:80 -r 2.2.2.2:8080 -b", "-Z -u 1.1.1.1:53", "-Sn", "-R",
		"-A -f 66 -s rr -p 360", "-E -t 1.2.3.4:http -s wlc -p", "-A -t 1.2.3.4:80 -s mh -b mh-port,mh-fallback",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		cmd, err := ParseArgs(strings.Fields(line))
		if err != nil {
			return
		}
		if cmd == nil {
			t.Fatal("nil command without error")
		}
		if (cmd.Op == OpAddDest || cmd.Op == OpAddService) && !cmd.HasService {
			t.Fatalf("%q: add without service accepted", line)
		}
		if cmd.Op == OpAddService || cmd.Op == OpEditService {
			if err := cmd.Service.Validate(); err != nil {
				t.Fatalf("%q parsed to an invalid service: %v", line, err)
			}
		}
		if cmd.Op == OpAddDest || cmd.Op == OpEditDest {
			if err := cmd.Dest.Validate(cmd.Service.ServiceKey); err != nil {
				t.Fatalf("%q parsed to an invalid real: %v", line, err)
			}
		}
	})
}

// A rules file either applies or names a line; applying never changes
// the base configuration.
func FuzzRules(f *testing.F) {
	f.Add(savedRules)
	f.Add("-C\n-A -t 1.1.1.1:80\n-a -t 1.1.1.1:80 -r 2.2.2.2\n-d -t 1.1.1.1:80 -r 2.2.2.2\n")
	f.Add("--add-mark -f 1 -t 1.1.1.1\n-A -f 1 -s sh -b sh-port\n# c\n'quoted word'")
	f.Fuzz(func(t *testing.T, rules string) {
		base := &Config{}
		lines, err := ReadRules(strings.NewReader(rules))
		if err != nil {
			return
		}
		c, err := ApplyLines(base, lines)
		if len(base.Services) != 0 || len(base.Marks) != 0 {
			t.Fatal("base changed")
		}
		if err != nil {
			if _, ok := err.(*LineError); !ok {
				t.Fatalf("error %T %v names no line", err, err)
			}
			return
		}
		for _, s := range c.Services {
			if c.Find(s.Service.ServiceKey) < 0 {
				t.Fatal("service lost")
			}
		}
	})
}

// YAML never panics; what it accepts validates.
func FuzzYAML(f *testing.F) {
	f.Add(yamlConfig)
	f.Add("services: [{tcp: 10.0.0.1:80, reals: [{addr: 10.0.0.2}]}]")
	f.Add("marks: [{mark: 1, udp: 10.0.0.1}]\ntimeouts: {udp: 5}")
	f.Fuzz(func(t *testing.T, doc string) {
		c, _, err := ParseYAML(strings.NewReader(doc))
		if err != nil {
			return
		}
		for _, s := range c.Services {
			if err := s.Service.Validate(); err != nil {
				t.Fatalf("accepted an invalid service: %v", err)
			}
			for _, d := range s.Dests {
				if err := d.Validate(s.Service.ServiceKey); err != nil {
					t.Fatalf("accepted an invalid real: %v", err)
				}
			}
		}
	})
}
