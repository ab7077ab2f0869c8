package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/gobetween/gobetween/config"
)

// statsView is the part of GET /servers/{name}/stats the client shows. It is
// declared here rather than taken from package proxy so that the client reads
// the wire format, as any other client of the API must.
type statsView struct {
	ActiveConnections  int64         `json:"active_connections"`
	TotalConnections   int64         `json:"total_connections"`
	RefusedConnections int64         `json:"refused_connections"`
	RxSecond           uint64        `json:"rx_second"`
	TxSecond           uint64        `json:"tx_second"`
	Bind               string        `json:"bind"`
	Backends           []backendView `json:"backends"`
	Discovery          *struct {
		Fetched  time.Time `json:"fetched"`
		OK       bool      `json:"ok"`
		Backends int       `json:"backends"`
		Error    string    `json:"error"`
	} `json:"discovery"`
}

type backendView struct {
	Host string `json:"host"`
	Port string `json:"port"`
	// State is the override in the log (drain, disable), the same on every
	// node; Stats.State is what this node applies.
	State string `json:"state"`
	Stats struct {
		Live               bool   `json:"live"`
		TotalConnections   int64  `json:"total_connections"`
		ActiveConnections  int64  `json:"active_connections"`
		RefusedConnections int64  `json:"refused_connections"`
		RxSecond           uint64 `json:"rx_second"`
		TxSecond           uint64 `json:"tx_second"`
		State              string `json:"state"`
		Cluster            struct {
			ActiveConnections int64           `json:"active_connections"`
			Healthy           bool            `json:"healthy"`
			Policy            string          `json:"policy"`
			Nodes             map[string]bool `json:"nodes"`
		} `json:"cluster"`
	} `json:"stats"`
}

func (b backendView) address() string { return net.JoinHostPort(b.Host, b.Port) }

// state is the administrative state: the log's override, else what this node
// applies, else "enabled".
func (b backendView) state() string {
	switch {
	case b.State != "":
		return b.State
	case b.Stats.State != "":
		return b.Stats.State
	}
	return "enabled"
}

// stateWord names an administrative state as the dashboard and the metrics
// do: enabled, draining, disabled.
func stateWord(s string) string {
	switch s {
	case "drain":
		return "draining"
	case "disable":
		return "disabled"
	}
	return s
}

// inRotation: new connections may go to the backend.
func (b backendView) inRotation() bool { return b.Stats.Live && b.state() == "enabled" }

// metaView is GET /servers/{name}/meta.
type metaView struct {
	Name          string            `json:"name"`
	Origin        string            `json:"origin"`
	Revision      uint64            `json:"revision"`
	Updated       *time.Time        `json:"updated"`
	BackendStates map[string]string `json:"backend_states"`
}

func serverPath(name string, more ...string) string {
	p := "/servers/" + url.PathEscape(name)
	for _, m := range more {
		p += "/" + url.PathEscape(m)
	}
	return p
}

func runServers(sub string, args []string, cio clientIO) error {
	switch sub {
	case "list":
		return serversList(args, cio)
	case "show":
		return serversShow(args, cio)
	case "add", "update":
		return serversWrite(sub, args, cio)
	case "delete":
		return serversDelete(args, cio)
	}
	return usagef("unknown subcommand %q", sub)
}

// serverSummary is one row of `servers list`, and its -o json object.
type serverSummary struct {
	Name              string `json:"name"`
	Bind              string `json:"bind"`
	Listening         string `json:"listening,omitempty"` // this node's address, empty when not listening
	Protocol          string `json:"protocol"`
	Balance           string `json:"balance"`
	BackendsLive      int    `json:"backends_live"` // healthy for the cluster and neither drained nor disabled
	BackendsTotal     int    `json:"backends_total"`
	ActiveConnections int64  `json:"active_connections"`         // this node
	ClusterActive     int64  `json:"cluster_active_connections"` // every live node
	Origin            string `json:"origin"`
	Revision          uint64 `json:"revision"`
}

