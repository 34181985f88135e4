package testutil

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolIoctl issues SIOCETHTOOL with an ethtool_value for dev.
func ethtoolIoctl(fd int, dev string, val *struct{ cmd, data uint32 }) error {
	var ifr [unix.IFNAMSIZ + 24]byte
	copy(ifr[:unix.IFNAMSIZ-1], dev)
	*(*uintptr)(unsafe.Pointer(&ifr[unix.IFNAMSIZ])) = uintptr(unsafe.Pointer(val))
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr[0])))
	runtime.KeepAlive(val)
	if e != 0 {
		return e
	}
	return nil
}
