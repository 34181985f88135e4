package sched

import (
	"net/netip"
	"time"
)

// Locality tables, as ip_vs_lblc.c and ip_vs_lblcr.c size and age them.
const (
	// LocalityExpiration is the sysctls lblc_expiration and
	// lblcr_expiration: an entry unused this long is removed by the full
	// check, and an lblcr set unchanged this long sheds its busiest
	// member.
	LocalityExpiration = 24 * time.Hour
	// localityCheckInterval is CHECK_EXPIRE_INTERVAL.
	localityCheckInterval = 60 * time.Second
	// localityEntryTimeout is ENTRY_TIMEOUT: over max size, entries idle
	// this long are collected.
	localityEntryTimeout = 6 * time.Minute
	// localityMaxSize is IP_VS_LBLC_TAB_SIZE*16.
	localityMaxSize = 1024 * 16
	// localityFullEvery is COUNT_FOR_FULL_EXPIRATION.
	localityFullEvery = 30
)

// locality is what lblc and lblcr share: the wlc fallback, IPVS's
// lblc/lblcr is_overloaded test, and the table's garbage collection.
type locality struct {
	wlc argmin
	// under[i] is whether dests[i] has active*2 < weight; nUnder counts
	// them, so is_overloaded costs O(1) instead of a list scan.
	under  []bool
	nUnder int
	// GC state: the kernel's periodic timer, run from Schedule.
	lastCheck time.Duration
	counter   int
	expire    time.Duration
}

func newLocality() locality {
	return locality{wlc: argmin{kind: byWeighted}, counter: 1, expire: LocalityExpiration}
}

func isUnder(d *Dest) bool { return d.ActiveConns*2 < d.Weight }

func (l *locality) Update(dests []*Dest) {
	l.wlc.Update(dests)
	l.under = make([]bool, len(dests))
	l.nUnder = 0
	for i, d := range dests {
		if l.under[i] = isUnder(d); l.under[i] {
			l.nUnder++
		}
	}
}

func (l *locality) Changed(d *Dest) {
	l.wlc.Changed(d)
	i, ok := l.wlc.position(d)
	if !ok {
		return
	}
	if u := isUnder(d); u != l.under[i] {
		l.under[i] = u
		if u {
			l.nUnder++
		} else {
			l.nUnder--
		}
	}
}

// member is the kernel's IP_VS_DEST_CF_AVAILABLE: still in the service.
func (l *locality) member(d *Dest) bool { _, ok := l.wlc.position(d); return ok }

// overloaded is lblc's and lblcr's is_overloaded: more active
// connections than its weight while some destination is under half its
// weight.
func (l *locality) overloaded(d *Dest) bool { return d.ActiveConns > d.Weight && l.nUnder > 0 }

// gc is ip_vs_lblc_check_expire / ip_vs_lblcr_check_expire, run at most
// once per check interval. lastuse returns an entry's last use; del
// removes it.
func (l *locality) gc(now time.Duration, n int, each func(func(lastuse time.Duration) bool)) {
	if now-l.lastCheck < localityCheckInterval {
		return
	}
	l.lastCheck = now
	if l.counter%localityFullEvery == 0 {
		each(func(lastuse time.Duration) bool { return now >= lastuse+l.expire })
		l.counter = 1
		return
	}
	if n <= localityMaxSize {
		l.counter++
		return
	}
	goal := (n - localityMaxSize) * 4 / 3
	if goal > localityMaxSize/2 {
		goal = localityMaxSize / 2
	}
	each(func(lastuse time.Duration) bool {
		if goal <= 0 || now < lastuse+localityEntryTimeout {
			return false
		}
		goal--
		return true
	})
}

// gcTable runs the locality GC over an lblc or lblcr table.
func gcTable[E any](l *locality, now time.Duration, table map[netip.Addr]E, lastuse func(E) time.Duration) {
	l.gc(now, len(table), func(doomed func(time.Duration) bool) {
		for k, en := range table {
			if doomed(lastuse(en)) {
				delete(table, k)
			}
		}
	})
}

// lblc is ip_vs_lblc.c: each destination address of the packets (the
// cached object, for a cache cluster) sticks to one real server, chosen
// by wlc, until that server is gone, quiesced, or overloaded as
// is_overloaded says.
type lblc struct {
	locality
	table map[netip.Addr]*lblcEntry
}

