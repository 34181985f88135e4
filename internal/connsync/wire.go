// Package connsync is IPVS's connection synchronization, wire-compatible
// with the kernel's (net/netfilter/ipvs/ip_vs_sync.c, protocol version 1):
// a master multicasts its connections (creations and state changes) to
// backups, which insert them into their own tables, so that established
// connections survive a failover. This file is the message format.
package connsync

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Protocol constants (ip_vs_sync.c, include/uapi/linux/ip_vs.h).
const (
	// ProtoVersion is the sync protocol version xipvs speaks.
	ProtoVersion = 1
	// HeaderLen is struct ip_vs_sync_mesg: reserved, syncid, size,
	// nr_conns, version, spare.
	HeaderLen = 8
	// ConnLenV4 and ConnLenV6 are struct ip_vs_sync_v4 and _v6.
	ConnLenV4 = 36
	ConnLenV6 = 72
	// typeInet6 is STYPE_F_INET6 in a record's type.
	typeInet6 = 1
	// verShift/sizeMask split a record's ver_size.
	verShift = 12
	sizeMask = 0x0fff
	// Options: the kernel's sequence data (24 bytes), persistence engine
	// data and name; OptFParam marks an option a receiver may ignore.
	OptSeqData = 1
	OptPEData  = 2
	OptPEName  = 3
	OptFParam  = 0x40
	// OptLocal is xipvs's FULLNAT local address and port: an optional
	// parameter (OptFParam set), which kernel backups skip.
	OptLocal   = OptFParam | 0x20
	seqDataLen = 24
	// OptAuth is xipvs's message authentication, on a signed message's
	// first record: an 8-byte counter (big endian, rising with every
	// message a master sends) and the first 16 bytes of the HMAC-SHA256,
	// under the pair's shared key, of the whole message with those 16
	// bytes zero. An optional parameter: kernel backups skip it.
	OptAuth    = OptFParam | 0x21
	authLen    = 8 + macLen
	macLen     = 16
	authOptLen = 2 + authLen
)

// IPVS connection flags that travel (IP_VS_CONN_F_*).
const (
	FlagFwdMasq   = 0x0000
	FlagFwdLocal  = 0x0001
	FlagFwdTunnel = 0x0002
	FlagFwdRoute  = 0x0003
	FlagFwdBypass = 0x0004
	FlagFwdMask   = 0x0007
	FlagSync      = 0x0020
	FlagHashed    = 0x0040
	FlagNoOutput  = 0x0080
	FlagInactive  = 0x0100
	FlagSeqMask   = 0x0600
	FlagNoCport   = 0x0800
	FlagTemplate  = 0x1000
	FlagOnePacket = 0x2000
	// FlagBackupMask is what a backup keeps of the flags
	// (IP_VS_CONN_F_BACKUP_MASK).
	FlagBackupMask = FlagFwdMask | FlagNoOutput | FlagInactive | FlagSeqMask | FlagNoCport | FlagTemplate
)

// Conn is one synchronized connection.
type Conn struct {
	Proto   uint8
	Flags   uint32
	State   uint16
	Client  netip.AddrPort
	Virtual netip.AddrPort
	Dest    netip.AddrPort
	FWMark  uint32
	// Timeout is the connection's timeout in seconds (what remains of it
	// on the master is not sent: IPVS sends the state's full timeout).
	Timeout uint32
	// Local is a FULLNAT connection's local address and port (xipvs's
	// OptLocal option); invalid otherwise.
	Local netip.AddrPort
	// SeqData is the kernel's sequence adjustment option, carried
	// through undecoded (xipvs does not adjust sequences for FTP).
	SeqData []byte
}

// V6 reports whether c is an IPv6 connection.
func (c Conn) V6() bool { return c.Client.Addr().Is6() && !c.Client.Addr().Is4In6() }

// Len is the record's length on the wire, before alignment.
func (c Conn) Len() int {
	n := ConnLenV4
	if c.V6() {
		n = ConnLenV6
	}
	if c.Local.IsValid() {
		n += 2 + 2 + c.Local.Addr().BitLen()/8
	}
	if c.SeqData != nil {
		n += 2 + seqDataLen
	}
	return n
}

