package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
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
	TLSVersion    string `json:"tls_version"`
	UDPWindow     int    `json:"udp_window"`
}

type host struct {
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	Go         string `json:"go"`
	Kernel     string `json:"kernel,omitempty"`
	// LoadAvg is /proc/loadavg's 1-minute figure at the start: other work on the
	// machine skews every contender, and this says how busy it was.
	LoadAvg float64 `json:"loadavg_1m"`
	// Conntrack is netfilter's connection-tracking table at the start, where
	// the module is loaded: loopback connections and UDP sessions go through
	// it too, and once it is full the kernel drops new ones.
	Conntrack *conntrackUse `json:"conntrack,omitempty"`
}

// conntrackUse is the size and use of netfilter's connection-tracking table.
type conntrackUse struct {
	Count int `json:"count"`
	Max   int `json:"max"`
}

// full reports whether new entries are about to be dropped.
func (c conntrackUse) full() bool { return c.Max > 0 && c.Count >= c.Max*95/100 }

// readConntrack returns the table's use; ok is false where netfilter's
// connection tracking is not loaded.
func readConntrack() (c conntrackUse, ok bool) {
	read := func(name string) (int, bool) {
		b, err := os.ReadFile("/proc/sys/net/netfilter/" + name)
		if err != nil {
			return 0, false
		}
		var v int
		_, err = fmt.Sscan(string(b), &v)
		return v, err == nil
	}
	var ok1, ok2 bool
	c.Count, ok1 = read("nf_conntrack_count")
	c.Max, ok2 = read("nf_conntrack_max")
	return c, ok1 && ok2
}

// conntrackAdvice is printed when the table filled during a run.
const conntrackAdvice = `netfilter's connection-tracking table was full during the runs marked "conntrack full":
the kernel then drops new connections and UDP sessions (each leaves two entries, for 120 s
after a TCP close, 30 s after a UDP reply), which skews the new-connection, TLS and new-session
workloads of every contender. Raise net.netfilter.nf_conntrack_max, or exempt loopback:
  iptables -t raw -I OUTPUT -o lo -j NOTRACK; iptables -t raw -I PREROUTING -i lo -j NOTRACK`

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
	// NA names the contenders this workload does not apply to, and why
	// (HAProxy has no UDP proxy).
	NA map[string]string `json:"not_applicable,omitempty"`
}

// notApplicable records that the workload does not apply to contender name.
func (w *workloadResult) notApplicable(name, why string) {
	if w.NA == nil {
		w.NA = make(map[string]string)
	}
	w.NA[name] = why
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
		var na []string
		for _, c := range r.Contenders {
			if why, ok := w.NA[c.Name]; ok {
				fmt.Fprintf(tw, "%-10s\tn/a\t\t\t\t\n", c.Name)
				na = append(na, c.Name+": "+why)
			}
		}
		tw.Flush()
		if len(na) > 0 {
			fmt.Fprintf(out, "n/a: %s\n", strings.Join(na, "; "))
		}
		if w.BestPeer != "" {
			fmt.Fprintf(out, "best peer: %s\n", w.BestPeer)
		}
	}
	for _, c := range r.Contenders {
		kinds := slices.Sorted(maps.Keys(c.Skip))
		for _, kind := range kinds {
			fmt.Fprintf(out, "\nnot measured: %s %s: %s\n", c.Name, kind, c.Skip[kind])
		}
	}

	for _, w := range r.Workloads {
		if slices.ContainsFunc(w.Results, func(c contenderResult) bool {
			return slices.ContainsFunc(c.Runs, func(m measurement) bool { return m.ConntrackFull })
		}) {
			fmt.Fprintf(out, "\n%s\n", conntrackAdvice)
			break
		}
	}

	fmt.Fprintf(out, "\nratio to the best of HAProxy and nginx (median / median; > 1 is faster; UDP: nginx alone)\n")
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
			} else if _, ok := w.NA[name]; ok {
				fmt.Fprint(tw, "n/a\t")
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
