package testutil

import (
	"encoding/binary"
	"testing"
)

// Fragment4 cuts frame's IPv4 datagram (a 20-byte header) at the given
// payload offsets (multiples of 8), as a router would: each fragment has
// the header, DF clear, its offset and MF but the last.
func Fragment4(t testing.TB, frame []byte, cuts ...int) [][]byte {
	t.Helper()
	ip := frame[14:]
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	payload := ip[20:total]
	bounds := append(append([]int{0}, cuts...), len(payload))
	var out [][]byte
	for i := 0; i+1 < len(bounds); i++ {
		a, b := bounds[i], bounds[i+1]
		if a%8 != 0 {
			t.Fatalf("cut at %d: not a multiple of 8", a)
		}
		f := append(append([]byte(nil), frame[:14+20]...), payload[a:b]...)
		h := f[14:]
		binary.BigEndian.PutUint16(h[2:4], uint16(20+b-a))
		fo := uint16(a / 8)
		if i+2 < len(bounds) {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(h[6:8], fo)
		SetIPv4Csum(h[:20])
		out = append(out, f)
	}
	return out
}

// SetIPv4Csum sets IPv4 header h's checksum.
func SetIPv4Csum(h []byte) {
	h[10], h[11] = 0, 0
	var s uint32
	for i := 0; i < len(h); i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	binary.BigEndian.PutUint16(h[10:12], ^uint16(s))
}