func align4(n int) int { return (n + 3) &^ 3 }

// AppendConn appends c's record (padded to 4 bytes) to b.
func AppendConn(b []byte, c Conn) []byte {
	b, _ = appendConn(b, c, false)
	return b
}

// appendConn is AppendConn; with auth, the record carries an OptAuth
// option of zeros, whose value starts at the offset it returns.
func appendConn(b []byte, c Conn, auth bool) ([]byte, int) {
	v6 := c.V6()
	size := c.Len()
	if auth {
		size += authOptLen
	}
	typ := byte(0)
	if v6 {
		typ = typeInet6
	}
	b = append(b, typ, c.Proto)
	b = binary.BigEndian.AppendUint16(b, uint16(size&sizeMask)) // version 0
	b = binary.BigEndian.AppendUint32(b, c.Flags&^FlagHashed)
	b = binary.BigEndian.AppendUint16(b, c.State)
	b = binary.BigEndian.AppendUint16(b, c.Client.Port())
	b = binary.BigEndian.AppendUint16(b, c.Virtual.Port())
	b = binary.BigEndian.AppendUint16(b, c.Dest.Port())
	b = binary.BigEndian.AppendUint32(b, c.FWMark)
	b = binary.BigEndian.AppendUint32(b, c.Timeout)
	for _, a := range []netip.Addr{c.Client.Addr(), c.Virtual.Addr(), c.Dest.Addr()} {
		if v6 {
			s := a.As16()
			b = append(b, s[:]...)
		} else {
			s := a.Unmap().As4()
			b = append(b, s[:]...)
		}
	}
	if c.SeqData != nil {
		b = append(b, OptSeqData, seqDataLen)
		b = append(b, c.SeqData[:seqDataLen]...)
	}
	if c.Local.IsValid() {
		a := c.Local.Addr().Unmap()
		b = append(b, OptLocal, byte(2+a.BitLen()/8))
		b = binary.BigEndian.AppendUint16(b, c.Local.Port())
		b = append(b, a.AsSlice()...)
	}
	off := 0
	if auth {
		b = append(b, OptAuth, authLen)
		off = len(b)
		b = append(b, make([]byte, authLen)...)
	}
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b, off
}

// Encoder packs connections into messages of at most MaxLen bytes (the
// multicast interface's MTU less the IP and UDP headers, as IPVS's
// sync_maxlen). With a Key every message is signed (OptAuth), its
// counter from Counter.
type Encoder struct {
	SyncID  uint8
	MaxLen  int
	Key     []byte
	Counter func() uint64
	buf     []byte
	n       int
	authOff int
}

// Add adds c to the message under way; when it does not fit, the full
// message is returned and c starts the next one.
func (e *Encoder) Add(c Conn) (full []byte) {
	need := align4(c.Len())
	if e.n > 0 && (len(e.buf)+need > e.MaxLen || e.n == 255) {
		full = e.Flush()
	}
	if e.n == 0 {
		e.buf = append(e.buf[:0], 0, e.SyncID, 0, 0, 0, ProtoVersion, 0, 0)
	}
	var off int
	e.buf, off = appendConn(e.buf, c, e.n == 0 && e.Key != nil)
	if e.n == 0 {
		e.authOff = off
	}
	e.n++
	return full
}

// Flush returns the message under way (nil if empty), signed if the
// encoder has a key, and starts over.
func (e *Encoder) Flush() []byte {
	if e.n == 0 {
		return nil
	}
	binary.BigEndian.PutUint16(e.buf[2:], uint16(len(e.buf)))
	e.buf[4] = byte(e.n)
	out := append([]byte(nil), e.buf...)
	if e.Key != nil {
		binary.BigEndian.PutUint64(out[e.authOff:], e.Counter())
		copy(out[e.authOff+8:], authMAC(e.Key, out, e.authOff+8))
	}
	e.buf, e.n = e.buf[:0], 0
	return out
}

