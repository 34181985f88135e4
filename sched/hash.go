package sched

import "net/netip"

// hash32 is the kernel's hash_32(val, bits): multiplicative hashing by
// GOLDEN_RATIO_32, keeping the top bits.
func hash32(val uint32, bits uint) uint32 { return (val * 0x61C88647) >> (32 - bits) }

// addr32 is an IPv4 address in host order (ntohl of the kernel's
// addr_fold).
func addr32(a netip.Addr) uint32 {
	if !a.Is4() {
		b := a.As16()
		var f uint32
		for i := 0; i < 16; i += 4 {
			f ^= uint32(b[i])<<24 | uint32(b[i+1])<<16 | uint32(b[i+2])<<8 | uint32(b[i+3])
		}
		return f
	}
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// hashTabBits is CONFIG_IP_VS_DH_TAB_BITS and CONFIG_IP_VS_SH_TAB_BITS.
const hashTabBits = 8

const hashTabSize = 1 << hashTabBits

// dh is ip_vs_dh.c: a 256-bucket table filled with the destinations in
// list order, round and round; the bucket is hash_32 of the packet's
// destination address. An unavailable bucket owner means no destination.
type dh struct {
	noCounts
	buckets [hashTabSize]*Dest
}

func init() { Register("dh", func() Scheduler { return &dh{} }) }

func (s *dh) Name() string { return "dh" }

// Update is ip_vs_dh_reassign.
func (s *dh) Update(dests []*Dest) {
	for i := range s.buckets {
		s.buckets[i] = nil
		if len(dests) > 0 {
			s.buckets[i] = dests[i%len(dests)]
		}
	}
}

func (s *dh) Schedule(f Flow) *Dest {
	d := s.buckets[hash32(addr32(f.Dst), hashTabBits)]
	if d == nil || !d.Available() {
		return nil
	}
	return d
}

// sh is ip_vs_sh.c: a 256-bucket table where each destination, in list
// order, takes as many consecutive buckets as its weight (one when the
// weight is 0), round and round; the bucket is hash_32 of the client's
// address, plus its source port with sh-port. With sh-fallback an
// unavailable owner sends the search around the table from there.
type sh struct {
	noCounts
	buckets [hashTabSize]*Dest
	flags   Flags
}

func init() { Register("sh", func() Scheduler { return &sh{} }) }

func (s *sh) Name() string { return "sh" }

// FlagNames are ipvsadm's names of flag-1 and flag-2 for sh.
func (s *sh) FlagNames() [2]string { return [2]string{"sh-fallback", "sh-port"} }

func (s *sh) SetFlags(f Flags)  { s.flags = f }
func (s *sh) Update(ds []*Dest) { weightedBuckets(s.buckets[:], ds) }
func (s *sh) Schedule(f Flow) *Dest {
	var port uint16
	if s.flags&FlagPort != 0 {
		port = f.SrcPort
	}
	h := hash32(uint32(port)+addr32(f.Src), hashTabBits)
	// ip_vs_sh_hashkey(offset) is (offset + h) & mask.
	return lookup(s.buckets[h], s.flags, h, hashTabSize, func(roffset uint32) *Dest {
		return s.buckets[(roffset+h)&(hashTabSize-1)]
	})
}

// weightedBuckets is ip_vs_sh_reassign.
func weightedBuckets(buckets []*Dest, dests []*Dest) {
	p, count := 0, 0
	for i := range buckets {
		if len(dests) == 0 {
			buckets[i] = nil
			continue
		}
		d := dests[p]
		buckets[i] = d
		if count++; count >= d.Weight {
			p, count = (p+1)%len(dests), 0
		}
	}
}

func unavailable(d *Dest) bool { return d.Weight <= 0 || d.Overloaded }

// lookup is the end of sh's and mh's schedule: the owner d of the flow's
// bucket ihash if available; else, with the fallback flag, the fallback
// search; else none.
func lookup(d *Dest, flags Flags, ihash, size uint32, at func(roffset uint32) *Dest) *Dest {
	switch {
	case d == nil:
		return nil
	case !unavailable(d):
		return d
	case flags&FlagFallback == 0:
		return nil
	}
	return fallback(ihash, size, at)
}

// fallback is the search of ip_vs_sh_get_fallback and
// ip_vs_mh_get_fallback once the destination the flow hashes to (bucket
// ihash) is unavailable: for roffset = ihash, ihash+1, ... (mod size) the
// bucket at(roffset) is tried; the first available owner wins and an
// empty bucket ends the search.
func fallback(ihash, size uint32, at func(roffset uint32) *Dest) *Dest {
	for offset := uint32(0); offset < size; offset++ {
		d := at((offset + ihash) % size)
		if d == nil {
			return nil
		}
		if !unavailable(d) {
			return d
		}
	}
	return nil
}

// Hasher is implemented by the schedulers whose pick is a table lookup
// by a hash of the flow (sh, dh, mh), so that the data plane can pick
// from the same table with the same hash (dataplane SetHashPicks).
type Hasher interface {
	// HashTable returns the hash the scheduler computes and, per
	// bucket, the destination Schedule gives every flow whose hash
	// falls there: nil where no destination takes such a flow, or
	// where the answer depends on more than the bucket (mh's fallback
	// hashes the flow again).
	HashTable() (HashKind, []*Dest)
}

// HashIDs is h's table by real id, as a data plane holds it: per bucket
// the id of the real every flow hashing there goes to, 0 where nobody
// or Go decides, and, where mh-fallback hashes the flow again, the id of
// the bucket's unavailable owner with the bit unavail set.
func HashIDs(h Hasher, unavail uint32) (HashKind, []uint32) {
	kind, table := h.HashTable()
	var owners []*Dest
	if fb, ok := h.(interface{ fallbackOwners() []*Dest }); ok {
		owners = fb.fallbackOwners()
	}
	ids := make([]uint32, len(table))
	for i, d := range table {
		switch {
		case d != nil:
			ids[i] = d.ID
		case owners != nil && owners[i] != nil:
			ids[i] = owners[i].ID | unavail
		}
	}
	return kind, ids
}

// HashKind is the hash a Hasher's buckets are indexed by.
type HashKind uint8

// The hashes of sh, dh and mh, as the kernel computes them.
const (
	HashSrc     HashKind = iota + 1 // sh: hash_32(source address, 8)
	HashSrcPort                     // sh-port: hash_32(source port + address, 8)
	HashDst                         // dh: hash_32(destination address, 8)
	HashMH                          // mh: hsiphash(source address) % 4093
	HashMHPort                      // mh-port: hsiphash(source port + address) % 4093
)

// HashTable is sh's: the owner of each bucket if available, else the
// fallback search from there (sh-fallback), which depends on the bucket
// alone.
func (s *sh) HashTable() (HashKind, []*Dest) {
	kind := HashSrc
	if s.flags&FlagPort != 0 {
		kind = HashSrcPort
	}
	out := make([]*Dest, hashTabSize)
	for h := uint32(0); h < hashTabSize; h++ {
		out[h] = lookup(s.buckets[h], s.flags, h, hashTabSize, func(roffset uint32) *Dest {
			return s.buckets[(roffset+h)&(hashTabSize-1)]
		})
	}
	return kind, out
}

// HashTable is dh's: the owner of each bucket if available.
func (s *dh) HashTable() (HashKind, []*Dest) {
	out := make([]*Dest, hashTabSize)
	for h, d := range s.buckets {
		if d != nil && d.Available() {
			out[h] = d
		}
	}
	return HashDst, out
}
