package connsync

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// unhex reads hex with spaces and comments ("# ...") for hand-written
// messages.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	var clean strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if i := strings.Index(l, "#"); i >= 0 {
			l = l[:i]
		}
		clean.WriteString(strings.Join(strings.Fields(l), ""))
	}
	b, err := hex.DecodeString(clean.String())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// kernelV4 is a version 1 message as the kernel's ip_vs_sync_conn
// writes it, laid out by hand from struct ip_vs_sync_mesg and struct
// ip_vs_sync_v4: one TCP connection in ESTABLISHED of a DR real, timeout
// 900 s. Its flags carry IP_VS_CONN_F_HASHED, which a master masks off
// and a receiver must mask too.
const kernelV4 = `
00 07 002c  01 01 0000          # reserved 0, syncid 7, size 44, 1 conn, version 1, spare
00 06 0024                      # type 0 (IPv4), TCP, version 0 | size 36
00000043                        # flags: DROUTE (3) | HASHED (0x40)
0001 9c40 0050 0050             # state ESTABLISHED, cport 40000, vport 80, dport 80
00000000 00000384               # fwmark 0, timeout 900
c6336407 c000020a 0a01000b      # caddr 198.51.100.7, vaddr 192.0.2.10, daddr 10.1.0.11
`

func TestDecodeKernelV4(t *testing.T) {
	msg := unhex(t, kernelV4)
	conns, sk, err := Decode(msg, 7)
	if err != nil || sk.Total() != 0 || len(conns) != 1 {
		t.Fatalf("decode: %v, skipped %+v, %d conns", err, sk, len(conns))
	}
	c := conns[0]
	want := Conn{Proto: 6, Flags: FlagFwdRoute, State: 1, Client: netip.MustParseAddrPort("198.51.100.7:40000"),
		Virtual: netip.MustParseAddrPort("192.0.2.10:80"), Dest: netip.MustParseAddrPort("10.1.0.11:80"), Timeout: 900}
	if c.Proto != want.Proto || c.Flags != want.Flags || c.State != want.State || c.Client != want.Client ||
		c.Virtual != want.Virtual || c.Dest != want.Dest || c.Timeout != want.Timeout || c.FWMark != 0 || c.Local.IsValid() {
		t.Errorf("decoded %+v\nwant    %+v", c, want)
	}
	// Another sync id is refused; 0 takes any.
	if _, _, err := Decode(msg, 8); !errors.Is(err, ErrSyncID) {
		t.Errorf("sync id 8: %v", err)
	}
	if _, _, err := Decode(msg, 0); err != nil {
		t.Errorf("sync id 0: %v", err)
	}
	// What xipvs encodes for the same connection is the kernel's bytes
	// (HASHED masked off, as the kernel's master does).
	e := Encoder{SyncID: 7, MaxLen: 1472}
	if full := e.Add(want); full != nil {
		t.Fatal("one connection filled a message")
	}
	got := e.Flush()
	wantBytes := append([]byte(nil), msg...)
	wantBytes[8+7] = 0x03 // flags without HASHED
	if !bytes.Equal(got, wantBytes) {
		t.Errorf("encoded\n%x\nwant\n%x", got, wantBytes)
	}
}

