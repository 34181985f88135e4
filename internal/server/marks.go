package server

// marks.go: port groups for firewall-mark services (xipvsadm --add-mark).

import (
	"slices"

	"github.com/xipvs/xipvs/config"
)

// addMarks binds ports to firewall marks for -f services (xipvsadm
// --add-mark). All rules are checked before any is applied.
func (s *Server) addMarks(rules []config.MarkRule) error {
	for _, r := range rules {
		if err := r.Validate(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	all, err := config.MergeMarks(s.marks, rules)
	if err != nil {
		return err
	}
	if err := s.setMarks(all); err != nil {
		return err
	}
	for _, r := range rules {
		s.logChange("port group added", "rule", r.String())
	}
	return nil
}

// deleteMarks removes port-group rules (xipvsadm --del-mark): the given
// rules, each of which must exist, or with no rules every rule of mark.
func (s *Server) deleteMarks(mark uint32, rules []config.MarkRule) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep, err := config.RemoveMarks(s.marks, mark, rules)
	if err != nil {
		return err
	}
	removed := len(s.marks) - len(keep)
	if err := s.setMarks(keep); err != nil {
		return err
	}
	s.logChange("port group deleted", "mark", mark, "rules", removed)
	return nil
}

// setMarks replaces the port-group rules and the data plane's keys with
// them, or on error restores both; s.mu is held.
func (s *Server) setMarks(rules []config.MarkRule) error {
	old := s.marks
	s.marks = rules
	if err := s.syncKeys(); err != nil {
		s.marks = old
		_ = s.syncKeys()
		return err
	}
	s.changed()
	return nil
}

// Marks returns the port-group rules in the order they were added.
func (s *Server) Marks() []config.MarkRule {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.marks)
}