type lblcEntry struct {
	dest    *Dest
	lastuse time.Duration
}

func init() {
	Register("lblc", func() Scheduler { return &lblc{locality: newLocality(), table: map[netip.Addr]*lblcEntry{}} })
}

func (s *lblc) Name() string { return "lblc" }

func (s *lblc) Schedule(f Flow) *Dest {
	gcTable(&s.locality, f.Now, s.table, func(en *lblcEntry) time.Duration { return en.lastuse })
	if en := s.table[f.Dst]; en != nil {
		en.lastuse = f.Now
		if d := en.dest; s.member(d) && d.Weight > 0 && !s.overloaded(d) {
			return d
		}
	}
	d := s.wlc.Schedule(f)
	if d == nil {
		return nil
	}
	// ip_vs_lblc_new: a different destination replaces the entry; a
	// full table keeps none (the flow still goes to d).
	if en := s.table[f.Dst]; en != nil {
		if en.dest == d {
			return d
		}
		delete(s.table, f.Dst)
	}
	if len(s.table) <= localityMaxSize {
		s.table[f.Dst] = &lblcEntry{dest: d, lastuse: f.Now}
	}
	return d
}

// lblcr is ip_vs_lblcr.c: like lblc, but a destination address maps to
// a set of servers; the least loaded member takes the flow, an overloaded
// one makes the set grow by wlc's pick, and a set unchanged for the
// expiration time sheds its most loaded member.
type lblcr struct {
	locality
	table map[netip.Addr]*lblcrEntry
}

type lblcrEntry struct {
	set     []*Dest // newest first (list_add_rcu)
	lastmod time.Duration
	lastuse time.Duration
}

func init() {
	Register("lblcr", func() Scheduler { return &lblcr{locality: newLocality(), table: map[netip.Addr]*lblcrEntry{}} })
}

func (s *lblcr) Name() string { return "lblcr" }

// min is ip_vs_dest_set_min.
func (s *lblcr) min(en *lblcrEntry) *Dest {
	var least *Dest
	for _, d := range en.set {
		if least == nil {
			if !d.Overloaded && d.Weight > 0 && s.member(d) {
				least = d
			}
			continue
		}
		if d.Overloaded {
			continue
		}
		if overhead(least)*int64(d.Weight) > overhead(d)*int64(least.Weight) && s.member(d) {
			least = d
		}
	}
	return least
}

// max is ip_vs_dest_set_max; like the kernel it does not look at
// availability, so a removed server is the first to go.
func (s *lblcr) max(en *lblcrEntry) *Dest {
	var most *Dest
	for _, d := range en.set {
		if most == nil {
			if d.Weight > 0 {
				most = d
			}
			continue
		}
		if overhead(most)*int64(d.Weight) < overhead(d)*int64(most.Weight) && d.Weight > 0 {
			most = d
		}
	}
	return most
}

func (en *lblcrEntry) insert(d *Dest, now time.Duration) {
	for _, x := range en.set {
		if x == d {
			return
		}
	}
	en.set = append([]*Dest{d}, en.set...)
	en.lastmod = now
}

func (en *lblcrEntry) erase(d *Dest, now time.Duration) {
	for i, x := range en.set {
		if x == d {
			en.set = append(en.set[:i:i], en.set[i+1:]...)
			en.lastmod = now
			return
		}
	}
}

func (s *lblcr) Schedule(f Flow) *Dest {
	gcTable(&s.locality, f.Now, s.table, func(en *lblcrEntry) time.Duration { return en.lastuse })
	if en := s.table[f.Dst]; en != nil {
		en.lastuse = f.Now
		d := s.min(en)
		if len(en.set) > 1 && f.Now > en.lastmod+s.expire {
			if m := s.max(en); m != nil {
				en.erase(m, f.Now)
			}
		}
		if d != nil && !s.overloaded(d) {
			return d
		}
		if d = s.wlc.Schedule(f); d == nil {
			return nil
		}
		en.insert(d, f.Now)
		return d
	}
	d := s.wlc.Schedule(f)
	if d == nil {
		return nil
	}
	if len(s.table) <= localityMaxSize {
		en := &lblcrEntry{lastuse: f.Now}
		en.insert(d, f.Now)
		s.table[f.Dst] = en
	}
	return d
}

