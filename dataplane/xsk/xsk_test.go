package xsk_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/dataplane/xsk"
	"github.com/xipvs/xipvs/internal/testutil"
)

func TestOpenRejectsBadConfig(t *testing.T) {
	for _, c := range []xsk.Config{{FrameSize: 1000}, {RingSize: 1000}} {
		if _, err := xsk.Open(c); err == nil {
			t.Errorf("Open(%+v) succeeded", c)
		}
	}
}

// TestReceiveAndTransmit binds a socket to one end of a veth pair in a
// namespace, redirects everything arriving there into it with a tiny
// XDP program, receives a UDP datagram sent from the other end, and
// transmits a frame back that a packet socket on the other end sees.
func TestReceiveAndTransmit(t *testing.T) {
	testutil.RequirePrivileged(t)
	ns, err := testutil.AddNetns(fmt.Sprintf("xk%d", os.Getpid()%100000))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = testutil.DelNetns(ns.Name) })
	for _, args := range [][]string{
		{"link", "add", "xa", "numtxqueues", "1", "numrxqueues", "1", "type", "veth", "peer", "name", "xb", "numtxqueues", "1", "numrxqueues", "1"},
		{"addr", "add", "10.66.0.1/24", "dev", "xa"},
		{"addr", "add", "10.66.0.2/24", "dev", "xb"},
		{"link", "set", "xa", "up"},
		{"link", "set", "xb", "up"},
	} {
		if err := ns.IP(args...); err != nil {
			t.Fatal(err)
		}
	}
	var (
		sock   *xsk.Socket
		xsks   *ebpf.Map
		prog   *ebpf.Program
		lk     link.Link
		ifB    *net.Interface
		ifA    *net.Interface
		packet int
	)
	t.Cleanup(func() {
		if lk != nil {
			_ = lk.Close()
		}
		if sock != nil {
			_ = sock.Close()
		}
		if prog != nil {
			_ = prog.Close()
		}
		if xsks != nil {
			_ = xsks.Close()
		}
	})
	err = ns.Do(func() error {
		var err error
		if ifB, err = net.InterfaceByName("xb"); err != nil {
			return err
		}
		if ifA, err = net.InterfaceByName("xa"); err != nil {
			return err
		}
		if sock, err = xsk.Open(xsk.Config{Ifindex: ifB.Index, QueueID: 0, RingSize: 64, NumFrame: 256}); err != nil {
			return err
		}
		if xsks, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 4}); err != nil {
			return err
		}
		if err = xsks.Put(uint32(0), uint32(sock.FD())); err != nil {
			return err
		}
		if prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "Dual BSD/GPL", Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 16, asm.Word), // ctx->rx_queue_index
			asm.LoadMapPtr(asm.R1, xsks.FD()),
			asm.Mov.Imm(asm.R3, 2), // XDP_PASS when no socket
			asm.FnRedirectMap.Call(),
			asm.Return(),
		}}); err != nil {
			return err
		}
		if lk, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifB.Index, Flags: link.XDPDriverMode}); err != nil {
			return err
		}
		if packet, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL))); err != nil {
			return err
		}
		if err := unix.Bind(packet, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifA.Index}); err != nil {
			return err
		}
		return unix.SetsockoptTimeval(packet, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(packet)
	t.Logf("bound in %s mode", sock.Mode())

	// Both ends are in one namespace, so a socket would route over lo:
	// send a raw frame out of xa instead.
	payload := []byte("xipvs-af-xdp-probe")
	frame := testutil.Frame{SrcMAC: ifA.HardwareAddr, DstMAC: ifB.HardwareAddr,
		Src: netip.MustParseAddr("10.66.0.1"), Dst: netip.MustParseAddr("10.66.0.2"),
		SrcPort: 1234, DstPort: 9999, Proto: layers.IPProtocolUDP, Payload: payload}.Build()
	if err := unix.Sendto(packet, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifA.Index}); err != nil {
		t.Fatal(err)
	}
	var got []byte
	deadline := time.Now().Add(3 * time.Second)
	for got == nil && time.Now().Before(deadline) {
		if ready, err := sock.Poll(100); err != nil {
			t.Fatal(err)
		} else if ready {
			sock.Receive(16, func(f []byte) {
				if bytes.Contains(f, payload) {
					got = append([]byte(nil), f...)
				}
			})
		}
	}
	if got == nil {
		t.Fatal("the datagram never reached the AF_XDP socket")
	}

	// Transmit it back with the MACs swapped: it leaves b and reaches a.
	out := append([]byte(nil), got...)
	copy(out[0:6], got[6:12])
	copy(out[6:12], got[0:6])
	out = append(out[:len(out)-len(payload)], []byte("xipvs-af-xdp-reply")...)
	if err := sock.Transmit(out); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	seen := false
	for end := time.Now().Add(2 * time.Second); !seen && time.Now().Before(end); {
		n, _, err := unix.Recvfrom(packet, buf, 0)
		if err == nil && bytes.Contains(buf[:n], []byte("xipvs-af-xdp-reply")) {
			seen = true
		}
	}
	if !seen {
		t.Fatal("the transmitted frame never reached the peer")
	}
	st, err := sock.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Rx_invalid_descs != 0 || st.Tx_invalid_descs != 0 {
		t.Errorf("invalid descriptors: %+v", st)
	}
	if err := sock.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := sock.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	sock = nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
