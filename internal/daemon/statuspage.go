package daemon

// statuspage.go: the live status page xipvsd serves next to /metrics:
// one HTML page (embedded, no network fetches) that polls /status.json.

import (
	"embed"
	"encoding/json"
	"net/http"
	"sort"
	"time"

	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/api"
)

//go:embed status/index.html
var statusFiles embed.FS

// Status is what /status.json serves.
type Status struct {
	Version    string                  `json:"version"`
	Time       time.Time               `json:"time"`
	Interfaces []string                `json:"interfaces"`
	TableSize  int                     `json:"conn_table_size"`
	Services   []api.Service           `json:"services"`
	Counters   map[string]uint64       `json:"counters"`
	Defence    dataplane.DefenceStatus `json:"defence"`
	BGP        api.BGPStatus           `json:"bgp"`
	Sync       []api.SyncDaemon        `json:"sync"`
}

// status gathers the page's data.
func (b *backend) status(r *http.Request) Status {
	info := b.Info()
	svcs := b.ListServices()
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].ServiceKey.String() < svcs[j].ServiceKey.String() })
	for _, s := range svcs {
		sort.Slice(s.Dests, func(i, j int) bool { return s.Dests[i].AddrPort().String() < s.Dests[j].AddrPort().String() })
	}
	st := Status{Version: info.Version, Time: time.Now(), Interfaces: info.Interfaces, TableSize: info.ConnTableSize,
		Services: svcs, Counters: info.Counters, Defence: b.dp.DefenceStatus(), Sync: b.Daemons()}
	if b.bgp != nil {
		st.BGP = b.bgp.Status(r.Context())
	}
	return st
}

// statusHandler serves the page at / and its data at /status.json.
func statusHandler(b *backend, mux *http.ServeMux) {
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(b.status(r))
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		page, _ := statusFiles.ReadFile("status/index.html")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
		_, _ = w.Write(page)
	})
}
