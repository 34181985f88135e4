package dataplane

import (
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// mmapWords maps array map m (BPF_F_MMAPABLE, 8-byte values) into this
// process, for atomic reads and writes in place: the mapping to unmap,
// and the values over it.
func mmapWords[T ~uint64 | ~int64](m *ebpf.Map) ([]byte, []T, error) {
	n := int(m.MaxEntries())
	size := (n*8 + unix.Getpagesize() - 1) &^ (unix.Getpagesize() - 1)
	mem, err := unix.Mmap(m.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return mem, unsafe.Slice((*T)(unsafe.Pointer(&mem[0])), n), nil
}
