package connsync

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"testing"
)

func signedConns() []Conn {
	return []Conn{
		{Proto: 6, Flags: FlagFwdRoute, State: 1, Timeout: 900, Client: netip.MustParseAddrPort("198.51.100.7:40000"),
			Virtual: netip.MustParseAddrPort("192.0.2.10:80"), Dest: netip.MustParseAddrPort("10.0.0.11:80")},
		{Proto: 6, Flags: FlagFwdMasq, State: 1, Timeout: 900, Client: netip.MustParseAddrPort("198.51.100.8:40001"),
			Virtual: netip.MustParseAddrPort("192.0.2.10:81"), Dest: netip.MustParseAddrPort("10.0.0.12:8080"),
			Local: netip.MustParseAddrPort("10.0.0.250:5000")},
		{Proto: 17, Flags: FlagFwdRoute, Timeout: 300, Client: netip.MustParseAddrPort("[2001:db8::7]:5353"),
			Virtual: netip.MustParseAddrPort("[2001:db8::10]:53"), Dest: netip.MustParseAddrPort("[2001:db8::11]:53")},
	}
}

// TestSignedMessages: with a key, every message carries OptAuth on its
// first record; Verify accepts it under that key and returns the
// counter, and refuses it under another key, altered in any byte, or
// with no signature. A backup without a key (a kernel's) decodes a
// signed message to the same connections: the option is optional.
func TestSignedMessages(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	var ctr uint64 = 41
	enc := Encoder{SyncID: 7, MaxLen: 1472, Key: key, Counter: func() uint64 { ctr++; return ctr }}
	plain := Encoder{SyncID: 7, MaxLen: 1472}
	for _, c := range signedConns() {
		enc.Add(c)
		plain.Add(c)
	}
	msg, unsigned := enc.Flush(), plain.Flush()
	if len(msg) != len(unsigned)+align4(authOptLen) && len(msg) != len(unsigned)+authOptLen {
		t.Errorf("a signed message of %d bytes, unsigned %d", len(msg), len(unsigned))
	}
	n, err := Verify(msg, key)
	if err != nil || n != 42 {
		t.Fatalf("Verify: counter %d, %v; want 42", n, err)
	}
	got, sk, err := Decode(msg, 7)
	want, _, _ := Decode(unsigned, 7)
	if err != nil || sk.Total() != 0 || len(got) != len(want) {
		t.Fatalf("Decode of a signed message: %d conns, skipped %+v, %v", len(got), sk, err)
	}
	for i := range got {
		if got[i].Client != want[i].Client || got[i].Dest != want[i].Dest || got[i].Local != want[i].Local {
			t.Errorf("record %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if _, err := Verify(msg, []byte("another key of 16+ bytes")); !errors.Is(err, ErrBadMAC) {
		t.Errorf("another key: %v", err)
	}
	for i := range msg {
		bad := bytes.Clone(msg)
		bad[i] ^= 0x10
		if _, err := Verify(bad, key); err == nil {
			t.Errorf("byte %d altered: accepted", i)
		}
	}
	if _, err := Verify(unsigned, key); !errors.Is(err, ErrUnsigned) {
		t.Errorf("an unsigned message: %v, want %v", err, ErrUnsigned)
	}
	// The next message has the next counter.
	enc.Add(signedConns()[0])
	if n, err := Verify(enc.Flush(), key); err != nil || n != 43 {
		t.Errorf("the next message: counter %d, %v", n, err)
	}
}

// TestBackupRefusesReplays: a backup with a key takes a signed message
// once; the same message again, or an older one, is refused, per source.
func TestBackupRefusesReplays(t *testing.T) {
	key := []byte("0123456789abcdef")
	var ctr uint64
	enc := Encoder{MaxLen: 1472, Key: key, Counter: func() uint64 { ctr++; return ctr }}
	sign := func() []byte { enc.Add(signedConns()[0]); return enc.Flush() }
	m1, m2 := sign(), sign()
	d := &Daemon{key: key, seen: map[netip.Addr]uint64{}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	a, b := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	for _, c := range []struct {
		msg  []byte
		from netip.Addr
		ok   bool
	}{{m2, a, true}, {m2, a, false}, {m1, a, false}, {m1, b, true}, {m2, b, true}, {m1, b, false}} {
		if err := d.authentic(c.msg, c.from); (err == nil) != c.ok {
			t.Errorf("message %d from %v: %v, want accepted %v", binaryCounter(c.msg), c.from, err, c.ok)
		}
	}
}

func binaryCounter(msg []byte) uint64 { n, _ := Verify(msg, []byte("0123456789abcdef")); return n }
