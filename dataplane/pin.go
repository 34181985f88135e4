package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

const bpffsRoot = "/sys/fs/bpf"

func isBPFFS(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// preparePinDir makes dir, on a BPF filesystem: /sys/fs/bpf is mounted
// if dir is under it and nothing is mounted there yet.
func preparePinDir(dir string, flush bool) error {
	parent := dir
	for {
		if _, err := os.Stat(parent); err == nil {
			break
		}
		parent = filepath.Dir(parent)
	}
	if !isBPFFS(parent) {
		if !strings.HasPrefix(filepath.Clean(dir)+"/", bpffsRoot+"/") {
			return fmt.Errorf("pin directory %s is not on a BPF filesystem (mount -t bpf bpf DIR)", dir)
		}
		if err := os.MkdirAll(bpffsRoot, 0o700); err != nil {
			return err
		}
		if !isBPFFS(bpffsRoot) {
			if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
				return fmt.Errorf("mount bpffs on %s: %w", bpffsRoot, err)
			}
		}
	}
	if flush {
		if err := Cleanup(dir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pin directory: %w", err)
	}
	return nil
}

// dropStalePins removes from dir the pins of the maps this version lays
// out differently from the xipvsd that pinned them (an upgrade that adds
// a counter or a field), so that they are created afresh: counters start
// from zero, and the configuration maps are rewritten when the state is
// restored. The connection tables are never dropped: one that does not
// fit is left for the load to refuse, with the --flush advice.
func dropStalePins(spec *ebpf.CollectionSpec, dir string, log *slog.Logger) error {
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName || name == bpfobj.DirectorMapConns || name == bpfobj.DirectorMapEstConns {
			continue
		}
		path := filepath.Join(dir, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("pinned map %s: %w", name, err)
		}
		stale := ms.Compatible(m)
		m.Close()
		if stale == nil {
			continue
		}
		log.Warn("a pinned map does not fit this xipvsd: created afresh, the connection tables are kept",
			"map", name, "reason", stale)
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove stale pin %s: %w", path, err)
		}
	}
	return nil
}

// pinned reports whether dir holds a pinned connection table.
func pinned(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, bpfobj.DirectorMapConns))
	return err == nil
}

func linkPin(dir, ifname string) string { return filepath.Join(dir, "link_"+ifname) }

// attach attaches the director to ifc natively. With a pin directory the
// link is pinned, and a link pinned by an earlier xipvsd on the same
// interface is taken over and switched to this program atomically (no
// packet sees an interface without XDP).
func (d *Dataplane) attach(ifc Interface) (link.Link, error) {
	var path string
	if d.pinDir != "" {
		path = linkPin(d.pinDir, ifc.Name)
		if lk, err := link.LoadPinnedLink(path, nil); err == nil {
			info, ierr := lk.Info()
			if ierr == nil && info.XDP() != nil && int(info.XDP().Ifindex) == ifc.Index {
				if err := lk.Update(d.objs.XipvsDirector); err == nil {
					d.log.Info("adopted pinned xdp link", "interface", ifc.Name)
					return lk, nil
				}
			}
			// Stale: another interface of that name, or defunct.
			_ = lk.Unpin()
			_ = lk.Close()
		} else if !errors.Is(err, os.ErrNotExist) {
			_ = os.Remove(path)
		}
	}
	lk, err := link.AttachXDP(link.XDPOptions{Program: d.objs.XipvsDirector, Interface: ifc.Index, Flags: link.XDPDriverMode})
	if err != nil {
		return nil, fmt.Errorf("attach xdp (native) to %s: %w", ifc.Name, err)
	}
	if path != "" {
		if err := lk.Pin(path); err != nil {
			_ = lk.Close()
			return nil, fmt.Errorf("pin xdp link of %s: %w", ifc.Name, err)
		}
	}
	return lk, nil
}

// Cleanup removes everything a daemon pinned in dir: the links (which
// detaches the director from its interfaces) and the maps (which frees
// the connection table once no process holds it).
func Cleanup(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs error
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if strings.HasPrefix(e.Name(), "link_") {
			if lk, err := link.LoadPinnedLink(p, nil); err == nil {
				errs = errors.Join(errs, lk.Unpin(), lk.Close())
				continue
			}
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = errors.Join(errs, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = errors.Join(errs, err)
	}
	return errs
}

// ServiceKeys lists the keys in the services map.
func (d *Dataplane) ServiceKeys() ([]ServiceKey, error) {
	var out []ServiceKey
	var k bpfobj.DirectorSvcKey
	var v bpfobj.DirectorSvcVal
	it := d.objs.Services.Iterate()
	for it.Next(&k, &v) {
		out = append(out, ServiceKey{VIP: addrFromBE32(k.Vip), Port: fromBE16(k.Port), Proto: k.Proto})
	}
	if err := it.Err(); err != nil {
		return nil, err
	}
	var k6 bpfobj.DirectorSvcKey6
	it = d.objs.Services6.Iterate()
	for it.Next(&k6, &v) {
		out = append(out, ServiceKey{VIP: netip.AddrFrom16(k6.Vip), Port: fromBE16(k6.Port), Proto: k6.Proto})
	}
	return out, it.Err()
}

// RealIDs lists the ids of the real-server entries in use.
func (d *Dataplane) RealIDs() ([]uint32, error) {
	var out []uint32
	var v bpfobj.DirectorReal
	for id := uint32(1); id < MaxReals; id++ {
		if err := d.objs.Reals.Lookup(id, &v); err != nil {
			return nil, err
		}
		if v.Addr != 0 || v.Flags&realFlagIPv6 != 0 {
			out = append(out, id)
		}
	}
	return out, nil
}

// ConnTableMemory is the kernel's accounting of the connection table's
// memory (the map's memlock: elements, keys, values, buckets and LRU
// lists), in bytes.
func (d *Dataplane) ConnTableMemory() (uint64, error) {
	var total uint64
	for _, m := range []*ebpf.Map{d.objs.Conns, d.objs.EstConns, d.objs.Conns6, d.objs.EstConns6} {
		info, err := m.Info()
		if err != nil {
			return 0, err
		}
		n, ok := info.Memlock()
		if !ok {
			return 0, fmt.Errorf("kernel does not report map memory")
		}
		total += n
	}
	return total, nil
}
