package bench

// established.go: the wire's established flows: set up through each
// xipvs service and checked against its weights, measured once per round
// and size, and their per-real split checked.

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"

	"github.com/xipvs/xipvs/internal/api"
)

// xipvsService adds mode's wrr service and sets every established flow up
// through xipvs: paced SYNs until the scheduler has counted all of them,
// then one ACK each (SYN_RECV -> ESTABLISHED, in XDP).
func (w *wire) xipvsService(r *Report, o Options, d *director, mode string) error {
	vs := netip.AddrPortFrom(wireVIPs[mode], 80).String()
	cmds := [][]string{{"-A", "-t", vs, "-s", "wrr"}}
	if mode == "fullnat" {
		cmds = append(cmds, []string{"--add-laddr", "-z", wireLIP.String(), "-t", vs})
	}
	for i, rip := range realsOf(wireVIPs[mode]) {
		cmds = append(cmds, []string{"-a", "-t", vs, "-r", netip.AddrPortFrom(rip, 80).String(), fwdFlag[mode], "-w", strconv.Itoa(wireWeights[i])})
	}
	for _, c := range cmds {
		if err := d.x.run(c...); err != nil {
			return err
		}
	}
	client := api.NewClient(d.x.socket)
	var conns map[byte]uint64
	var err error
	for pass := 0; ; pass++ {
		if err := w.paced(d, w.established(64, wireVIPs[mode], true), o.Flows); err != nil {
			return err
		}
		if conns, err = schedConns(client, wireVIPs[mode]); err != nil {
			return err
		}
		if n := sum(conns); n >= uint64(o.Flows) {
			break
		} else if pass == setupPasses {
			return fmt.Errorf("only %d of %d flows set up after %d passes", n, o.Flows, pass+1)
		}
	}
	if err := w.paced(d, w.established(64, wireVIPs[mode], false), o.Flows); err != nil {
		return err
	}
	r.check(fmt.Sprintf("xipvs-%s wrr 1:2:3 schedules the flows by weight", mode), wrrOK(conns, o.Flows), "connections per real: %v of %d", macKeys(conns, realsOf(wireVIPs[mode])), o.Flows)
	return nil
}

// packetRound measures every subject's established flows once at size,
// into r's run: the ceiling, the reference LB, xipvs per method and
// nftables, back to back.
func (w *wire) packetRound(r *Report, o Options, run, size int, splits map[string]map[byte]uint64) error {
	type subj struct {
		name, dir string
		vip       netip.Addr
	}
	subjects := []subj{{"ceiling", dirCeiling, wireVIPs["dr"]}, {"reference-lb", dirRefLB, wireVIPs["dr"]}}
	for _, m := range append(append([]string(nil), wireModes...), wireModes6...) {
		subjects = append(subjects, subj{"xipvs-" + m, dirXipvs, wireVIPs[m]})
	}
	if w.dirs[dirNft].nftInstalled {
		subjects = append(subjects, subj{"nftables", dirNft, wireVIPs["dr"]}, subj{"nftables6", dirNft, wireVIPs["dr6"]})
	}
	for _, s := range subjects {
		smp, err := w.measure(w.dirs[s.dir], w.established(size, s.vip, false), o.Sample, w.senders)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		key := fmt.Sprintf("established/%s/%d", s.name, size)
		res := r.sample(Result{Key: key, Scenario: "established", Subject: s.name, Size: size, Unit: UnitMpps, Generator: w.Generator()}, run,
			float64(smp.total())/smp.took.Seconds()/1e6)
		res.Detail["frame_bytes"] = frameSize(size, s.vip)
		addDetail(res, "frames_sent", smp.sent)
		addDetail(res, "frames_counted", smp.total())
		if splits[key] == nil {
			splits[key] = map[byte]uint64{}
		}
		for m, c := range smp.counted {
			splits[key][m] += c.Pkts
		}
		if s.dir == dirXipvs {
			// Established flows make no new connection.
			conns, err := schedConns(api.NewClient(w.dirs[dirXipvs].x.socket), s.vip)
			if err != nil {
				return err
			}
			if n := sum(conns); n != uint64(o.Flows) {
				r.check(fmt.Sprintf("%s: established flows keep their connections", key), false,
					"%d connections after measuring %d established flows: %v", n, o.Flows, macKeys(conns, realsOf(s.vip)))
			}
		}
	}
	return nil
}

func addDetail(res *Result, k string, v uint64) {
	old, _ := res.Detail[k].(uint64)
	res.Detail[k] = old + v
}

// checkSplits checks that each real's share of the frames equals its
// share of the flows within one point.
func checkSplits(r *Report, splits map[string]map[byte]uint64) {
	want := map[byte]float64{0x0b: 1.0 / 6, 0x0c: 2.0 / 6, 0x0d: 3.0 / 6}
	for key, got := range splits {
		w := want
		if strings.HasPrefix(key, "established/ceiling/") {
			w = map[byte]float64{0x0b: 1}
		}
		reals := wireReals
		if subj := strings.Split(key, "/")[1]; strings.HasSuffix(subj, "6") {
			reals = wireReals6
		}
		r.check("per-real split "+key, splitOK(got, w), "%s", splitText(got, w, reals))
	}
}

func macKeys(m map[byte]uint64, reals []netip.Addr) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if i := int(k) - 0x0b; i >= 0 && i < len(reals) {
			out[reals[i].String()] = v
		}
	}
	return out
}

func splitOK(got map[byte]uint64, want map[byte]float64) bool {
	total := sum(got)
	if total == 0 {
		return false
	}
	for m, v := range got {
		if _, ok := want[m]; !ok && v > 0 {
			return false
		}
	}
	for m, share := range want {
		if math.Abs(float64(got[m])/float64(total)-share) > 0.01 {
			return false
		}
	}
	return true
}

func splitText(got map[byte]uint64, want map[byte]float64, reals []netip.Addr) string {
	total := sum(got)
	var parts []string
	for i, rip := range reals {
		m := byte(0x0b + i)
		g := 0.0
		if total > 0 {
			g = float64(got[m]) / float64(total) * 100
		}
		parts = append(parts, fmt.Sprintf("%s %.1f%% (want %.1f%%)", rip, g, want[m]*100))
	}
	return strings.Join(parts, ", ")
}