func serversList(args []string, cio clientIO) error {
	c := newCommand("servers list", cio, 30*time.Second)
	api, ctx, cancel, err := c.connect(args, 0, 0, "")
	if err != nil {
		return err
	}
	defer cancel()
	var defs map[string]config.Server
	if _, err := api.getJSON(ctx, "/servers", &defs); err != nil {
		return err
	}
	names := make([]string, 0, len(defs))
	for n := range defs {
		names = append(names, n)
	}
	sort.Strings(names)
	rows := make([]serverSummary, 0, len(names))
	for _, name := range names {
		def := defs[name]
		row := serverSummary{Name: name, Bind: def.Bind, Protocol: def.Protocol, Balance: def.Balance}
		var meta metaView
		var st statsView
		if _, err := api.getJSON(ctx, serverPath(name, "meta"), &meta); err != nil {
			if isNotFound(err) {
				continue // deleted since the list was read
			}
			return err
		}
		if _, err := api.getJSON(ctx, serverPath(name, "stats"), &st); err != nil {
			if isNotFound(err) {
				continue
			}
			return err
		}
		row.Origin, row.Revision = meta.Origin, meta.Revision
		row.Listening = st.Bind
		row.ActiveConnections = st.ActiveConnections
		row.BackendsTotal = len(st.Backends)
		for _, b := range st.Backends {
			if b.inRotation() {
				row.BackendsLive++
			}
			row.ClusterActive += b.Stats.Cluster.ActiveConnections
		}
		rows = append(rows, row)
	}
	if c.json() {
		return writeJSONOut(cio.stdout, rows)
	}
	if len(rows) == 0 {
		fmt.Fprintf(cio.stdout, "no servers (add one with: gobetween servers add NAME -f FILE)\n")
		return nil
	}
	tw := newTable(cio.stdout)
	fmt.Fprintln(tw, "NAME\tBIND\tPROTOCOL\tBALANCE\tBACKENDS\tACTIVE\tCLUSTER ACTIVE\tORIGIN\tREVISION")
	for _, r := range rows {
		bind := r.Bind
		if r.Listening == "" {
			bind += " (not listening)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%d\t%d\t%s\t%d\n", r.Name, bind, r.Protocol, r.Balance,
			r.BackendsLive, r.BackendsTotal, r.ActiveConnections, r.ClusterActive, r.Origin, r.Revision)
	}
	return tw.Flush()
}

func isNotFound(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.status == http.StatusNotFound
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0) }

// serverDetail is `servers show -o json`: the API's three views of a server,
// each as the API sent it.
type serverDetail struct {
	Name          string            `json:"name"`
	Origin        string            `json:"origin"`
	Revision      uint64            `json:"revision"`
	Updated       *time.Time        `json:"updated"`
	BackendStates map[string]string `json:"backend_states"`
	Definition    json.RawMessage   `json:"definition"` // GET /servers/{name}
	Stats         json.RawMessage   `json:"stats"`      // GET /servers/{name}/stats
}

func serversShow(args []string, cio clientIO) error {
	c := newCommand("servers show", cio, 30*time.Second)
	api, ctx, cancel, err := c.connect(args, 1, 1, "server NAME")
	if err != nil {
		return err
	}
	defer cancel()
	name := c.args[0]
	var def config.Server
	defResp, err := api.getJSON(ctx, serverPath(name), &def)
	if err != nil {
		return err
	}
	var meta metaView
	if _, err := api.getJSON(ctx, serverPath(name, "meta"), &meta); err != nil {
		return err
	}
	var st statsView
	stResp, err := api.getJSON(ctx, serverPath(name, "stats"), &st)
	if err != nil {
		return err
	}
	if c.json() {
		return writeJSONOut(cio.stdout, serverDetail{
			Name: name, Origin: meta.Origin, Revision: meta.Revision, Updated: meta.Updated,
			BackendStates: meta.BackendStates, Definition: defResp.body, Stats: stResp.body,
		})
	}
	return printServer(cio.stdout, name, def, meta, st, time.Now())
}

