package dataplane

// connentries.go: the connection table as Go reads and writes it: an
// entry where it belongs (the established table or the embryonic LRU),
// looked up, deleted and walked in either.

import (
	"github.com/xipvs/xipvs/dataplane/bpfobj"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// SetConn writes a connection entry where it is: in the established
// table if it is there, else in the embryonic one.
func (d *Dataplane) SetConn(k ConnKey, c Conn) error {
	if k.Src.Is6() {
		d.ipv6.Store(true)
		return setConnIn(d.objs.EstConns6, d.objs.Conns6, k.raw6(), c.raw6())
	}
	return setConnIn(d.objs.EstConns, d.objs.Conns, k.raw(), c.raw())
}

// setConnIn writes entry v under key k: in table est if it is there,
// else in table emb.
func setConnIn[K, V any](est, emb *ebpf.Map, k K, v V) error {
	err := est.Update(&k, &v, ebpf.UpdateExist)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("set conn: %w", err)
	}
	if err := emb.Put(&k, &v); err != nil {
		return fmt.Errorf("set conn: %w", err)
	}
	return nil
}

// LookupConn reads a connection entry.
func (d *Dataplane) LookupConn(k ConnKey) (Conn, bool, error) {
	if k.Src.Is6() {
		raw := k.raw6()
		v, found, err := lookupIn[bpfobj.DirectorConnKey6, bpfobj.DirectorConnVal6](&raw, d.objs.EstConns6, d.objs.Conns6)
		if !found || err != nil {
			return Conn{}, false, err
		}
		return connFromRaw6(v), true, nil
	}
	raw := k.raw()
	v, found, err := d.lookupRaw(&raw)
	if !found || err != nil {
		return Conn{}, false, err
	}
	return connFromRaw(v), true, nil
}

// lookupRaw finds an entry in the established table, then the embryonic
// one, as the program does.
func (d *Dataplane) lookupRaw(k *bpfobj.DirectorConnKey) (bpfobj.DirectorConnVal, bool, error) {
	return lookupIn[bpfobj.DirectorConnKey, bpfobj.DirectorConnVal](k, d.objs.EstConns, d.objs.Conns)
}

// lookupIn finds key k in the first of maps that has it.
func lookupIn[K, V any](k *K, maps ...*ebpf.Map) (V, bool, error) {
	var v V
	for _, m := range maps {
		err := m.Lookup(k, &v)
		if err == nil {
			return v, true, nil
		}
		if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return v, false, fmt.Errorf("lookup conn: %w", err)
		}
	}
	return v, false, nil
}

// DeleteConn removes a connection entry from either table, and a SYN
// proxied one's adjustments; a missing one is not an error.
func (d *Dataplane) DeleteConn(k ConnKey) error {
	if k.Src.Is6() {
		return deleteIn(k.raw6(), d.objs.EstConns6, d.objs.Conns6)
	}
	return deleteIn(k.raw(), d.objs.EstConns, d.objs.Conns, d.objs.Seqadjs)
}

// deleteIn deletes key k from each of maps; a missing key is not an
// error.
func deleteIn[K any](k K, maps ...*ebpf.Map) error {
	for _, m := range maps {
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete conn: %w", err)
		}
	}
	return nil
}

// connBatch is how many entries one batched lookup returns.
const connBatch = 4096

// WalkConns calls fn for every connection, reading the table in batches
// so that a walk never holds the map for long. Entries may change while
// the walk runs; fn returning false stops it.
func (d *Dataplane) WalkConns(fn func(ConnKey, Conn) bool) error {
	more, err := walkIn(fn, func(k bpfobj.DirectorConnKey, v bpfobj.DirectorConnVal) (ConnKey, Conn) { return connKeyFromRaw(k), connFromRaw(v) },
		d.objs.EstConns, d.objs.Conns)
	if err != nil || !more {
		return err
	}
	_, err = walkIn(fn, func(k bpfobj.DirectorConnKey6, v bpfobj.DirectorConnVal6) (ConnKey, Conn) {
		return connKeyFromRaw6(k), connFromRaw6(v)
	},
		d.objs.EstConns6, d.objs.Conns6)
	return err
}

// walkIn calls fn for every entry of maps, converted by conv, in
// batches; it reports whether fn wants more.
func walkIn[K, V any](fn func(ConnKey, Conn) bool, conv func(K, V) (ConnKey, Conn), maps ...*ebpf.Map) (bool, error) {
	keys := make([]K, connBatch)
	vals := make([]V, connBatch)
	for _, m := range maps {
		var cursor ebpf.MapBatchCursor
		for {
			n, err := m.BatchLookup(&cursor, keys, vals, nil)
			for i := 0; i < n; i++ {
				if !fn(conv(keys[i], vals[i])) {
					return false, nil
				}
			}
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				break
			}
			if err != nil {
				return false, fmt.Errorf("walk conns: %w", err)
			}
		}
	}
	return true, nil
}