// authMAC is the MAC of msg whose MAC field starts at off (zero in it
// when computed).
func authMAC(key, msg []byte, off int) []byte {
	var saved [macLen]byte
	copy(saved[:], msg[off:off+macLen])
	clear(msg[off : off+macLen])
	h := hmac.New(sha256.New, key)
	h.Write(msg)
	sum := h.Sum(nil)
	copy(msg[off:], saved[:])
	return sum[:macLen]
}

// Verify errors.
var (
	ErrUnsigned = errors.New("message not signed (no authentication option)")
	ErrBadMAC   = errors.New("message signed with another key, or altered")
)

// Verify checks a message's signature under key and returns its counter.
// It reads no more of the message than it needs to find the option; a
// message it accepts is then decoded as any other.
func Verify(msg, key []byte) (uint64, error) {
	if len(msg) < HeaderLen+ConnLenV4 || int(binary.BigEndian.Uint16(msg[2:])) != len(msg) {
		return 0, ErrShort
	}
	r := msg[HeaderLen:]
	size := int(binary.BigEndian.Uint16(r[2:]) & sizeMask)
	base := ConnLenV4
	if r[0] == typeInet6 {
		base = ConnLenV6
	}
	if size > len(r) || size < base {
		return 0, ErrBogus
	}
	for p := base; p+2 <= size; {
		t, l := r[p], int(r[p+1])
		p += 2
		if l == 0 || p+l > size {
			return 0, ErrBogus
		}
		if t == OptAuth {
			if l != authLen {
				return 0, ErrBogus
			}
			off := HeaderLen + p
			m := make([]byte, len(msg))
			copy(m, msg)
			if !hmac.Equal(authMAC(key, m, off+8), msg[off+8:off+8+macLen]) {
				return 0, ErrBadMAC
			}
			return binary.BigEndian.Uint64(msg[off:]), nil
		}
		p += l
	}
	return 0, ErrUnsigned
}

// Decode errors: the message is dropped whole.
var (
	ErrShort    = errors.New("message shorter than its header")
	ErrSize     = errors.New("message size does not match the datagram")
	ErrVersion0 = errors.New("sync protocol version 0 message (xipvs speaks version 1)")
	ErrSyncID   = errors.New("another sync id")
	ErrBogus    = errors.New("bogus connection record")
)

// Skipped counts records of a well-formed message that were left out.
type Skipped struct {
	// Mandatory: an option the record says must be understood, unknown.
	Mandatory int
	// Protocol: neither TCP nor UDP, or a state out of range.
	Protocol int
	// Template: persistence templates (xipvs keeps them per director).
	Template int
}

// Total is every skipped record.
func (s Skipped) Total() int { return s.Mandatory + s.Protocol + s.Template }

// Decode parses a version 1 message as ip_vs_process_message does: the
// size must be the datagram's, the sync id the backup's (0 takes any),
// every record within the message, of version 0, with well-formed
// options. On an error nothing of the message is used (records before a
// bad one included, unlike the kernel, so that a corrupt message never
// half-applies). Records that are well formed but not usable are
// skipped and counted.
func Decode(msg []byte, syncID uint8) ([]Conn, Skipped, error) {
	var sk Skipped
	if len(msg) < 4 {
		return nil, sk, ErrShort
	}
	if int(binary.BigEndian.Uint16(msg[2:])) != len(msg) {
		return nil, sk, ErrSize
	}
	if syncID != 0 && msg[1] != syncID {
		return nil, sk, ErrSyncID
	}
	if len(msg) < HeaderLen || msg[0] != 0 || msg[5] != ProtoVersion || msg[6] != 0 || msg[7] != 0 {
		return nil, sk, ErrVersion0
	}
	n := int(msg[4])
	out := make([]Conn, 0, n)
	p := HeaderLen
	for i := 0; i < n; i++ {
		if p+ConnLenV4 > len(msg) {
			return nil, sk, fmt.Errorf("%w %d: past the message's end", ErrBogus, i)
		}
		vs := binary.BigEndian.Uint16(msg[p+2:])
		size := int(vs & sizeMask)
		if vs>>verShift != 0 {
			return nil, sk, fmt.Errorf("%w %d: record version %d", ErrBogus, i, vs>>verShift)
		}
		end := p + size
		if end > len(msg) || size < ConnLenV4 {
			return nil, sk, fmt.Errorf("%w %d: size %d", ErrBogus, i, size)
		}
		c, skip, err := decodeConn(msg[p:end])
		if err != nil {
			return nil, sk, fmt.Errorf("%w %d: %v", ErrBogus, i, err)
		}
		switch skip {
		case skipMandatory:
			sk.Mandatory++
		case skipProtocol:
			sk.Protocol++
		case skipTemplate:
			sk.Template++
		default:
			out = append(out, c)
		}
		p += align4(size)
	}
	return out, sk, nil
}

