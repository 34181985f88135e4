package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// The sweep ages the connection table in the kernel (bpf/sweep.bpf.c, a
// BPF_PROG_TYPE_SYSCALL program run with BPF_PROG_RUN): one pass with
// bpf_for_each_map_elem, no entry copied to Go. SweepTable is its Go
// model, which FakeDataplane-based tests use and TestSweepMatchesModel
// holds the program to.

// SweepArgs is what one sweep needs.
type SweepArgs struct {
	Now      time.Duration // on Now's clock
	Timeouts conntrack.Timeouts
	// OrphanAge is how long a reply entry without its forward entry is
	// kept (a new connection writes the reply entry just before the
	// forward one).
	OrphanAge time.Duration
	// Persistent are the persistent services by id: the sweep lists the
	// templates their live connections belong to.
	Persistent map[uint32]SweepPersist
	// DropStale also deletes the connections whose real is gone (not in
	// the reals map; for SweepTable, not in Reals): the first sweep after
	// a restart adopted the table, instead of a walk of its own.
	DropStale bool
	Reals     map[uint32]bool
	// Full also walks the established tables when they age by the
	// deadline index (aging.go): an entry not counted is counted, one due
	// or whose real is gone ends. Without the index every sweep walks
	// them.
	Full bool
}

// SweepPersist is a persistent service as the sweep sees it.
type SweepPersist struct {
	MaskBits int  // client netmask (-M) as a prefix length
	PortZero bool // templates ignore the virtual port (-f, port 0, FTP)
}

// Template is a persistence template with a live connection.
type Template struct {
	ServiceID uint32
	Client    netip.Addr // under the service's netmask
	VPort     uint16
}

// LocalPort is a FULLNAT local address and port (and protocol).
type LocalPort struct {
	Addr  netip.Addr
	Port  uint16
	Proto uint8
}

// SweepResult is what one sweep found and did.
type SweepResult struct {
	Counts   map[uint32]conntrack.Counts // live connections by real id
	Released []LocalPort                 // FULLNAT ports of deleted connections
	Owned    []Template
	Seen     uint64 // entries visited
	Expired  uint64 // connections deleted
	Judged   int    // established connections the deadline index had judged
	Walked   bool   // the tables were walked (else the last walk's counts stand)
	Kept     uint64 // expired FULLNAT connections left for the next sweep
}

// sweepProg is the loaded sweep program and the maps only it uses.
type sweepProg struct {
	objs bpfobj.SweepObjects
	gen  uint32
}

// LoadSweep loads the sweep's programs (the sweep, the reaper), unless
// they are: the first sweep does, and xipvsd does once it answers, so
// that a program the kernel refuses stops it at start.
func (d *Dataplane) LoadSweep() error {
	_, err := d.sweeper()
	return err
}

// sweeper is the loaded sweep program, loaded at the first call.
func (d *Dataplane) sweeper() (*sweepProg, error) {
	d.sweepMu.Lock()
	defer d.sweepMu.Unlock()
	if d.sweep == nil {
		if err := d.loadSweep(d.sweepSizes[0], d.sweepSizes[1]); err != nil {
			return nil, err
		}
	}
	return d.sweep, nil
}

