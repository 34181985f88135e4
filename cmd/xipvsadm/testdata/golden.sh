#!/bin/bash
# Writes the --stats, --rate, --exact, --thresholds, --persistent-conn and
# -S golden files with the shell's printf and ipvsadm 1.31's C format
# strings (print_title, print_service_entry, print_largenum), independent
# of xipvsadm's Go code. The data is format_test.go's fixture: keep them
# in step. Run from this directory: bash golden.sh
set -euo pipefail

exact=0
largenum() { # print_largenum
	local v=$1
	if [ $exact = 1 ]; then
		local w=$(( ${#v} <= 8 ? 9 : ${#v} + 1 ))
		printf "%*s" $w "$v"
	elif [ "$v" -lt 100000000 ]; then printf "%9d" "$v"
	elif [ "$v" -lt 1000000000 ]; then printf "%8dK" $((v / 1000))
	elif [ "$v" -lt 100000000000 ]; then printf "%8dM" $((v / 1000000))
	elif [ "$v" -lt 100000000000000 ]; then printf "%8dG" $((v / 1000000000))
	else printf "%8dT" $((v / 1000000000000)); fi
}
head() { printf "IP Virtual Server version 1.2.1 (size=4096)\n"; }
stat_title() { printf "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n" "Prot LocalAddress:Port" "$@"; }
svc5() { printf "%-33s" "$1"; shift; for v in "$@"; do largenum $v; done; printf "\n"; }
dst5() { printf "  -> %-28s" "$1"; shift; for v in "$@"; do largenum $v; done; printf "\n"; }
rate_dst() { printf "  -> %-28s %8u %8u %8u" "$1" $2 $3 $4; largenum $5; largenum $6; printf "\n"; }

# Fixture: TCP 10.0.0.100:80 wrr with 10.0.0.11:80 (Route, w 3, 12/345
# conns, thresholds 1000/800, 7 templates) and 10.0.0.12:8080 (Masq, w 0);
# UDP 10.0.0.100:53 rr with 10.0.0.12:53 (Tunnel).
stats() {
	head; stat_title Conns InPkts OutPkts InBytes OutBytes
	svc5 "TCP  10.0.0.100:80" 123456789 99999999 0 123456789012 5
	dst5 "10.0.0.11:80" 123456000 99999000 0 123456000000 5
	dst5 "10.0.0.12:8080" 789 999 0 789012 0
	svc5 "UDP  10.0.0.100:53" 42 42 0 5376 0
	dst5 "10.0.0.12:53" 42 42 0 5376 0
}
stats > stats.golden
exact=1; stats > stats-exact.golden; exact=0

{
	head; stat_title CPS InPPS OutPPS InBPS OutBPS
	svc5 "TCP  10.0.0.100:80" 1500 150000 140000 180000000 2000000000
	rate_dst "10.0.0.11:80" 1000 100000 90000 120000000 1500000000
	rate_dst "10.0.0.12:8080" 500 50000 50000 60000000 500000000
	svc5 "UDP  10.0.0.100:53" 0 0 0 0 0
	rate_dst "10.0.0.12:53" 0 0 0 0 0
} > rate.golden

{
	head
	printf "%-33s %-10s %-10s %-10s %-10s\n  -> RemoteAddress:Port\n" "Prot LocalAddress:Port" Uthreshold Lthreshold ActiveConn InActConn
	printf "%s %s\n" "TCP  10.0.0.100:80" wrr
	printf "  -> %-28s %-10u %-10u %-10u %-10u\n" "10.0.0.11:80" 1000 800 12 345
	printf "  -> %-28s %-10u %-10u %-10u %-10u\n" "10.0.0.12:8080" 0 0 0 0
	printf "%s %s\n" "UDP  10.0.0.100:53" rr
	printf "  -> %-28s %-10u %-10u %-10u %-10u\n" "10.0.0.12:53" 0 0 0 0
} > thresholds.golden

{
	head
	printf "%-33s %-9s %-11s %-10s %-10s\n  -> RemoteAddress:Port\n" "Prot LocalAddress:Port" Weight PersistConn ActiveConn InActConn
	printf "%s %s\n" "TCP  10.0.0.100:80" wrr
	printf "  -> %-28s %-9u %-11u %-10u %-10u\n" "10.0.0.11:80" 3 7 12 345
	printf "  -> %-28s %-9u %-11u %-10u %-10u\n" "10.0.0.12:8080" 0 0 0 0
	printf "%s %s\n" "UDP  10.0.0.100:53" rr
	printf "  -> %-28s %-9u %-11u %-10u %-10u\n" "10.0.0.12:53" 1 0 0 0
} > persistent-conn.golden

# -Sn: "-A %s -s %s", then "-a %s -r %s %s -w %d" (1.31 adds
# "--tun-type ipip" for -i); xipvs adds -x/-y when set.
{
	printf -- "-A %s -s %s\n" "-t 10.0.0.100:80" wrr
	printf -- "-a %s -r %s %s -w %d -x %d -y %d\n" "-t 10.0.0.100:80" 10.0.0.11:80 -g 3 1000 800
	printf -- "-a %s -r %s %s -w %d\n" "-t 10.0.0.100:80" 10.0.0.12:8080 -m 0
	printf -- "-A %s -s %s\n" "-u 10.0.0.100:53" rr
	printf -- "-a %s -r %s %s -w %d --tun-type ipip\n" "-u 10.0.0.100:53" 10.0.0.12:53 -i 1
} > save-numeric.golden

# Dual stack (format_test.go's dualStackFixture): IPv6 names bracketed
# and never cut (print_service_entry truncates only AF_INET names), an
# IPv6 mask as " mask %i" / " -M %i", an IPv6 fwmark service as
# "FWM  %d IPv6" / "-f %d -6"; IPv4 services sort before IPv6 ones
# (ipvs_cmp_services compares the family after the mark).
long6="[2001:db8:1234:5678:9abc:def0:1234:5678]:8080"
{
	head
	printf "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
	printf "%s %s\n" "TCP  10.0.0.100:80" wrr
	printf "  -> %-28s %-7s %-6d %-10u %-10u\n" "10.0.0.11:80" Route 1 0 0
	printf "%s %s persistent %u mask %i\n" "TCP  [2001:db8::100]:80" rr 600 64
	printf "  -> %-28s %-7s %-6d %-10u %-10u\n" "[2001:db8::11]:80" Masq 3 5 2
	printf "  -> %-28s %-7s %-6d %-10u %-10u\n" "$long6" Masq 1 0 0
	printf "%s %s\n" "UDP  [2001:db8::100]:53" rr
	printf "  -> %-28s %-7s %-6d %-10u %-10u\n" "[2001:db8::12]:53" Route 1 0 9
	printf "%s %s persistent %u\n" "FWM  7 IPv6" wlc 300
	printf "  -> %-28s %-7s %-6d %-10u %-10u\n" "[2001:db8::13]:0" Route 1 0 0
} > list-dualstack.golden

{
	head; stat_title Conns InPkts OutPkts InBytes OutBytes
	svc5 "TCP  10.0.0.100:80" 0 0 0 0 0
	dst5 "10.0.0.11:80" 0 0 0 0 0
	svc5 "TCP  [2001:db8::100]:80" 7 70 60 7000 600000
	dst5 "[2001:db8::11]:80" 7 70 60 7000 600000
	dst5 "$long6" 0 0 0 0 0
	svc5 "UDP  [2001:db8::100]:53" 0 0 0 0 0
	dst5 "[2001:db8::12]:53" 0 0 0 0 0
	svc5 "FWM  7 IPv6" 0 0 0 0 0
	dst5 "[2001:db8::13]:0" 0 0 0 0 0
} > stats-dualstack.golden

{
	printf -- "-A %s -s %s\n" "-t 10.0.0.100:80" wrr
	printf -- "-a %s -r %s %s -w %d\n" "-t 10.0.0.100:80" 10.0.0.11:80 -g 1
	printf -- "-A %s -s %s -p %u -M %i\n" "-t [2001:db8::100]:80" rr 600 64
	printf -- "-a %s -r %s %s -w %d\n" "-t [2001:db8::100]:80" "[2001:db8::11]:80" -m 3
	printf -- "-a %s -r %s %s -w %d\n" "-t [2001:db8::100]:80" "$long6" -m 1
	printf -- "-A %s -s %s\n" "-u [2001:db8::100]:53" rr
	printf -- "-a %s -r %s %s -w %d\n" "-u [2001:db8::100]:53" "[2001:db8::12]:53" -g 1
	printf -- "-A %s -s %s -p %u\n" "-f 7 -6" wlc 300
	printf -- "-a %s -r %s %s -w %d\n" "-f 7 -6" "[2001:db8::13]:0" -g 1
} > save-dualstack.golden

# -Lnc: print_conn's "%-3s %02ld:%02ld %-11s %-18s %-18s %s".
{
	printf "IPVS connection entries\n"
	printf "pro expire %-11s %-18s %-18s %s\n" state source virtual destination
	printf "%-3s %02ld:%02ld %-11s %-18s %-18s %s\n" TCP 14 59 ESTABLISHED "10.77.0.1:43210" "10.77.0.100:80" "10.77.0.11:80"
	printf "%-3s %02ld:%02ld %-11s %-18s %-18s %s\n" TCP 1 0 SYN_RECV "[2001:db8:77::1]:43211" "[2001:db8::100]:80" "[2001:db8::11]:80"
} > conns-dualstack.golden
