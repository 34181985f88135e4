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
}

var pages = []page{
	{"xipvsd", "the xipvs director: Linux Virtual Server on XDP", `\-i IFACE[,IFACE...] [options]`, []string{"--help"},
		"xipvsadm(8), ipvsadm(8), keepalived.conf(5), systemctl(1)"},
	{"xipvsadm", "administer xipvs, with ipvsadm's command line", `COMMAND [options]`, []string{"-h"},
		"xipvsd(8), ipvsadm(8)"},
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
		l = strings.ReplaceAll(l, `\`, `\e`)
		l = strings.ReplaceAll(l, "-", `\-`)
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			l = `\&` + l
		}
		b.WriteString(l + "\n")
	}
	b.WriteString(".fi\n")
	fmt.Fprintf(&b, ".SH SEE ALSO\n%s\n", p.seeAlso)
	return b.String()
}
