// Package pass attaches bpf/pass.bpf.c, a native XDP program that passes
// every frame: the receiving peer of a veth that XDP transmits into needs
// one, or XDP_TX and redirects into the veth are silently dropped (a veth
// trap, see PLATFORM.md). Test labs, the demo and the bench use it.
package pass

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Attach attaches the XDP_PASS program natively to ifindex through
// netlink, in the calling thread's namespace. It stays attached after the
// process exits, until the link or its namespace goes away.
func Attach(ifindex int) error {
	var objs passObjects
	if err := loadPassObjects(&objs, nil); err != nil {
		return fmt.Errorf("load pass program: %w", err)
	}
	defer objs.Close()
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return fmt.Errorf("link %d: %w", ifindex, err)
	}
	if err := netlink.LinkSetXdpFdWithFlags(l, objs.XipvsPass.FD(), unix.XDP_FLAGS_DRV_MODE); err != nil {
		return fmt.Errorf("attach pass program to %s: %w", l.Attrs().Name, err)
	}
	return nil
}