func printServer(w io.Writer, name string, def config.Server, meta metaView, st statsView, now time.Time) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "Server:\t%s\n", name)
	bind := def.Bind
	if st.Bind != "" {
		if st.Bind != def.Bind {
			bind += " (listening on " + st.Bind + " at this node)"
		}
	} else {
		bind += " (not listening at this node)"
	}
	fmt.Fprintf(tw, "Bind:\t%s\n", bind)
	fmt.Fprintf(tw, "Protocol:\t%s\n", def.Protocol)
	fmt.Fprintf(tw, "Balance:\t%s\n", def.Balance)
	fmt.Fprintf(tw, "Discovery:\t%s\n", describeDiscovery(def.Discovery, st, now))
	fmt.Fprintf(tw, "Health check:\t%s\n", describeHealthcheck(def.Healthcheck))
	origin := fmt.Sprintf("%s, revision %d", meta.Origin, meta.Revision)
	if meta.Updated != nil {
		origin += ", updated " + meta.Updated.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	fmt.Fprintf(tw, "Origin:\t%s\n", origin)
	var cluster int64
	for _, b := range st.Backends {
		cluster += b.Stats.Cluster.ActiveConnections
	}
	fmt.Fprintf(tw, "Connections:\t%d active, %d total, %d refused at this node; %d active in the cluster\n",
		st.ActiveConnections, st.TotalConnections, st.RefusedConnections, cluster)
	fmt.Fprintf(tw, "Traffic:\trx %s/s, tx %s/s at this node\n", humanBytes(st.RxSecond), humanBytes(st.TxSecond))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(st.Backends) == 0 && len(meta.BackendStates) == 0 {
		_, err := fmt.Fprintln(w, "no backends")
		return err
	}
	tw = newTable(w)
	fmt.Fprintln(tw, "BACKEND\tSTATE\tLIVE\tNODES\tACTIVE\tCLUSTER ACTIVE\tRX/s\tTX/s\tTOTAL\tREFUSED")
	listed := map[string]bool{}
	for _, b := range st.Backends {
		listed[b.address()] = true
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%d\t%d\n", b.address(), stateWord(b.state()), yesNo(b.Stats.Live),
			nodeVerdicts(b.Stats.Cluster.Nodes), b.Stats.ActiveConnections, b.Stats.Cluster.ActiveConnections,
			humanBytes(b.Stats.RxSecond), humanBytes(b.Stats.TxSecond), b.Stats.TotalConnections, b.Stats.RefusedConnections)
	}
	// A drained or disabled backend that discovery no longer lists keeps its
	// override (discovery may bring it back): show it, or enabling it would
	// be impossible to think of.
	var unlisted []string
	for addr := range meta.BackendStates {
		if !listed[addr] {
			unlisted = append(unlisted, addr)
		}
	}
	sort.Strings(unlisted)
	for _, addr := range unlisted {
		fmt.Fprintf(tw, "%s\t%s (not listed)\t-\t-\t-\t-\t-\t-\t-\t-\n", addr, stateWord(meta.BackendStates[addr]))
	}
	return tw.Flush()
}

func describeDiscovery(d *config.Discovery, st statsView, now time.Time) string {
	if d == nil {
		return "none"
	}
	s := d.Kind
	if d.Kind == "static" {
		return fmt.Sprintf("%s, %d backends", s, len(d.StaticList))
	}
	if d.Interval.D > 0 {
		s += " every " + d.Interval.String()
	}
	if ds := st.Discovery; ds != nil {
		switch {
		case ds.Fetched.IsZero():
			s += "; no fetch completed yet"
		case ds.OK:
			s += fmt.Sprintf("; last fetch %s ago: %d backends", ago(now, ds.Fetched), ds.Backends)
		default:
			s += fmt.Sprintf("; last fetch %s ago failed: %s", ago(now, ds.Fetched), ds.Error)
		}
	}
	return s
}

func describeHealthcheck(h *config.Healthcheck) string {
	if h == nil || h.Kind == "" || h.Kind == "none" {
		return "none"
	}
	s := h.Kind
	if h.Kind == "probe" && h.ProbeProtocol != "" {
		s += " (" + h.ProbeProtocol + ")"
	}
	s += fmt.Sprintf(" every %s, timeout %s, fails %d, passes %d", h.Interval, h.Timeout, h.Fails, h.Passes)
	if h.ClusterVerdict != "" {
		s += ", cluster verdict " + h.ClusterVerdict
	}
	return s
}