func TestDecodeKernelV6AndOptions(t *testing.T) {
	// Built field by field: an IPv6 UDP NAT record with the kernel's
	// sequence option, then an IPv4 record with an unknown mandatory
	// option (skipped, counted), in one message.
	rec6 := unhex(t, `
01 11 0062
00000000
0000 1389 0035 1435
00000000 0000012c
20010db8007700000000000000000007
20010db8000000000000000000000100
20010db8000100000000000000000011
01 18 000000010000000200000003000000040000000500000006
`)
	rec6 = append(rec6, 0, 0) // 98 bytes, aligned to 100
	rec4 := unhex(t, `
00 06 0028
00000003
0001 9c41 0050 0050
00000000 00000384
c6336407 c000020a 0a01000b
09 02 abcd
`)
	msg := append(unhex(t, "00 00 0000 02 01 0000"), rec6...)
	msg = append(msg, rec4...)
	msg[2], msg[3] = byte(len(msg)>>8), byte(len(msg))
	conns, sk, err := Decode(msg, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 1 || sk.Mandatory != 1 {
		t.Fatalf("%d conns, skipped %+v", len(conns), sk)
	}
	c := conns[0]
	if c.Proto != 17 || c.Flags != FlagFwdMasq || c.Client != netip.MustParseAddrPort("[2001:db8:77::7]:5001") ||
		c.Virtual != netip.MustParseAddrPort("[2001:db8::100]:53") || c.Dest != netip.MustParseAddrPort("[2001:db8:1::11]:5173") ||
		c.Timeout != 300 || len(c.SeqData) != 24 || c.SeqData[3] != 1 || c.SeqData[23] != 6 {
		t.Errorf("decoded %+v", c)
	}
	// Encoding it again gives the same record.
	if got := AppendConn(nil, c); !bytes.Equal(got, rec6) {
		t.Errorf("re-encoded\n%x\nwant\n%x", got, rec6)
	}
}

func TestLocalOption(t *testing.T) {
	c := Conn{Proto: 6, Flags: FlagFwdMasq, State: 1, Client: netip.MustParseAddrPort("198.51.100.7:40000"),
		Virtual: netip.MustParseAddrPort("192.0.2.10:80"), Dest: netip.MustParseAddrPort("10.1.0.11:8080"),
		Timeout: 900, Local: netip.MustParseAddrPort("10.1.0.250:5000")}
	rec := AppendConn(nil, c)
	// 36 + option (type 0x60, length 6, port, address) = 44, aligned.
	want := unhex(t, "00 06 002c 00000000 0001 9c40 0050 1f90 00000000 00000384 c6336407 c000020a 0a01000b 60 06 1388 0a0100fa")
	if !bytes.Equal(rec, want) {
		t.Fatalf("record\n%x\nwant\n%x", rec, want)
	}
	e := Encoder{MaxLen: 1472}
	e.Add(c)
	conns, _, err := Decode(e.Flush(), 0)
	if err != nil || len(conns) != 1 || conns[0].Local != c.Local {
		t.Errorf("round trip: %+v, %v", conns, err)
	}
}

func TestDecodeRefuses(t *testing.T) {
	good := unhex(t, kernelV4)
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for name, tc := range map[string]struct {
		msg  []byte
		want error
	}{
		"short":        {good[:3], ErrShort},
		"size":         {mod(func(b []byte) []byte { b[3]++; return b }), ErrSize},
		"truncated":    {good[:40], ErrSize},
		"version 0":    {mod(func(b []byte) []byte { b[5] = 0; return b }), ErrVersion0},
		"reserved":     {mod(func(b []byte) []byte { b[0] = 1; return b }), ErrVersion0},
		"two conns":    {mod(func(b []byte) []byte { b[4] = 2; return b }), ErrBogus},
		"record size":  {mod(func(b []byte) []byte { b[11] = 40; return b }), ErrBogus},
		"small record": {mod(func(b []byte) []byte { b[11] = 8; return b }), ErrBogus},
		"record ver":   {mod(func(b []byte) []byte { b[10] |= 0x10; return b }), ErrBogus},
		"record type":  {mod(func(b []byte) []byte { b[8] = 2; return b }), ErrBogus},
	} {
		if _, _, err := Decode(tc.msg, 7); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	// A state out of range and an unknown protocol are skipped.
	bad := mod(func(b []byte) []byte { b[17] = 11; return b })
	if conns, sk, err := Decode(bad, 7); err != nil || len(conns) != 0 || sk.Protocol != 1 {
		t.Errorf("state 11: %v %+v %v", conns, sk, err)
	}
}

// TestEncoderSplits: connections fill messages up to MaxLen and 255.
func TestEncoderSplits(t *testing.T) {
	e := Encoder{SyncID: 1, MaxLen: 1472}
	var msgs [][]byte
	for i := 0; i < 100; i++ {
		c := Conn{Proto: 6, State: 1, Flags: FlagFwdRoute, Client: netip.AddrPortFrom(netip.MustParseAddr("198.51.100.7"), uint16(1000+i)),
			Virtual: netip.MustParseAddrPort("192.0.2.10:80"), Dest: netip.MustParseAddrPort("10.1.0.11:80"), Timeout: 900}
		if full := e.Add(c); full != nil {
			msgs = append(msgs, full)
		}
	}
	msgs = append(msgs, e.Flush())
	total := 0
	for _, m := range msgs {
		if len(m) > 1472 {
			t.Errorf("message of %d bytes", len(m))
		}
		conns, _, err := Decode(m, 1)
		if err != nil {
			t.Fatal(err)
		}
		total += len(conns)
	}
	// (1472 - 8) / 36 = 40 per message.
	if total != 100 || len(msgs) != 3 || len(msgs[0]) != 8+40*36 {
		t.Errorf("%d connections in %d messages (first %d bytes)", total, len(msgs), len(msgs[0]))
	}
}

// FuzzDecode: any datagram is decoded or refused, never a panic, and
// what decodes encodes back to records that decode the same.
func FuzzDecode(f *testing.F) {
	f.Add(unhex(f, kernelV4), uint8(7))
	f.Add(unhex(f, "00 00 0008 00 01 0000"), uint8(0))
	f.Fuzz(func(t *testing.T, msg []byte, id uint8) {
		// Verify reads any message without a fault, and never takes
		// one this key did not sign.
		if _, err := Verify(msg, []byte("fuzz key 16 byte")); err == nil {
			t.Fatalf("a message the fuzzer made passes Verify: %x", msg)
		}
		conns, _, err := Decode(msg, id)
		if err != nil {
			return
		}
		e := Encoder{SyncID: msg[1], MaxLen: 65535}
		for _, c := range conns {
			e.Add(c)
		}
		again, _, err := Decode(e.Flush(), 0)
		if len(conns) > 0 && (err != nil || len(again) != len(conns)) {
			t.Fatalf("re-decode: %v (%d of %d)", err, len(again), len(conns))
		}
		for i := range again {
			a, b := again[i], conns[i]
			if a.Client != b.Client || a.Virtual != b.Virtual || a.Dest != b.Dest || a.State != b.State || a.Local != b.Local ||
				a.Flags != b.Flags || a.Timeout != b.Timeout || a.FWMark != b.FWMark || a.Proto != b.Proto {
				t.Fatalf("record %d: %+v became %+v", i, b, a)
			}
		}
	})
}