// loadSweep loads the sweep program over the director's connection
// table.
func (d *Dataplane) loadSweep(connTableSize, connTableSize6 uint32) error {
	spec, err := bpfobj.LoadSweep()
	if err != nil {
		return fmt.Errorf("load sweep spec: %w", err)
	}
	spec.Maps[bpfobj.SweepMapConns].MaxEntries = connTableSize
	spec.Maps[bpfobj.SweepMapEstConns].MaxEntries = connTableSize
	spec.Maps[bpfobj.SweepMapConns6].MaxEntries = connTableSize6
	spec.Maps[bpfobj.SweepMapEstConns6].MaxEntries = connTableSize6
	spec.Maps[bpfobj.SweepMapSweepOwned].MaxEntries = connTableSize
	sp := &sweepProg{}
	opts := &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{bpfobj.SweepMapConns: d.objs.Conns, bpfobj.SweepMapEstConns: d.objs.EstConns,
		bpfobj.SweepMapConns6: d.objs.Conns6, bpfobj.SweepMapEstConns6: d.objs.EstConns6, bpfobj.SweepMapSeqadjs: d.objs.Seqadjs,
		bpfobj.SweepMapReals: d.objs.Reals, bpfobj.SweepMapSweepPersistent: d.objs.SweepPersistent,
		bpfobj.SweepMapEstLive: d.objs.EstLive, bpfobj.SweepMapAgingConf: d.objs.AgingConf, bpfobj.SweepMapTmpls: d.objs.Tmpls,
		bpfobj.SweepMapStats: d.objs.Stats}}
	// Only the program and the maps it uses: the director's others are
	// never created twice.
	var objs struct {
		Prog      *ebpf.Program `ebpf:"xipvs_sweep"`
		Reap      *ebpf.Program `ebpf:"xipvs_reap"`
		Counts    *ebpf.Map     `ebpf:"sweep_counts"`
		Released  *ebpf.Map     `ebpf:"sweep_released"`
		Owned     *ebpf.Map     `ebpf:"sweep_owned"`
		ReapSlots *ebpf.Map     `ebpf:"reap_slots"`
	}
	if err := spec.LoadAndAssign(&objs, opts); err != nil {
		return fmt.Errorf("load sweep: %w", err)
	}
	sp.objs = bpfobj.SweepObjects{SweepPrograms: bpfobj.SweepPrograms{XipvsSweep: objs.Prog, XipvsReap: objs.Reap},
		SweepMaps: bpfobj.SweepMaps{SweepCounts: objs.Counts, SweepReleased: objs.Released, SweepOwned: objs.Owned, ReapSlots: objs.ReapSlots}}
	d.sweep = sp
	return nil
}

func (sp *sweepProg) Close() error {
	if sp == nil {
		return nil
	}
	o := &sp.objs
	return errors.Join(o.XipvsSweep.Close(), o.XipvsReap.Close(), o.SweepCounts.Close(), o.SweepReleased.Close(),
		o.SweepOwned.Close(), o.ReapSlots.Close())
}

// Sweep ages the connection table once (see SweepArgs, SweepResult).
func (d *Dataplane) Sweep(a SweepArgs) (SweepResult, error) {
	sp, err := d.sweeper()
	if err != nil {
		return SweepResult{}, err
	}
	if err := syncPersistent(d.objs.SweepPersistent, a.Persistent); err != nil {
		return SweepResult{}, err
	}
	sp.gen++
	if sp.gen == 0 {
		sp.gen = 1
	}
	args := bpfobj.SweepSweepArgs{Now: uint64(a.Now), UdpTimeout: uint64(a.Timeouts.UDP), OrphanAge: uint64(a.OrphanAge), Gen: sp.gen}
	if d.ipv6.Load() {
		args.Ipv6 = 1
	}
	if a.DropStale {
		args.DropStale = 1
	}
	if a.Full || a.DropStale {
		args.Full = 1 // the established tables hold stale ones too
	}
	if d.aging.on.Load() && a.Timeouts != d.aging.timeouts {
		if err := d.writeAging(true, a.Timeouts); err != nil {
			return SweepResult{}, err
		}
	}
	for i := range args.TcpTimeout {
		args.TcpTimeout[i] = uint64(a.Timeouts.TCP[i])
	}
	res, err := d.walk(sp, a, args)
	if err != nil {
		return res, err
	}
	if d.aging.on.Load() {
		// The deadline index's turn: after the walk, whose freed ports
		// it would write over.
		ar, err := d.ageTurn(a.Now)
		if err != nil {
			return res, err
		}
		res.Released = append(res.Released, ar.Released...)
		res.Expired += ar.Expired
		res.Judged = ar.Judged
		if err := d.addLiveCounts(res.Counts); err != nil {
			return res, err
		}
	}
	return res, nil
}

// embWalkShare bounds the embryonic walk's cost when the established
// tables age by the index: after a walk that took t, the next comes no
// sooner than t*embWalkShare later (about 2% of a core). A table of a few
// million entries is walked every second; one of tens of millions every
// few seconds, its counts (InActConn of embryonic connections) as old.
const embWalkShare = 49

