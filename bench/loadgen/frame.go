package loadgen

import (
	"encoding/binary"
	"errors"
)

// Tag is what the closed loop writes into the last TagLen bytes of a
// frame it seeds: the slot the frame fills and the slot's generation.
type Tag struct {
	Slot uint32
	Gen  uint16
}

// writer writes flows of one Flows into frames from user space, as the
// generator program writes them in the kernel (write_flow in
// bpf/loadgen.bpf.c): the same configuration, the same checksum bases.
type writer struct {
	cfg  loadgenGenCfg
	tmpl []byte
}

func newWriter(f Flows) (*writer, error) {
	cfg, err := f.config()
	if err != nil {
		return nil, err
	}
	return &writer{cfg: cfg, tmpl: f.Template}, nil
}

// size is the length of every frame the writer writes.
func (w *writer) size() int { return len(w.tmpl) }

// flow returns flow number n of a sequence: n modulo the flow count
// when there is one.
func (w *writer) flow(n uint64) uint64 {
	if w.cfg.Flows != 0 {
		return n % uint64(w.cfg.Flows)
	}
	return n
}

// write fills buf (at least size bytes) with the frame of flow n,
// carrying tag if the flows are tagged, and returns its length.
func (w *writer) write(buf []byte, n uint64, tag Tag) int {
	c := &w.cfg
	l := len(w.tmpl)
	copy(buf[:l], w.tmpl)
	var tail uint32
	if c.Tail != 0 {
		t := buf[l-TagLen : l]
		binary.BigEndian.PutUint16(t[0:], uint16(loadgenLoopConstLOOP_MAGIC))
		binary.NativeEndian.PutUint16(t[2:], tag.Gen)
		binary.NativeEndian.PutUint32(t[4:], tag.Slot)
		for i := 0; i < TagLen; i += 2 {
			tail += uint32(binary.LittleEndian.Uint16(t[i:]))
		}
	}
	ports := max(c.Ports, 1)
	// In network order, loaded as the program loads it (little endian).
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], c.AddrBase+uint32(n/uint64(ports)))
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], c.PortBase+uint16(n%uint64(ports)))
	addr := binary.LittleEndian.Uint32(a[:])
	port := uint32(binary.LittleEndian.Uint16(p[:]))
	if c.V6 != 0 {
		copy(buf[gen6SrcLow:], a[:])
		copy(buf[gen6TCPOff:], p[:])
		binary.LittleEndian.PutUint16(buf[gen6TCPOff+16:], fold(c.TcpSum+addr&0xffff+addr>>16+port+tail))
		return l
	}
	copy(buf[genIPOff+12:], a[:])
	copy(buf[genTCPOff:], p[:])
	binary.LittleEndian.PutUint16(buf[genIPOff+10:], fold(c.IpSum+addr&0xffff+addr>>16))
	binary.LittleEndian.PutUint16(buf[genTCPOff+16:], fold(c.TcpSum+addr&0xffff+addr>>16+port+tail))
	return l
}

// gen6SrcLow is the offset of an IPv6 source address's last 32 bits.
const gen6SrcLow = genIPOff + 8 + 12

func fold(s uint32) uint16 {
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return ^uint16(s)
}

// errNoRoom is returned when an AF_XDP ring stays full.
var errNoRoom = errors.New("af_xdp tx ring stayed full")
