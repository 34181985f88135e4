package testutil

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// DirectorSet is the directors of a multi-director lab (the scale-out
// cluster, the HA pair): director i (from 0) is named d(i+1), serves
// eth0, and keeps its socket and state in Dir.
type DirectorSet struct {
	Dir       string
	Directors []*Host
	Daemons   []*Daemon
	// Ifaces are the interfaces xipvsd serves (eth0 if empty).
	Ifaces string
}

// Socket is director i's control socket.
func (s *DirectorSet) Socket(i int) string {
	return filepath.Join(s.Dir, fmt.Sprintf("d%d.sock", i+1))
}

// StartDirector starts xipvsd on director i's eth0 with args.
func (s *DirectorSet) StartDirector(i int, bin string, args ...string) error {
	ifaces := s.Ifaces
	if ifaces == "" {
		ifaces = "eth0"
	}
	args = append([]string{"-i", ifaces, "--state-file", filepath.Join(s.Dir, fmt.Sprintf("d%d.state.json", i+1))}, args...)
	d, err := StartDaemon(s.Directors[i].Netns, bin, s.Socket(i), args...)
	if err != nil {
		return err
	}
	s.Daemons[i] = d
	return nil
}

// Adm runs xipvsadm (bin) against director i and returns its standard
// output; the error carries its standard error.
func (s *DirectorSet) Adm(i int, bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "XIPVS_SOCKET="+s.Socket(i))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("xipvsadm %s on d%d: %w: %s", strings.Join(args, " "), i+1, err, stderr.String())
	}
	return string(out), nil
}

// killDaemons kills every director's xipvsd.
func (s *DirectorSet) killDaemons() {
	for i, d := range s.Daemons {
		if d != nil {
			d.Kill()
			s.Daemons[i] = nil
		}
	}
}

// closeAll kills the daemons, removes the lab's namespaces (lan) and
// its directory.
func (s *DirectorSet) closeAll(lan *LAN) error {
	s.killDaemons()
	var err error
	if lan != nil {
		err = errors.Join(err, lan.Close())
	}
	if s.Dir != "" {
		err = errors.Join(err, os.RemoveAll(s.Dir))
	}
	return err
}