// nodeVerdicts is each node's own health verdict, sorted by node id.
func nodeVerdicts(nodes map[string]bool) string {
	if len(nodes) == 0 {
		return "-"
	}
	ids := make([]string, 0, len(nodes))
	for id := range nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		v := "down"
		if nodes[id] {
			v = "up"
		}
		parts[i] = id + ":" + v
	}
	return strings.Join(parts, " ")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// humanBytes writes n bytes in binary units: "512 B", "1.5 KiB", "20 MiB".
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + " B"
	}
	f := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		f /= unit
		if f < unit || u == "TiB" {
			if f < 10 {
				return strconv.FormatFloat(f, 'f', 1, 64) + " " + u
			}
			return strconv.FormatFloat(f, 'f', 0, 64) + " " + u
		}
	}
	return ""
}

// ago is how long before now t was, rounded for reading: "350ms", "4.2s", "3m10s".
func ago(now, t time.Time) string {
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// serverFile is the servers a file for `servers add` or `update` defines, each
// as the JSON body of POST /servers/{name}.
type serverFile struct {
	// full: the file is a whole config whose [servers.NAME] sections were
	// read; otherwise it is one server's table (or object) without a name.
	full    bool
	names   []string // sorted
	bodies  map[string][]byte
	ignored []string // top-level sections of a full config that are not sent
}

// configKeys are the top-level keys of a whole config. None of them is a key
// of a server, so a file with any of them is a whole config.
var configKeys = []string{"logging", "api", "metrics", "profiler", "defaults", "acme", "cluster", "servers"}

// readServerFile reads path ("-" is stdin) as TOML or JSON: format if given,
// else by the extension, else JSON when the text starts with "{".
func readServerFile(path, format string, stdin io.Reader) (*serverFile, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	if format == "" {
		switch strings.ToLower(filepath.Ext(path)) {
		case ".json":
			format = "json"
		case ".toml":
			format = "toml"
		default:
			format = "toml"
			if bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
				format = "json"
			}
		}
	}
	var doc map[string]any
	switch format {
	case "toml":
		if _, err := toml.Decode(string(data), &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	case "json":
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber() // keep numbers as written: the API checks their types
		if err := dec.Decode(&doc); err != nil {
			return nil, fmt.Errorf("%s: not a JSON object: %w", path, err)
		}
	default:
		return nil, fmt.Errorf("--format must be toml or json, not %q", format)
	}
	f := &serverFile{bodies: map[string][]byte{}}
	for _, k := range configKeys {
		if _, ok := doc[k]; ok {
			f.full = true
		}
	}
	if !f.full {
		body, err := json.Marshal(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		f.names = []string{""}
		f.bodies[""] = body
		return f, nil
	}
	for k := range doc {
		if k != "servers" {
			f.ignored = append(f.ignored, k)
		}
	}
	sort.Strings(f.ignored)
	servers, ok := doc["servers"].(map[string]any)
	if !ok && doc["servers"] != nil {
		return nil, fmt.Errorf("%s: servers is not a table of servers", path)
	}
	for name, v := range servers {
		if _, ok := v.(map[string]any); !ok {
			return nil, fmt.Errorf("%s: servers.%s is not a table", path, name)
		}
		body, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("%s: servers.%s: %w", path, name, err)
		}
		f.names = append(f.names, name)
		f.bodies[name] = body
	}
	sort.Strings(f.names)
	if len(f.names) == 0 {
		return nil, fmt.Errorf("%s: a whole config with no [servers.NAME] section", path)
	}
	return f, nil
}

// pick narrows f to the server called name ("" = every server in a whole
// config; a bare server definition needs a name).
func (f *serverFile) pick(name, path string) (map[string][]byte, []string, error) {
	if !f.full {
		if name == "" {
			return nil, nil, usagef("give the server's NAME: %s holds one server without a name", path)
		}
		return map[string][]byte{name: f.bodies[""]}, []string{name}, nil
	}
	if name == "" {
		return f.bodies, f.names, nil
	}
	body, ok := f.bodies[name]
	if !ok {
		return nil, nil, fmt.Errorf("%s has no server %q (it has %s)", path, name, strings.Join(f.names, ", "))
	}
	return map[string][]byte{name: body}, []string{name}, nil
}

func serversWrite(sub string, args []string, cio clientIO) error {
	c := newCommand("servers "+sub, cio, 30*time.Second)
	var file, format string
	var ifRevision uint64
	for _, n := range []string{"f", "file"} {
		c.fs.StringVar(&file, n, "", "")
	}
	c.fs.StringVar(&format, "format", "", "")
	if sub == "update" {
		c.fs.Uint64Var(&ifRevision, "if-revision", 0, "")
	}
	api, ctx, cancel, err := c.connect(args, 0, 1, "")
	if err != nil {
		return err
	}
	defer cancel()
	if file == "" {
		return usagef("-f FILE is required (a TOML or JSON server definition, or a whole config; - reads stdin)")
	}
	if format != "" && format != "toml" && format != "json" {
		return usagef("--format must be toml or json, not %q", format)
	}
	name := ""
	if len(c.args) == 1 {
		name = c.args[0]
	}
	sf, err := readServerFile(file, format, cio.stdin)
	if err != nil {
		return err
	}
	bodies, names, err := sf.pick(name, file)
	if err != nil {
		return err
	}
	if ifRevision != 0 && len(names) > 1 {
		return usagef("--if-revision needs one server: give its NAME")
	}
	if slices.Contains(sf.ignored, "defaults") {
		fmt.Fprintf(cio.stderr, "note: [defaults] in %s is not sent: the node's own [defaults] apply to the servers\n", file)
	}
	method, verb := http.MethodPost, "created"
	if sub == "update" {
		method, verb = http.MethodPut, "updated"
	}
	answers := map[string]json.RawMessage{}
	failed := false
	for _, n := range names {
		var hdr http.Header
		if ifRevision != 0 {
			hdr = http.Header{"If-Match": {strconv.Quote(strconv.FormatUint(ifRevision, 10))}}
		}
		resp, err := api.do(ctx, method, serverPath(n), bodies[n], hdr)
		var ae *apiError
		if errors.As(err, &ae) && ae.status == http.StatusConflict && ifRevision != 0 {
			err = fmt.Errorf("%w\n  (server %q is no longer at revision %d: see gobetween servers show %s)", err, n, ifRevision, n)
		}
		if err != nil {
			if len(names) == 1 {
				return err
			}
			failed = true
			fmt.Fprintf(cio.stderr, "gobetween %s: server %q: %s\n", c.name, n, err)
			continue
		}
		answers[n] = resp.body
		if !c.json() {
			msg := fmt.Sprintf("server %q %s", n, verb)
			if rev := resp.header.Get("X-Gobetween-Revision"); rev != "" {
				msg += " (revision " + rev + ")"
			}
			fmt.Fprintln(cio.stdout, msg)
		}
	}
	if c.json() {
		var err error
		if !sf.full || name != "" {
			for _, a := range answers {
				err = writeRawJSON(cio.stdout, a)
			}
		} else {
			err = writeJSONOut(cio.stdout, answers)
		}
		if err != nil {
			return err
		}
	}
	if failed {
		return errSilentFail
	}
	return nil
}

func serversDelete(args []string, cio clientIO) error {
	c := newCommand("servers delete", cio, 30*time.Second)
	api, ctx, cancel, err := c.connect(args, 1, 1, "server NAME")
	if err != nil {
		return err
	}
	defer cancel()
	name := c.args[0]
	if _, err := api.do(ctx, http.MethodDelete, serverPath(name), nil, nil); err != nil {
		return err
	}
	if c.json() {
		return writeJSONOut(cio.stdout, map[string]string{"deleted": name})
	}
	_, err = fmt.Fprintf(cio.stdout, "server %q deleted\n", name)
	return err
}
