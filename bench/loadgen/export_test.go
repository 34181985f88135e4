package loadgen

// WriteFlow writes flow n of f into buf from user space, as a Sender or
// a Loop does.
func WriteFlow(f Flows, buf []byte, n uint64, tag Tag) (int, error) {
	w, err := newWriter(f)
	if err != nil {
		return 0, err
	}
	return w.write(buf, w.flow(n), tag), nil
}

// SetLoop sets the loop's configuration and slot s's trip count and
// generation as Start and the seeder do, without seeding anything.
func (g *Programs) SetLoop(f Flows, slots uint32, s uint32, k uint64, gen uint16) error {
	f.Tagged = true
	if err := g.SetFlows(f); err != nil {
		return err
	}
	if err := g.objs.LoopConfig.Put(uint32(0), loadgenLoopCfg{Start: f.Start, Slots: slots, On: 1}); err != nil {
		return err
	}
	return g.objs.LoopSlots.Put(s, loadgenLoopSlot{K: k, Gen: gen})
}

// LoopSlot returns slot s's trip count and generation.
func (g *Programs) LoopSlot(s uint32) (uint64, uint16, error) {
	var v loadgenLoopSlot
	err := g.objs.LoopSlots.Lookup(s, &v)
	return v.K, v.Gen, err
}

// LoopCounts reads and zeroes the loop's counters.
func (g *Programs) LoopCounts() (LoopStats, error) { return g.loopCounts() }

// StopLoop turns the loop off.
func (g *Programs) StopLoop() error {
	return g.objs.LoopConfig.Put(uint32(0), loadgenLoopCfg{})
}