// embPaceAbove is the walk below which the embryonic walk is not paced:
// a table of a few million entries is walked at every sweep, so that a
// short-lived connection (a UDP flow under a 2 s timeout) is counted.
const embPaceAbove = 100 * time.Millisecond

// walk runs the sweep program (args), unless the established tables age
// by the index and the embryonic walk can wait: the embryonic tables are
// as empty as the last walk found them (nothing created since), or the
// last walk was too recent (embWalkShare). Then the last walk's counts
// and templates stand.
func (d *Dataplane) walk(sp *sweepProg, a SweepArgs, args bpfobj.SweepSweepArgs) (SweepResult, error) {
	ag := &d.aging
	embOnly := ag.on.Load() && args.Full == 0
	created := d.statCounter(StatEmbNew) + d.embWrites.Load()
	if embOnly && ag.embCounts != nil && a.Now < ag.embNext {
		res := SweepResult{Counts: make(map[uint32]conntrack.Counts, len(ag.embCounts)), Owned: ag.embOwned}
		for id, c := range ag.embCounts {
			res.Counts[id] = c
		}
		return res, nil
	}
	o := &sp.objs
	start := time.Now()
	var out bpfobj.SweepSweepArgs
	if _, err := o.XipvsSweep.Run(&ebpf.RunOptions{Context: args, ContextOut: &out}); err != nil {
		return SweepResult{}, fmt.Errorf("run sweep: %w", err)
	}
	took := time.Since(start)
	res := SweepResult{Counts: map[uint32]conntrack.Counts{}, Seen: out.Seen, Expired: out.Expired, Kept: out.Kept, Walked: true}
	if err := readCounts(o.SweepCounts, sp.gen, res.Counts); err != nil {
		return res, err
	}
	released, err := d.readReleased(int(out.Released))
	if err != nil {
		return res, err
	}
	res.Released = released
	if res.Owned, err = drainOwned(o.SweepOwned); err != nil {
		return res, err
	}
	// The walk's counts are the embryonic entries' when the established
	// tables count themselves (a full pass counts only those Go wrote).
	ag.embCounts = make(map[uint32]conntrack.Counts, len(res.Counts))
	for id, c := range res.Counts {
		ag.embCounts[id] = c
	}
	ag.embOwned = res.Owned
	ag.embEmpty = embOnly && out.Seen == 0
	ag.embCreated = created
	ag.embNext = 0
	if took > embPaceAbove {
		ag.embNext = a.Now + took*embWalkShare
	}
	return res, nil
}

// readReleased reads the n FULLNAT ports the last sweep or reaper run
// wrote to sweep_released.
func (d *Dataplane) readReleased(n int) ([]LocalPort, error) {
	if n <= 0 {
		return nil, nil
	}
	keys, vals := make([]uint32, n), make([]bpfobj.SweepSweepPort, n)
	var cursor ebpf.MapBatchCursor
	got, err := d.sweep.objs.SweepReleased.BatchLookup(&cursor, keys, vals, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, fmt.Errorf("read released ports: %w", err)
	}
	out := make([]LocalPort, 0, got)
	for _, v := range vals[:got] {
		out = append(out, localPortOf(v))
	}
	return out, nil
}

func localPortOf(p bpfobj.SweepSweepPort) LocalPort {
	addr := netip.AddrFrom4([4]byte(p.Addr[:4]))
	if p.V6 != 0 {
		addr = netip.AddrFrom16(p.Addr)
	}
	return LocalPort{Addr: addr, Port: fromBE16(p.Port), Proto: p.Proto}
}

func syncPersistent(m *ebpf.Map, want map[uint32]SweepPersist) error {
	var (
		id    uint32
		v     bpfobj.SweepSweepPersist
		stale []uint32
	)
	it := m.Iterate()
	for it.Next(&id, &v) {
		if _, ok := want[id]; !ok {
			stale = append(stale, id)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read sweep_persistent: %w", err)
	}
	for _, id := range stale {
		if err := m.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("sweep_persistent: %w", err)
		}
	}
	for id, p := range want {
		v := bpfobj.SweepSweepPersist{MaskBits: uint32(p.MaskBits)}
		for i := range v.Mask {
			if b := p.MaskBits - 32*i; b >= 32 {
				v.Mask[i] = 0xffffffff
			} else if b > 0 {
				v.Mask[i] = be32Bits(^uint32(0) << (32 - b))
			}
		}
		if p.PortZero {
			v.PortZero = 1
		}
		if err := m.Put(id, &v); err != nil {
			return fmt.Errorf("sweep_persistent: %w", err)
		}
	}
	return nil
}

