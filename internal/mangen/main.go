// Command mangen writes the man pages of xipvsd(8) and xipvsadm(8) from
// the binaries' own --help text, so that the options are documented in
// one place (the flag definitions and xipvsadm's usage) and never twice.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

type page struct {
	name, summary, synopsis string
	helpArgs                []string
	seeAlso                 string
	// files, exitStatus and examples are the FILES, EXIT STATUS and
	// EXAMPLES sections: term and text pairs.
	files, exitStatus, examples [][2]string
}

var pages = []page{
	{"xipvsd", "the xipvs director: Linux Virtual Server on XDP", `\-i IFACE[,IFACE...] [options]`, []string{"--help"},
		"xipvsadm(8), ipvsadm(8), keepalived.conf(5), systemctl(1)",
		[][2]string{
			{"/run/xipvs/xipvsd.sock", "the control socket xipvsadm talks to (--socket, XIPVS_SOCKET)"},
			{"/run/xipvs/state.json", "the configuration as last acknowledged, which a restart adopts (--state-file)"},
			{"/sys/fs/bpf/xipvs", "the pinned maps and XDP links: connections survive a restart (--pin-dir; xipvsd --cleanup removes them)"},
			{"/etc/xipvs/xipvs.yaml", "the configuration file the packaged unit passes (--config)"},
		},
		[][2]string{
			{"0", "stopped by SIGTERM or SIGINT, or --dry-run, --cleanup or --version succeeded"},
			{"1", "a failure: an interface, the BPF program, the configuration file, the pinned maps"},
			{"2", "a usage error: an unknown or bad option, no interface"},
			{"3", "--dry-run: a keepalived.conf loads, but some of its lines cannot be honoured (they are listed)"},
		},
		[][2]string{
			{"xipvsd -i eth0", "direct on eth0; configure with xipvsadm"},
			{"xipvsd -i eth0,eth1 --config /etc/xipvs/xipvs.yaml", "apply a YAML file at start and on SIGHUP or \"xipvsadm reload\""},
			{"xipvsd -i eth0 --config /etc/keepalived/keepalived.conf --dry-run", "list what of a keepalived.conf is used, ignored and not honoured"},
			{"xipvsd --cleanup", "detach XDP and remove the pins and the saved state"},
		}},
	{"xipvsadm", "administer xipvs, with ipvsadm's command line", `COMMAND [options]`, []string{"-h"},
		"xipvsd(8), ipvsadm(8)",
		[][2]string{
			{"/run/xipvs/xipvsd.sock", "xipvsd's control socket (XIPVS_SOCKET names another)"},
			{"/etc/services", "port names, listed unless -n"},
		},
		[][2]string{
			{"0", "done"},
			{"1", "xipvsd refused the command, or could not be reached (the message says why)"},
			{"2", "the command line does not parse (nothing was sent)"},
		},
		[][2]string{
			{"xipvsadm -A -t 192.0.2.1:80 -s wlc", "add a virtual service"},
			{"xipvsadm -a -t 192.0.2.1:80 -r 10.0.0.11 -g -w 2", "add a real server by direct routing"},
			{"xipvsadm -Ln --stats", "list the services with their counters"},
			{"xipvsadm -Lnc | head", "the first connections: the listing streams, whatever the table holds"},
			{"xipvsadm -L --json", "the services, reals, counters and health as JSON"},
			{"xipvsadm -S -n > rules; xipvsadm -R < rules", "save and restore, all or nothing"},
		}},
}

func main() {
	bin := flag.String("bin", "bin", "directory holding xipvsd and xipvsadm")
	out := flag.String("out", "build/man", "directory to write xipvsd.8 and xipvsadm.8 to")
	version := flag.String("version", "0.1.0", "the version the pages name")
	flag.Parse()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "mangen:", err)
		os.Exit(1)
	}
	for _, p := range pages {
		cmd := exec.Command(filepath.Join(*bin, p.name), p.helpArgs...)
		var help bytes.Buffer
		cmd.Stdout, cmd.Stderr = &help, &help
		_ = cmd.Run() // flag's -help exits 0 or 2 depending on the program; the text is what counts
		if help.Len() == 0 {
			fmt.Fprintf(os.Stderr, "mangen: %s %s printed nothing\n", p.name, strings.Join(p.helpArgs, " "))
			os.Exit(1)
		}
		if err := os.WriteFile(filepath.Join(*out, p.name+".8"), []byte(roff(p, *version, help.String())), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "mangen:", err)
			os.Exit(1)
		}
	}
}

// roff turns a help text into a man page: the text kept as written
// (no fill), escaped for roff.
func roff(p page, version, help string) string {
	var b strings.Builder
	fmt.Fprintf(&b, ".TH %s 8 \"\" \"xipvs %s\" \"System Administration\"\n", strings.ToUpper(p.name), version)
	fmt.Fprintf(&b, ".SH NAME\n%s \\- %s\n", p.name, p.summary)
	fmt.Fprintf(&b, ".SH SYNOPSIS\n.B %s\n%s\n", p.name, p.synopsis)
	b.WriteString(".SH DESCRIPTION\n.nf\n")
	for _, l := range strings.Split(strings.TrimRight(help, "\n"), "\n") {
		b.WriteString(escape(l) + "\n")
	}
	b.WriteString(".fi\n")
	for _, sec := range []struct {
		title string
		items [][2]string
	}{{"FILES", p.files}, {"EXIT STATUS", p.exitStatus}, {"EXAMPLES", p.examples}} {
		fmt.Fprintf(&b, ".SH %s\n", sec.title)
		for _, it := range sec.items {
			fmt.Fprintf(&b, ".TP\n.B %s\n%s\n", escape(it[0]), escape(it[1]))
		}
	}
	fmt.Fprintf(&b, ".SH SEE ALSO\n%s\n", p.seeAlso)
	return b.String()
}

// escape makes text safe in a roff line.
func escape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}
