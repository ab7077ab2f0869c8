package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// report is everything one harness run measured; it is also the JSON written to -out.
type report struct {
	Started    time.Time        `json:"started"`
	Settings   settings         `json:"settings"`
	Host       host             `json:"host"`
	Contenders []contender      `json:"contenders"`
	Workloads  []workloadResult `json:"workloads"`
	Complete   bool             `json:"complete"` // false when interrupted
}

type settings struct {
	Duration      string `json:"duration"`
	Warmup        string `json:"warmup"`
	Repetitions   int    `json:"repetitions"`
	Conns         int    `json:"keepalive_connections"`
	Workers       int    `json:"connect_workers"`
	Streams       int    `json:"bulk_streams"`
	HAProxySplice bool   `json:"haproxy_splice"`
}

type host struct {
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	Go         string `json:"go"`
	Kernel     string `json:"kernel,omitempty"`
	// LoadAvg is /proc/loadavg's 1-minute figure at the start: other work on the
	// machine skews every contender, and this says how busy it was.
	LoadAvg float64 `json:"loadavg_1m"`
}

// loadAvg returns the 1-minute load average, or -1 where it cannot be read.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	var v float64
	if _, err := fmt.Sscan(string(b), &v); err != nil {
		return -1
	}
	return v
}

// workloadResult is one workload's runs for every contender, in contender order.
type workloadResult struct {
	workload
	Results []contenderResult `json:"results"`
	// BestPeer is the peer (HAProxy or nginx) with the highest median; Ratios
	// divide each contender's median by that peer's.
	BestPeer string             `json:"best_peer,omitempty"`
	Ratios   map[string]float64 `json:"ratios,omitempty"`
}

type contenderResult struct {
	Contender string        `json:"contender"`
	Runs      []measurement `json:"runs"`
	Median    float64       `json:"median"`
	Errors    int64         `json:"errors"`
}

// add records one run.
func (w *workloadResult) add(name string, m measurement) {
	for i := range w.Results {
		if w.Results[i].Contender == name {
			w.Results[i].Runs = append(w.Results[i].Runs, m)
			return
		}
	}
	w.Results = append(w.Results, contenderResult{Contender: name, Runs: []measurement{m}})
}

// summarize computes medians, the best peer and the ratios from the runs.
func (w *workloadResult) summarize() {
	w.BestPeer, w.Ratios = "", nil
	best := 0.0
	for i := range w.Results {
		r := &w.Results[i]
		var vals []float64
		r.Errors = 0
		for _, m := range r.Runs {
			r.Errors += m.Errors
			if m.Err == "" {
				vals = append(vals, m.Value)
			}
		}
		r.Median = median(vals)
		if slices.Contains(peers, r.Contender) && r.Median > best {
			best, w.BestPeer = r.Median, r.Contender
		}
	}
	if best == 0 {
		return
	}
	w.Ratios = make(map[string]float64)
	for _, r := range w.Results {
		if len(r.Runs) > 0 {
			w.Ratios[r.Contender] = r.Median / best
		}
	}
}

// median of vals (the mean of the middle two for an even count); 0 for none.
func median(vals []float64) float64 {
	if len(vals) == 0 {
		return 0
	}
	s := slices.Clone(vals)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// format prints v with a precision that suits its size.
func format(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 1000:
		return groupThousands(fmt.Sprintf("%.0f", v))
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func groupThousands(digits string) string {
	var b strings.Builder
	for i, r := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// print writes one table per workload, then the ratio summary.
func (r *report) print(out io.Writer) {
	for _, w := range r.Workloads {
		fmt.Fprintf(out, "\n%s, median of %d\n", w.Title, r.Settings.Repetitions)
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "%-10s\tmedian %s\truns\terrors\t/ best peer\t\n", "contender", w.Unit)
		for _, c := range w.Results {
			runs := make([]string, len(c.Runs))
			for i, m := range c.Runs {
				runs[i] = format(m.Value)
				if m.Err != "" {
					runs[i] = "-"
				}
			}
			ratio := "-"
			if v, ok := w.Ratios[c.Contender]; ok {
				ratio = fmt.Sprintf("%.2f", v)
			}
			fmt.Fprintf(tw, "%-10s\t%s\t%s\t%d\t%s\t\n", c.Contender, format(c.Median), strings.Join(runs, " "), c.Errors, ratio)
		}
		tw.Flush()
		if w.BestPeer != "" {
			fmt.Fprintf(out, "best peer: %s\n", w.BestPeer)
		}
	}
	for _, c := range r.Contenders {
		if c.Skip != "" {
			fmt.Fprintf(out, "\nnot measured: %s: %s\n", c.Name, c.Skip)
		}
	}

	fmt.Fprintf(out, "\nratio to the best of HAProxy and nginx (median / median; > 1 is faster)\n")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-16s\t", "")
	for _, w := range r.Workloads {
		fmt.Fprintf(tw, "%s\t", w.Name)
	}
	fmt.Fprintln(tw)
	for _, name := range []string{gobetween, mincopy} {
		fmt.Fprintf(tw, "%-16s\t", name+" / best")
		for _, w := range r.Workloads {
			if v, ok := w.Ratios[name]; ok {
				fmt.Fprintf(tw, "%.2f\t", v)
			} else {
				fmt.Fprint(tw, "-\t")
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

// write saves the report as indented JSON, creating the directory if needed.
func (r *report) write(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
