package bench

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// bar is one bar of a chart panel: the median with a min-max whisker.
type bar struct {
	label            string
	median, min, max float64
	ceiling          bool // the reference bar, drawn in grey
}

type panel struct {
	title, unit string
	bars        []bar
}

// SVG renders the headline numbers as horizontal bar charts, one panel
// per unit: packet rates, connection rates, latencies, BPF cost.
func (r *Report) SVG() string {
	pick := func(title, unit string, keep func(*Result) bool, label func(*Result) string) panel {
		p := panel{title: title, unit: unit}
		for _, x := range r.Results {
			if x.Run == 1 && keep(x) {
				p.bars = append(p.bars, bar{label: label(x), median: x.Median, min: x.Min, max: x.Max, ceiling: x.Subject == "ceiling" || x.Subject == "reference-lb"})
			}
		}
		return p
	}
	withSize := func(x *Result) string { return fmt.Sprintf("%s %d B", x.Subject, x.Size) }
	subject := func(x *Result) string { return x.Subject }
	panels := []panel{
		pick("Established flows through the director (higher is better)", UnitMpps,
			func(x *Result) bool { return x.Scenario == "established" }, withSize),
		pick("New flows per second: SYN stream counted at the sinks, and TCP connect/close with concurrent clients", UnitCPS,
			func(x *Result) bool { return x.Scenario == "new-flows" || x.Scenario == "tcp-connect" },
			func(x *Result) string { return x.Scenario + " " + x.Subject }),
		pick("Latency: SYN to SYN-ACK through the balancer, established round trip (lower is better)", UnitUs,
			func(x *Result) bool { return x.Scenario == "latency" },
			func(x *Result) string { return strings.TrimPrefix(x.Key, "latency/") }),
		pick("BPF cost per packet, Program.Run with Repeat (lower is better)", UnitNs,
			func(x *Result) bool { return x.Scenario == "bpf-cost" }, subject),
		pick("Aging: CPU of a full sweep (the index built) and of a sweep at rest (lower is better)", UnitMs,
			func(x *Result) bool { return x.Scenario == "aging" && x.Unit == UnitMs }, subject),
		pick("Aging: CPU to end a due connection (lower is better)", "ns CPU",
			func(x *Result) bool { return x.Scenario == "aging" && x.Unit == "ns CPU" }, subject),
		pick("SYN flood: legitimate connections served, and an established download's rate kept (higher is better)", UnitPct,
			func(x *Result) bool { return x.Scenario == "flood" && x.Unit == UnitPct }, subject),
		pick("SYN flood: p99 connect of the legitimate clients, slowest xipvsadm -Ln (lower is better)", UnitMsWall,
			func(x *Result) bool { return x.Scenario == "flood" && x.Unit == UnitMsWall }, subject),
		pick("SYN flood: the flood's rate", UnitSYNs,
			func(x *Result) bool { return x.Scenario == "flood" && x.Unit == UnitSYNs }, subject),
		pick("SYN flood: frames one vCPU generates and sheds (higher is better)", UnitMpps,
			func(x *Result) bool { return x.Scenario == "flood" && x.Unit == UnitMpps }, subject),
		pick("SYN flood: packets the director's receive ring on the client's link refused (lower is better)", UnitPkts,
			func(x *Result) bool { return x.Scenario == "flood" && x.Unit == UnitPkts }, subject),
		pick("Flood sources: distinct SYNs one vCPU puts on a veth (higher is better)", UnitMpps,
			func(x *Result) bool { return x.Scenario == "generators" }, subject),
	}
	// The scale rows, a panel per unit.
	for _, u := range []struct{ title, unit string }{
		{"Scale: xipvsd's CPU at rest (lower is better)", UnitPct},
		{"Scale: -Lnc's first line and a restart until ready (lower is better)", UnitMsWall},
		{"Scale: a restart's CPU until ready (lower is better)", UnitMs},
		{"Scale: -Lnc's rate (higher is better)", "M lines/s"},
		{"Scale: memory during -Lnc (lower is better)", "MB"},
		{"Scale: the connection tables' memory per connection", "B"},
	} {
		panels = append(panels, pick(u.title, u.unit, func(x *Result) bool { return x.Scenario == "scale" && x.Unit == u.unit }, subject))
	}
	const (
		width   = 900
		labelW  = 300
		barH    = 18
		gap     = 6
		titleH  = 40
		padding = 20
	)
	height := padding
	for _, p := range panels {
		if len(p.bars) > 0 {
			height += titleH + len(p.bars)*(barH+gap) + padding
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	y := padding
	for _, p := range panels {
		if len(p.bars) == 0 {
			continue
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">%s (%s)</text>`+"\n", padding, y+16, html.EscapeString(p.title), html.EscapeString(p.unit))
		y += titleH
		top := 0.0
		for _, br := range p.bars {
			top = math.Max(top, br.max)
		}
		if top == 0 {
			top = 1
		}
		scale := float64(width-labelW-2*padding-60) / top
		for _, br := range p.bars {
			fill := "#3b7dd8"
			if br.ceiling {
				fill = "#999999"
			}
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelW, y+barH-4, html.EscapeString(br.label))
			x0 := labelW + 8
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x0, y, br.median*scale, barH, fill)
			fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="black"/>`+"\n",
				float64(x0)+br.min*scale, float64(x0)+br.max*scale, y+barH/2, y+barH/2)
			fmt.Fprintf(&b, `<text x="%.1f" y="%d">%s</text>`+"\n", float64(x0)+br.max*scale+6, y+barH-4, num(br.median))
			y += barH + gap
		}
		y += padding
	}
	b.WriteString("</svg>\n")
	return b.String()
}
