package daemon

import (
	"context"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/api"
	"github.com/xipvs/xipvs/internal/bgp"
	"github.com/xipvs/xipvs/internal/server"
)

// collector exposes the server's and data plane's counters at scrape
// time: nothing is counted twice and nothing runs per packet.
type collector struct {
	srv *server.Server
	dp  Counters
	bgp *bgp.Speaker

	svcConns, svcInPkts, svcOutPkts, svcInBytes, svcOutBytes      *prometheus.Desc
	realConns, realInPkts, realOutPkts, realInBytes, realOutBytes *prometheus.Desc
	realActive, realInactive, realWeight, realPersist             *prometheus.Desc
	realUp, sorryActive                                           *prometheus.Desc
	svcCPS                                                        *prometheus.Desc
	xdp, slow, noLocalPort, reclaimedPorts, services, reals       *prometheus.Desc
	bgpUp, bgpAnnounced, bgpAdvertised, bgpDraining               *prometheus.Desc
}

func newCollector(srv *server.Server, dp Counters, sp *bgp.Speaker) *collector {
	svc := []string{"service"}
	real := []string{"service", "real", "forward"}
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc("xipvs_"+name, help, labels, nil)
	}
	return &collector{srv: srv, dp: dp, bgp: sp,
		bgpUp:          d("bgp_session_up", "1 while the BGP session with the peer is established.", []string{"peer", "state"}),
		bgpAdvertised:  d("bgp_advertised_prefixes", "Prefixes advertised to the peer.", []string{"peer"}),
		bgpAnnounced:   d("bgp_announced", "1 while the prefix is announced, 0 while it is withdrawn (its VIP has no healthy real).", []string{"prefix"}),
		bgpDraining:    d("bgp_draining", "1 once xipvsd withdrew its routes to stop.", nil),
		svcConns:       d("service_connections_total", "Connections scheduled by the virtual service.", svc),
		svcInPkts:      d("service_in_packets_total", "Packets toward the service's real servers.", svc),
		svcOutPkts:     d("service_out_packets_total", "Reply packets through the director (NAT and FULLNAT).", svc),
		svcInBytes:     d("service_in_bytes_total", "Bytes (IP length) toward the service's real servers.", svc),
		svcOutBytes:    d("service_out_bytes_total", "Reply bytes through the director (NAT and FULLNAT).", svc),
		svcCPS:         d("service_connections_per_second", "Smoothed connection rate (IPVS's estimator).", svc),
		realConns:      d("real_connections_total", "Connections scheduled to the real server.", real),
		realInPkts:     d("real_in_packets_total", "Packets toward the real server.", real),
		realOutPkts:    d("real_out_packets_total", "Reply packets from the real server through the director.", real),
		realInBytes:    d("real_in_bytes_total", "Bytes (IP length) toward the real server.", real),
		realOutBytes:   d("real_out_bytes_total", "Reply bytes from the real server through the director.", real),
		realActive:     d("real_active_connections", "ActiveConn: established TCP connections.", real),
		realInactive:   d("real_inactive_connections", "InActConn: other connections.", real),
		realWeight:     d("real_weight", "The real server's weight (0: quiesced).", real),
		realPersist:    d("real_persistent_connections", "Persistence templates naming the real server.", real),
		realUp:         d("real_up", "1 while the real passes its health check (or has none), 0 while it fails.", real),
		sorryActive:    d("service_sorry_active", "1 while the sorry server takes the service's new flows.", svc),
		xdp:            d("xdp_packets_total", "Packets seen by the XDP director, by outcome (drop_* are drops).", []string{"outcome"}),
		slow:           d("slow_path_total", "Slow-path (AF_XDP) events by kind.", []string{"event"}),
		noLocalPort:    d("fullnat_no_local_port_total", "New FULLNAT connections refused: no free local port.", nil),
		reclaimedPorts: d("fullnat_local_ports_reclaimed_total", "FULLNAT local ports freed that no connection held (their embryonic connections were evicted from a full table).", nil),
		services:       d("services", "Virtual services configured.", nil),
		reals:          d("real_servers", "Real servers configured.", nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	svcs := c.srv.Services()
	nreals := 0
	for _, s := range svcs {
		// "TCP 10.77.0.100:80": ipvsadm's double space is for columns.
		name := strings.Join(strings.Fields(s.ServiceKey.String()), " ")
		stats := func(st conntrack.Stats, ds [5]*prometheus.Desc, labels ...string) {
			counter(ds[0], st.Conns, labels...)
			counter(ds[1], st.InPkts, labels...)
			counter(ds[2], st.OutPkts, labels...)
			counter(ds[3], st.InBytes, labels...)
			counter(ds[4], st.OutBytes, labels...)
		}
		stats(s.Stats, [5]*prometheus.Desc{c.svcConns, c.svcInPkts, c.svcOutPkts, c.svcInBytes, c.svcOutBytes}, name)
		gauge(c.svcCPS, float64(s.Rates.CPS), name)
		if s.Sorry.IsSet() {
			v := 0.0
			if s.SorryActive {
				v = 1
			}
			gauge(c.sorryActive, v, name)
		}
		for _, d := range s.Dests {
			nreals++
			l := []string{name, d.AddrPort().String(), d.Fwd.String()}
			stats(d.Stats, [5]*prometheus.Desc{c.realConns, c.realInPkts, c.realOutPkts, c.realInBytes, c.realOutBytes}, l...)
			gauge(c.realActive, float64(d.ActiveConns), l...)
			gauge(c.realInactive, float64(d.InactConns), l...)
			ad := api.Dest{Dest: d.Dest, Health: api.Health(d.Health)}
			gauge(c.realWeight, float64(ad.ServingWeight()), l...)
			gauge(c.realPersist, float64(d.PersistConns), l...)
			up := 1.0
			if ad.Failing() {
				up = 0
			}
			gauge(c.realUp, up, l...)
		}
	}
	gauge(c.services, float64(len(svcs)))
	gauge(c.reals, float64(nreals))
	if ctr, err := c.dp.Counters(); err == nil {
		for i, v := range ctr {
			counter(c.xdp, v, dataplane.StatNames()[i])
		}
	}
	sp := c.dp.SlowPathStats()
	for _, e := range []struct {
		name string
		v    uint64
	}{{"received", sp.Received}, {"new_conns", sp.NewConns}, {"followed", sp.Followed}, {"batches", sp.Batches}, {"forwarded", sp.Forwarded},
		{"no_dest", sp.NoDest}, {"port_unreach", sp.PortUnreach}, {"unreach_limited", sp.UnreachLimited},
		{"proxy_opened", sp.ProxyOpened}, {"proxy_established", sp.ProxyEstablished}, {"proxy_failed", sp.ProxyFailed},
		{"unparsable", sp.Unparsable}, {"frag_orphans", sp.FragOrphans}, {"failed", sp.Failed}} {
		counter(c.slow, e.v, e.name)
	}
	counter(c.noLocalPort, c.srv.LocalPortsExhausted())
	counter(c.reclaimedPorts, c.srv.LocalPortsReclaimed())
	if st := c.bgp.Status(context.Background()); st.Enabled {
		b := func(v bool) float64 {
			if v {
				return 1
			}
			return 0
		}
		for _, p := range st.Peers {
			gauge(c.bgpUp, b(p.State == "established"), p.Addr.String(), p.State)
			gauge(c.bgpAdvertised, float64(p.Advertised), p.Addr.String())
		}
		for _, r := range st.Routes {
			gauge(c.bgpAnnounced, b(r.Announced), r.Prefix.String())
		}
		gauge(c.bgpDraining, b(st.Draining))
	}
}

// serveMetrics serves /metrics, and the status page at / with its data
// at /status.json, on addr until the returned server is shut down.
func serveMetrics(addr string, b *backend, profiling bool) (*http.Server, net.Listener, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(b.srv, b.dp, b.bgp), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	statusHandler(b, mux)
	if profiling {
		// Go's profiles, for finding where the slow path spends its time.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, ln, nil
}
