// Command xipvsadm administers xipvsd with ipvsadm's arguments and output
// formats: every ipvsadm line works with xipvsadm in its place.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/internal/api"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit status, as ipvsadm:
// 0 success, 1 a refused operation, 2 a bad command line.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	socket := ""
	// --socket PATH is ours, not ipvsadm's; take it out first.
	var rest []string
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--socket" && i+1 < len(args):
			socket = args[i+1]
			i++
		case len(args[i]) > 9 && args[i][:9] == "--socket=":
			socket = args[i][9:]
		default:
			rest = append(rest, args[i])
		}
	}
	if len(rest) > 0 && rest[0] == "realserver" {
		return realserverMain(rest[1:], stdout, stderr)
	}
	if len(rest) == 2 && rest[0] == "completion" && (rest[1] == "bash" || rest[1] == "zsh") {
		if rest[1] == "zsh" {
			zshCompletion(stdout)
		} else {
			bashCompletion(stdout)
		}
		return 0
	}
	if len(rest) == 1 && rest[0] == "reload" {
		if err := api.NewClient(api.SocketPath(socket)).Reload(); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
	cmd, err := config.ParseArgs(rest)
	if err != nil {
		var pe *config.ParseError
		if errors.As(err, &pe) {
			fmt.Fprintf(stderr, "%s\n", pe.Msg)
			fmt.Fprintln(stderr, "Try `xipvsadm -h' or 'xipvsadm --help' for more information.")
			return 2
		}
		fmt.Fprintln(stderr, err)
		if errors.Is(err, config.ErrNoScheduler) {
			return 1 // refused, as by the kernel
		}
		return 2
	}
	switch cmd.Op {
	case config.OpHelp:
		fmt.Fprint(stdout, helpText)
		return 0
	case config.OpVersion:
		fmt.Fprintln(stdout, "xipvsadm v0.1.0 (compatible with ipvsadm v1.31)")
		return 0
	}
	c := api.NewClient(api.SocketPath(socket))
	if cmd.Op == config.OpRestore {
		return restore(c, stdin, stderr)
	}
	if err := execute(c, cmd, stdout); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

func execute(c *api.Client, cmd *config.Command, out io.Writer) error {
	k := cmd.Service.ServiceKey
	switch cmd.Op {
	case config.OpAddService:
		return c.AddService(cmd.Service)
	case config.OpEditService:
		return c.EditService(cmd.Service)
	case config.OpDelService:
		return c.DeleteService(k)
	case config.OpClear:
		return c.Clear()
	case config.OpAddDest:
		return c.AddDest(k, cmd.Dest)
	case config.OpEditDest:
		return c.EditDest(k, cmd.Dest)
	case config.OpDelDest:
		return c.DeleteDest(k, cmd.Dest)
	case config.OpAddMark:
		return c.AddMarks(cmd.Marks)
	case config.OpDelMark:
		return c.DeleteMarks(cmd.Service.FWMark, cmd.Marks)
	case config.OpGetMark:
		rules, err := c.Marks()
		if err != nil {
			return err
		}
		printMarks(out, rules, cmd.Service.FWMark)
		return nil
	case config.OpAddLaddr:
		return c.AddLocalAddr(k, cmd.LocalAddr)
	case config.OpDelLaddr:
		return c.DeleteLocalAddr(k, cmd.LocalAddr)
	case config.OpGetLaddr:
		all, err := c.LocalAddrs()
		if err != nil {
			return err
		}
		var only *config.ServiceKey
		if cmd.HasService {
			only = &k
		}
		printLaddrs(out, all, only)
		return nil
	case config.OpZero:
		if cmd.HasService {
			return c.Zero(&k)
		}
		return c.Zero(nil)
	case config.OpSave:
		svcs, err := c.Services()
		if err != nil {
			return err
		}
		marks, err := c.Marks()
		if err != nil {
			return err
		}
		laddrs, err := c.LocalAddrs()
		if err != nil {
			return err
		}
		if err := printRules(out, svcs, marks, laddrs, cmd.List.Numeric, cmd.List.NoSort); err != nil {
			return err
		}
		ds, err := c.Daemons()
		if err != nil {
			return err
		}
		printDaemonRules(out, ds)
		return nil
	case config.OpSetTimeout:
		return c.SetTimeouts(api.Timeouts{TCP: cmd.Timeouts[0], TCPFin: cmd.Timeouts[1], UDP: cmd.Timeouts[2]})
	case config.OpStartDaemon:
		return c.StartDaemon(cmd.Daemon)
	case config.OpStopDaemon:
		return c.StopDaemon(cmd.Daemon.Role)
	case config.OpList:
		if cmd.List.Daemon {
			ds, err := c.Daemons()
			if err != nil {
				return err
			}
			printDaemons(out, ds)
			return nil
		}
		if cmd.List.Timeout {
			t, err := c.Timeouts()
			if err != nil {
				return err
			}
			printTimeouts(out, t)
			return nil
		}
		if cmd.List.BGP {
			st, err := c.BGP()
			if err != nil {
				return err
			}
			printBGP(out, st)
			return nil
		}
		if cmd.List.Health {
			svcs, err := c.Services()
			if err != nil {
				return err
			}
			return printHealth(out, svcs, cmd.List.Numeric)
		}
		if cmd.List.JSON {
			return listJSON(out, c, cmd.List, cmd.HasService, k)
		}
		if cmd.List.Conn {
			if cmd.List.Numeric {
				return streamConns(out, c)
			}
			return printConns(out, cmd.List, c.WalkConns)
		}
		svcs, err := c.Services()
		if err != nil {
			return err
		}
		info, err := c.Info()
		if err != nil {
			return err
		}
		var only *config.ServiceKey
		if cmd.HasService {
			only = &k
		}
		return printList(out, info.ConnTableSize, svcs, cmd.List, only)
	}
	return fmt.Errorf("%s is not implemented yet", cmd.Op)
}

// restore reads a rules file from stdin (ipvsadm -R) and has xipvsd
// apply it all or nothing.
func restore(c *api.Client, stdin io.Reader, stderr io.Writer) int {
	lines, err := config.ReadRules(stdin)
	if err != nil {
		fmt.Fprintf(stderr, "restore: %v\n", err)
		return 1
	}
	// Parse here first: a bad line is reported without asking xipvsd.
	if err := config.CheckLines(lines); err != nil {
		fmt.Fprintf(stderr, "restore: %v; nothing applied\n", err)
		return 2
	}
	if err := c.Restore(lines); err != nil {
		fmt.Fprintf(stderr, "restore: %v; nothing applied\n", err)
		return 1
	}
	return 0
}

const helpText = `xipvsadm v0.1.0 -- ipvsadm for xipvsd (Linux Virtual Server on XDP)
Usage:
  xipvsadm -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags] [-j enable|disable]
  xipvsadm -D virtual-service
  xipvsadm -C
  xipvsadm -R
  xipvsadm -S [-n]
  xipvsadm -a|e virtual-service -r server-address [-g|-i|-m|-b] [-w weight] [-x upper] [-y lower]
  xipvsadm -d virtual-service -r server-address
  xipvsadm -L|l [virtual-service] [options]
  xipvsadm -Z [virtual-service]
  xipvsadm --set tcp tcpfin udp
  xipvsadm --add-mark -f mark -t|-u address[:ports]
  xipvsadm --del-mark -f mark [-t|-u address[:ports]]
  xipvsadm --get-mark [-f mark]
  xipvsadm --add-laddr|--del-laddr -z local-address virtual-service
  xipvsadm --get-laddr [virtual-service]
  xipvsadm --start-daemon state [--mcast-interface interface] [--syncid sid]
           [--sync-maxlen length] [--mcast-group group] [--mcast-port port] [--mcast-ttl ttl]
  xipvsadm --stop-daemon state
  xipvsadm realserver up --vip VIP[,VIP...] --mode dr|tun [--interface DEV] [--decap xdp|tunl0]
  xipvsadm realserver down
  xipvsadm reload                 have xipvsd re-read its --config file (as SIGHUP)
  xipvsadm completion bash|zsh    print bash or zsh completion for xipvsadm
  xipvsadm -h

Commands:
Either long or short options are allowed.
  --add-service     -A        add virtual service with options
  --edit-service    -E        edit virtual service with options
  --delete-service  -D        delete virtual service
  --clear           -C        clear the whole table
  --restore         -R        restore rules from stdin (ipvsadm-save format);
                              all or nothing: a bad line changes nothing
  --save            -S        save rules to stdout
  --add-server      -a        add real server with options
  --edit-server     -e        edit real server with options
  --delete-server   -d        delete real server
  --list            -L|-l     list the table
  --zero            -Z        zero counters in a service or all services
  --set tcp tcpfin udp        set connection timeout values
  --start-daemon              start connection sync daemon (state: master or backup)
  --stop-daemon               stop connection sync daemon
  --add-mark                  bind ports of a VIP to a firewall mark (port group)
  --del-mark                  remove port-group bindings (all of the mark without -t/-u)
  --get-mark                  list port-group bindings
  --add-laddr       -P        add a FULLNAT local address to a service
  --del-laddr       -Q        remove a FULLNAT local address
  --get-laddr       -G        list FULLNAT local addresses
  --help            -h        display this help message

virtual-service:
  --tcp-service|-t  service-address   service-address is host[:port]
  --udp-service|-u  service-address   service-address is host[:port]
                                      (IPv6: [2001:db8::1]:80)
  --fwmark-service|-f fwmark          fwmark is an integer greater than zero;
                                      its ports are bound with --add-mark
  --ipv6         -6                   with -f: an IPv6 firewall-mark service

Options:
  --scheduler    -s scheduler         one of rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh|twos,
                                      the default scheduler is wlc.
  --persistent   -p [timeout]         persistent service (default 300 seconds)
  --netmask      -M netmask           persistent granularity mask (default /32;
                                      IPv6: a prefix length, default 128)
  --sched-flags  -b flags             scheduler flags, comma separated:
                                      sh-fallback,sh-port (sh), mh-fallback,mh-port (mh),
                                      flag-1,flag-2,flag-3
  --real-server  -r server-address    server-address is host (and port)
  --gatewaying   -g                   gatewaying (direct routing) (default)
  --ipip         -i                   ipip encapsulation (tunneling)
  --masquerading -m                   masquerading (NAT)
  --fullnat      -b                   full NAT (on -a/-e; on -A/-E -b is --sched-flags):
                                      source becomes a local address (-z), the
                                      client's address travels in a TOA option
  --laddr        -z local-address     FULLNAT local address (--add-laddr, --del-laddr)
  --weight       -w weight            capacity of real server (0 = quiesce)
  --u-threshold  -x uthreshold        upper threshold of connections
  --l-threshold  -y lthreshold        lower threshold of connections
  --numeric      -n                   numeric output of addresses and ports
  --connection   -c                   output of current IPVS connections
  --timeout                           output of timeout (tcp tcpfin udp)
  --stats                             output of statistics information
  --rate                              output of rate information
  --exact                             expand numbers (display exact values)
  --thresholds                        output of thresholds information
  --persistent-conn                   output of persistent connection info
  --nosort                            disable sorting output of service/server entries
  --sort                              does nothing, for backwards compatibility
  --ops          -o                   one-packet scheduling (refused: not supported yet)
  --synproxy     -j enable|disable    SYN proxy for the service (DPVS's switch): the director
                                      answers SYNs with SYN cookies and opens a connection to a
                                      real only for a client that completes the handshake; -t
                                      services with NAT (-m) or FULLNAT (-b) reals
  --tun-type     ipip                 accepted on -a/-e -i; the only tunnel type
  --socket PATH                       xipvsd's control socket (default
                                      $XIPVS_SOCKET or /run/xipvs/xipvsd.sock)

Port groups (firewall-mark services):
  LVS groups ports with an iptables MARK rule in the mangle table and a -f
  service. XDP sees packets before netfilter, so xipvs binds the ports
  itself; the ports are a comma list of ports, names and LO-HI ranges, and
  no ports means every port of the address. For example, for
    iptables -t mangle -A PREROUTING -d 192.168.0.220 -p tcp \
        -m multiport --dports 80,443 -j MARK --set-mark 6666
  run
    xipvsadm --add-mark -f 6666 -t 192.168.0.220:80,443
  and then the usual -A -f 6666 / -a -f 6666 lines.

Forwarding methods:
  -g  the real server has the VIP on lo and sits on the director's segment;
      only MAC addresses change. Replies go straight to the client.
  -i  the packet is wrapped in IP-in-IP (IPv6 in IPv6 for an IPv6 service)
      to the real server, which may be routed; replies go straight to the
      client. Prepare the real server with 'xipvsadm realserver up --mode
      tun' (no ipip or ip6_tunnel module needed).
  -m  destination rewritten (port mapping allowed); the real server's
      gateway must be the director, which rewrites the replies back.
  -b  source and destination rewritten: the real server sees a local
      address (--add-laddr) and needs no route change.

Real servers (run on the real server, as root):
  realserver up    VIP/32 on lo, arp_ignore=1 and arp_announce=2 (all, lo);
                   an IPv6 VIP as a /128 on lo (Linux never advertises a
                   lo address on another interface: no sysctl needed);
                   and for tun the decapsulation: an XDP program on
                   --interface (default: the default route's) that strips
                   the outer header (IPv4 and IPv6), or --decap tunl0 for
                   the kernel device (IPv4 only).
                   Idempotent; what it changed is recorded.
  realserver down  restores exactly what up changed.

Health checks (xipvs; keepalived's checkers built in), on -A/-E for every
real of the service, on -a/-e for one real (replacing the service's):
  --check tcp|http|https|udp|exec|none   none: do not check this real
  --check-port N        port to check (default: the real's)
  --check-path PATH     http(s): path (default /)
  --check-status N      http(s): expected status (default 200), or codes and
                        ranges: 200,300-399
  --check-body TEXT     http(s): text the body must contain
  --check-send TEXT     udp: datagram to send (default a newline)
  --check-expect TEXT   udp: text the answer must contain (default: any answer)
  --check-exec CMD      exec: /bin/sh -c CMD, exit 0 is healthy
                        ($XIPVS_REAL_ADDR, $XIPVS_REAL_PORT are set)
  --check-digest MD5    http/https: the body's MD5 in hex (keepalived's digest)
  --check-start-down    a new real takes no flows before its first check passes
                        (keepalived's alpha)
  --check-interval S    seconds between checks (default 2)
  --check-timeout S     seconds a check may take (default 1)
  --rise N --fall N     successes to restore, failures to fail (default 2, 3)
On -A/-E:
  --on-failure quiesce|remove   a failing real gets weight 0 (default; its
                        established connections go on) or leaves scheduling
  --sorry-server ADDR[:PORT]    takes new flows while every real fails
  --sorry-method dr|tun|nat|fullnat   (default dr)
  xipvsadm -L --health  lists each real's state, since when, and why.

Scale-out (xipvsd --bgp-* or the bgp: section of its YAML file):
  xipvsadm -L --bgp     lists the BGP sessions and each VIP's route:
                        announced while a service of it has a healthy real.

IPv6 services take DR, TUN, NAT and FULLNAT reals of their own family, and
persistence; the SYN proxy (-j) on an IPv6 service is refused as not built yet.

Connection sync (IPVS's sync protocol version 1, multicast; kernel LVS
directors can be masters or backups next to xipvs): --mcast-interface
(required), --syncid (default 0: a backup takes any), --sync-maxlen (default
the interface's MTU - 28), --mcast-group 224.0.0.81, --mcast-port 8848,
--mcast-ttl 1; -L --daemon lists them. A master and a backup may run at once.

Not supported (refused with the reason): --pe (SIP persistence), -q (SCTP),
--tun-type gue|gre and its --tun-* options, -o.

Statistics: packets and bytes toward each real are counted per CPU in XDP;
out-counters are replies through the director (NAT, FULLNAT; 0 in DR and
TUN, as in IPVS). Rates are IPVS's estimator: 2 s samples, smoothed 1/4.

Exit status: 0 success, 1 operation refused by xipvsd (message on stderr),
2 bad command line.
`