func readCounts(m *ebpf.Map, gen uint32, out map[uint32]conntrack.Counts) error {
	const chunk = 4096
	keys, vals := make([]uint32, chunk), make([]bpfobj.SweepSweepCount, chunk)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			if v := vals[i]; v.Gen == gen && v.Active+v.Inactive > 0 {
				out[keys[i]] = conntrack.Counts{Active: int(v.Active), Inactive: int(v.Inactive)}
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read sweep counts: %w", err)
		}
	}
}

func drainOwned(m *ebpf.Map) ([]Template, error) {
	const chunk = 4096
	keys, vals := make([]bpfobj.SweepSweepTmpl, chunk), make([]uint8, chunk)
	var out []Template
	for {
		var cursor ebpf.MapBatchCursor
		n, err := m.BatchLookupAndDelete(&cursor, keys, vals, nil)
		for _, k := range keys[:n] {
			client := netip.AddrFrom4([4]byte(k.Client[:4]))
			if k.V6 != 0 {
				client = netip.AddrFrom16(k.Client)
			}
			out = append(out, Template{ServiceID: k.SvcId, Client: client, VPort: fromBE16(k.Vport)})
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) || (err == nil && n == 0) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("read sweep templates: %w", err)
		}
	}
}

// SweepTable is the sweep's Go model over a table held in a Go map: the
// same judgement as bpf/sweep.bpf.c, entry by entry.
func SweepTable(conns map[ConnKey]Conn, a SweepArgs) SweepResult {
	res := SweepResult{Counts: map[uint32]conntrack.Counts{}}
	owned := map[Template]bool{}
	peerOf := func(k ConnKey, c Conn) (ConnKey, Conn, bool) {
		if !c.Rewrites() {
			return ConnKey{}, Conn{}, false
		}
		pk := c.Peer(k.Proto)
		p, ok := conns[pk]
		if !ok || p.Peer(k.Proto) != k || (p.Flags^c.Flags)&ConnReply == 0 {
			return ConnKey{}, Conn{}, false
		}
		return pk, p, true
	}
	count := func(k ConnKey, c Conn) {
		n := res.Counts[c.RealID]
		n.Add(k.Proto, c.State)
		res.Counts[c.RealID] = n
		if p, ok := a.Persistent[c.ServiceID]; ok && c.Flags&ConnPersist != 0 {
			t := Template{ServiceID: c.ServiceID, VPort: k.DstPort}
			if p.PortZero {
				t.VPort = 0
			}
			pfx, _ := k.Src.Prefix(p.MaskBits)
			t.Client = pfx.Addr()
			owned[t] = true
		}
	}
	release := func(k ConnKey, c Conn) {
		if c.Flags&ConnFullNAT != 0 {
			res.Released = append(res.Released, LocalPort{Addr: k.Dst, Port: k.DstPort, Proto: k.Proto})
		}
	}
	keys := make([]ConnKey, 0, len(conns))
	for k := range conns {
		keys = append(keys, k)
	}
	for _, k := range keys {
		c, ok := conns[k]
		if !ok {
			continue // deleted with its pair
		}
		res.Seen++
		pk, p, hasPeer := peerOf(k, c)
		last := c.LastSeen
		if c.Flags&ConnReply != 0 {
			if hasPeer || a.Now-last < a.OrphanAge {
				continue
			}
			delete(conns, k)
			release(k, c)
			continue
		}
		if hasPeer {
			last = max(last, p.LastSeen)
		}
		if a.Timeouts.Remaining(k.Proto, c.State, last, a.Now) > 0 && !(a.DropStale && !a.Reals[c.RealID]) {
			count(k, c)
			continue
		}
		delete(conns, k)
		res.Expired++
		if hasPeer {
			delete(conns, pk)
			release(pk, p)
		}
	}
	for t := range owned {
		res.Owned = append(res.Owned, t)
	}
	return res
}
