package sched

import "math/bits"

// mh is ip_vs_mh.c: Maglev hashing. Each destination walks its own
// permutation of a prime-sized lookup table (offset and skip from two
// keyed hashes of its address and port) and claims free slots, as many
// per round as its weight (last_weight, divided by the gcd and shifted so
// the largest fits in MH_TAB_BITS bits). A flow takes the slot of the
// hash of its source address (plus source port with mh-port); with
// mh-fallback an unavailable owner sends the search on as in sh.
type mh struct {
	noCounts
	lookup []*Dest
	flags  Flags
}

// mhTabIndex is CONFIG_IP_VS_MH_TAB_INDEX (12): the table has
// primes[12-8] = 4093 slots and weights are cut to 12/2 = 6 bits.
const (
	mhTabIndex = 12
	mhTabBits  = mhTabIndex / 2
)

var mhPrimes = []uint32{251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071}

var mhTabSize = mhPrimes[mhTabIndex-8]

// The kernel's fixed hsiphash keys (generate_hash_secret).
var (
	mhKey1 = [2]uint64{2654435761, 2654435761}
	mhKey2 = [2]uint64{2654446892, 2654446892}
)

func init() { Register("mh", func() Scheduler { return &mh{} }) }

func (s *mh) Name() string { return "mh" }

// FlagNames are ipvsadm's names of flag-1 and flag-2 for mh.
func (s *mh) FlagNames() [2]string { return [2]string{"mh-fallback", "mh-port"} }

func (s *mh) SetFlags(f Flags) { s.flags = f }

// mhHash is ip_vs_mh_hashkey: hsiphash of the 32-bit value
// offset + port + addr.
func mhHash(addr, port, offset uint32, key [2]uint64) uint32 {
	return hsiphash32(offset+port+addr, key)
}

// Update is ip_vs_mh_dest_changed: gcd and shift of the last weights,
// then ip_vs_mh_permutate and ip_vs_mh_populate.
func (s *mh) Update(dests []*Dest) {
	size := mhTabSize
	if s.lookup == nil {
		s.lookup = make([]*Dest, size)
	}
	g, mw := 0, 0
	for _, d := range dests {
		if w := d.LastWeight; w > 0 {
			if g > 0 {
				g = gcd(w, g)
			} else {
				g = w
			}
		}
		if d.LastWeight > mw {
			mw = d.LastWeight
		}
	}
	if g < 1 || len(dests) > int(size) {
		// No weight at all (or more reals than slots, which the
		// kernel refuses with EINVAL): an empty table.
		clear(s.lookup)
		return
	}
	shift := bits.Len(uint(mw/g)) - mhTabBits
	if shift < 0 {
		shift = 0
	}
	type setup struct {
		perm, skip uint32
		turns      int
	}
	ds := make([]setup, len(dests))
	for i, d := range dests {
		a, p := addr32(d.Addr), uint32(d.Port)
		offset := mhHash(a, p, 0, mhKey1) % size
		ds[i] = setup{perm: offset, skip: mhHash(a, p, 0, mhKey2)%(size-1) + 1}
		lw := d.LastWeight
		if ds[i].turns = (lw / g) >> shift; ds[i].turns == 0 && lw != 0 {
			ds[i].turns = 1
		}
	}
	// ip_vs_mh_populate: round after round, each destination in list
	// order claims turns slots, each the next free one on its permutation.
	taken := make([]bool, size)
	for n := uint32(0); ; {
		for i := range ds {
			for t := 0; t < ds[i].turns; t++ {
				c := ds[i].perm
				for taken[c] {
					if ds[i].perm += ds[i].skip; ds[i].perm >= size {
						ds[i].perm -= size
					}
					c = ds[i].perm
				}
				taken[c] = true
				s.lookup[c] = dests[i]
				if n++; n == size {
					return
				}
			}
		}
	}
}

func (s *mh) Schedule(f Flow) *Dest {
	if s.lookup == nil {
		return nil
	}
	var port uint32
	if s.flags&FlagPort != 0 {
		port = uint32(f.SrcPort)
	}
	a := addr32(f.Src)
	ihash := mhHash(a, port, 0, mhKey1) % mhTabSize
	return lookup(s.lookup[ihash], s.flags, ihash, mhTabSize, func(roffset uint32) *Dest {
		return s.lookup[mhHash(a, port, roffset, mhKey1)%mhTabSize]
	})
}

// hsiphash32 is the kernel's hsiphash of one 32-bit word on 64-bit
// machines: SipHash-1-3 with a 128-bit key, truncated to 32 bits.
func hsiphash32(v uint32, key [2]uint64) uint32 {
	v0 := uint64(0x736f6d6570736575) ^ key[0]
	v1 := uint64(0x646f72616e646f6d) ^ key[1]
	v2 := uint64(0x6c7967656e657261) ^ key[0]
	v3 := uint64(0x7465646279746573) ^ key[1]
	b := uint64(4)<<56 | uint64(v)
	round := func() {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13)
		v1 ^= v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16)
		v3 ^= v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21)
		v3 ^= v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17)
		v1 ^= v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	v3 ^= b
	round()
	v0 ^= b
	v2 ^= 0xff
	round()
	round()
	round()
	return uint32((v0 ^ v1) ^ (v2 ^ v3))
}

// fallbackOwners is mh's table of owners with mh-fallback, whose
// unavailable owners send a flow on to a search that hashes it again
// (HashIDs); nil without.
func (s *mh) fallbackOwners() []*Dest {
	if s.flags&FlagFallback == 0 {
		return nil
	}
	return s.lookup
}

// HashTable is mh's: the owner of each slot if available; an
// unavailable owner leaves the slot to Go (no destination, or, with
// mh-fallback, a search that hashes the flow again).
func (s *mh) HashTable() (HashKind, []*Dest) {
	kind := HashMH
	if s.flags&FlagPort != 0 {
		kind = HashMHPort
	}
	out := make([]*Dest, mhTabSize)
	for i, d := range s.lookup {
		if d != nil && !unavailable(d) {
			out[i] = d
		}
	}
	return kind, out
}