type skipWhy int

const (
	keep skipWhy = iota
	skipMandatory
	skipProtocol
	skipTemplate
)

// numStates is how many states each protocol has (IP_VS_TCP_S_LAST,
// IP_VS_UDP_S_LAST).
var numStates = map[uint8]uint16{6: 11, 17: 1}

func decodeConn(r []byte) (Conn, skipWhy, error) {
	var c Conn
	typ := r[0]
	alen, base := 4, ConnLenV4
	switch typ {
	case 0:
	case typeInet6:
		alen, base = 16, ConnLenV6
	default:
		return c, keep, fmt.Errorf("type %d", typ)
	}
	if len(r) < base {
		return c, keep, fmt.Errorf("%d bytes for a %d-byte record", len(r), base)
	}
	c.Proto = r[1]
	c.Flags = binary.BigEndian.Uint32(r[4:]) & FlagBackupMask
	c.State = binary.BigEndian.Uint16(r[8:])
	cport := binary.BigEndian.Uint16(r[10:])
	vport := binary.BigEndian.Uint16(r[12:])
	dport := binary.BigEndian.Uint16(r[14:])
	c.FWMark = binary.BigEndian.Uint32(r[16:])
	c.Timeout = binary.BigEndian.Uint32(r[20:])
	addr := func(off int) netip.Addr {
		if alen == 4 {
			return netip.AddrFrom4([4]byte(r[off : off+4]))
		}
		return netip.AddrFrom16([16]byte(r[off : off+16]))
	}
	c.Client = netip.AddrPortFrom(addr(24), cport)
	c.Virtual = netip.AddrPortFrom(addr(24+alen), vport)
	c.Dest = netip.AddrPortFrom(addr(24+2*alen), dport)
	why := keep
	seen := map[byte]bool{}
	for p := base; p < len(r); {
		if p+2 > len(r) {
			return c, keep, errors.New("option header past the record")
		}
		t, l := r[p], int(r[p+1])
		p += 2
		if l == 0 || p+l > len(r) {
			return c, keep, fmt.Errorf("option %d of length %d", t, l)
		}
		v := r[p : p+l]
		p += l
		kind := t &^ OptFParam
		if seen[kind] && (kind == OptSeqData || kind == OptPEData || kind == OptPEName || t == OptLocal || t == OptAuth) {
			return c, keep, fmt.Errorf("option %d twice", kind)
		}
		seen[kind] = true
		switch {
		case kind == OptSeqData:
			if l != seqDataLen {
				return c, keep, fmt.Errorf("sequence option of %d bytes", l)
			}
			c.SeqData = append([]byte(nil), v...)
		case kind == OptPEData || kind == OptPEName:
			// Persistence engines (SIP): not xipvs's; the data is ignored.
		case t == OptAuth:
			// Checked by Verify, where the backup has a key.
		case t == OptLocal:
			if l != 6 && l != 18 {
				return c, keep, fmt.Errorf("local address option of %d bytes", l)
			}
			var la netip.Addr
			if l == 6 {
				la = netip.AddrFrom4([4]byte(v[2:6]))
			} else {
				la = netip.AddrFrom16([16]byte(v[2:18]))
			}
			c.Local = netip.AddrPortFrom(la, binary.BigEndian.Uint16(v))
		case t&OptFParam == 0:
			why = skipMandatory
		}
	}
	if why != keep {
		return c, why, nil
	}
	if c.Flags&FlagTemplate != 0 {
		return c, skipTemplate, nil
	}
	if ns, ok := numStates[c.Proto]; !ok || c.State >= ns {
		return c, skipProtocol, nil
	}
	return c, keep, nil
}
