package api

import (
	"fmt"
	"os"
	"syscall"
)

// Default paths in the host's network namespace (as xipvs 0.1 used).
const (
	DefaultSocket    = "/run/xipvs/xipvsd.sock"
	DefaultStateFile = "/run/xipvs/state.json"
	DefaultPinDir    = "/sys/fs/bpf/xipvs"
)

// NamespaceSuffix is "" in the host's network namespace and "-NAME" in a
// namespace made by "ip netns add NAME" ("-INODE" in another), so that
// two directors in two namespaces never share a socket, a state file or a
// pin directory by default, and xipvsadm run in a namespace finds that
// namespace's director.
func NamespaceSuffix() string {
	self, err := nsInode("/proc/thread-self/ns/net")
	if err != nil {
		return ""
	}
	if names, err := os.ReadDir("/run/netns"); err == nil {
		for _, n := range names {
			if ino, err := nsInode("/run/netns/" + n.Name()); err == nil && ino == self {
				return "-" + n.Name()
			}
		}
	}
	if host, err := nsInode("/proc/1/ns/net"); err == nil && host != self {
		return fmt.Sprintf("-%d", self)
	}
	return ""
}

func nsInode(path string) (uint64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("%s: no inode", path)
	}
	return st.Ino, nil
}

// Defaults returns the default socket, state file and pin directory for
// the calling process's network namespace.
func Defaults() (socket, stateFile, pinDir string) {
	sfx := NamespaceSuffix()
	if sfx == "" {
		return DefaultSocket, DefaultStateFile, DefaultPinDir
	}
	return "/run/xipvs/xipvsd" + sfx + ".sock", "/run/xipvs/state" + sfx + ".json", DefaultPinDir + sfx
}