// Locality is implemented by lblc and lblcr: their table of destination
// addresses, for a data plane that sends the new flows of an address
// whose entry names a real that may keep it there itself, and leaves the
// rest (no entry, or a real that may not keep it) to Schedule. lblcr's
// entries are its sets of one real: a set of more is decided by the
// least loaded of its members at each flow, so Schedule keeps it.
type Locality interface {
	// LocalEntry returns the real addr's entry names.
	LocalEntry(addr netip.Addr) (*Dest, bool)
	// LocalUsed notes a use of addr's entry at t (the data plane's).
	LocalUsed(addr netip.Addr, t time.Duration)
	// LocalEntries calls fn for every entry.
	LocalEntries(fn func(addr netip.Addr, d *Dest, lastuse time.Duration))
	// LocalUsable reports whether d may keep the addresses whose entry
	// names it: still a destination, weight > 0, not overloaded as
	// lblc's is_overloaded says (it reads active connections only, so a
	// new connection, counted as inactive, changes nothing).
	LocalUsable(d *Dest) bool
	// CollectLocal runs the table's garbage collection at now, as
	// Schedule runs it.
	CollectLocal(now time.Duration)
	// AdoptLocal makes addr's entry name d, last used at lastuse (one the
	// data plane kept across a restart), unless addr has one or the
	// table is full.
	AdoptLocal(addr netip.Addr, d *Dest, lastuse time.Duration)
}

func (s *lblc) AdoptLocal(addr netip.Addr, d *Dest, lastuse time.Duration) {
	if s.table[addr] == nil && len(s.table) <= localityMaxSize {
		s.table[addr] = &lblcEntry{dest: d, lastuse: lastuse}
	}
}

func (s *lblc) LocalEntry(addr netip.Addr) (*Dest, bool) {
	if en := s.table[addr]; en != nil {
		return en.dest, true
	}
	return nil, false
}

func (s *lblc) LocalUsed(addr netip.Addr, t time.Duration) {
	if en := s.table[addr]; en != nil && t > en.lastuse {
		en.lastuse = t
	}
}

func (s *lblc) LocalEntries(fn func(netip.Addr, *Dest, time.Duration)) {
	for a, en := range s.table {
		fn(a, en.dest, en.lastuse)
	}
}

func (s *lblc) LocalUsable(d *Dest) bool { return s.member(d) && d.Weight > 0 && !s.overloaded(d) }

func (s *lblc) CollectLocal(now time.Duration) {
	gcTable(&s.locality, now, s.table, func(en *lblcEntry) time.Duration { return en.lastuse })
}

// lblcr's entries of one real: there ip_vs_lblcr_schedule's pick is that
// real (ip_vs_dest_set_min) while it is available and not overloaded, as
// is_overloaded says; a set of more has no entry here.

func (s *lblcr) AdoptLocal(addr netip.Addr, d *Dest, lastuse time.Duration) {
	if s.table[addr] == nil && len(s.table) <= localityMaxSize {
		s.table[addr] = &lblcrEntry{set: []*Dest{d}, lastuse: lastuse, lastmod: lastuse}
	}
}

func (s *lblcr) LocalEntry(addr netip.Addr) (*Dest, bool) {
	if en := s.table[addr]; en != nil && len(en.set) == 1 {
		return en.set[0], true
	}
	return nil, false
}

func (s *lblcr) LocalUsed(addr netip.Addr, t time.Duration) {
	if en := s.table[addr]; en != nil && t > en.lastuse {
		en.lastuse = t
	}
}

func (s *lblcr) LocalEntries(fn func(netip.Addr, *Dest, time.Duration)) {
	for a, en := range s.table {
		if len(en.set) == 1 {
			fn(a, en.set[0], en.lastuse)
		}
	}
}

func (s *lblcr) LocalUsable(d *Dest) bool {
	return s.member(d) && d.Weight > 0 && !d.Overloaded && !s.overloaded(d)
}

func (s *lblcr) CollectLocal(now time.Duration) {
	gcTable(&s.locality, now, s.table, func(en *lblcrEntry) time.Duration { return en.lastuse })
}
