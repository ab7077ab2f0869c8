package main

// The client subcommands (servers, backends, cluster, health) talk to a running
// node's REST API, so that operating a cluster needs no curl. They share one
// set of global flags, accepted before or after the subcommand, and one way of
// reporting: a table (or a few lines) on stdout by default, -o json for
// scripts, API errors with every detail on stderr and exit 1, usage errors
// exit 2.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// Client exit codes: 0 success, 1 the operation failed (API error, unreachable
// node, unhealthy node, a wait that timed out), 2 the command line is wrong.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// defaultAPI is the [api] bind of the README's first node.
const defaultAPI = "http://127.0.0.1:8888"

// clientGroups are the client commands and their subcommands; the first
// subcommand is the default when none is given ("" when one is required).
var clientGroups = map[string][]string{
	"servers":  {"list", "show", "add", "update", "delete"},
	"backends": {"", "drain", "disable", "enable"},
	"cluster":  {"show", "join", "remove"},
	"health":   nil,
}

// clientFlags are the flags every client command takes.
type clientFlags struct {
	api      string
	user     string
	password string
	ca       string
	cert     string
	key      string
	insecure bool
	timeout  time.Duration
	output   string
}

// valueFlags are the flags of any client command that take a value, so that
// finding the command words can skip their values.
var valueFlags = map[string]bool{
	"api": true, "user": true, "password": true, "ca": true, "cert": true, "key": true,
	"timeout": true, "o": true, "output": true,
	"f": true, "file": true, "format": true, "if-revision": true,
	// The 0.8 command line's, so that `gobetween -c health` stays a run.
	"c": true, "config": true, "p": true, "pidfile": true, "k": true, "s": true, "scheme": true,
	"watch": true, "data-dir": true,
}

// isClientCommand reports whether args invoke a client command: the first
// argument that is neither a flag nor a flag's value names one, as in
// `gobetween --api URL servers`, or args are `help COMMAND`. Anything else
// (-c FILE, from-file, validate, ...) is left to the 0.8 command line.
func isClientCommand(args []string) bool {
	words, _ := commandWords(args, 1)
	if len(words) == 0 {
		return false
	}
	if words[0] == "help" {
		words, _ = commandWords(args, 2)
		if len(words) < 2 {
			return false
		}
		words = words[1:]
	}
	_, ok := clientGroups[words[0]]
	return ok
}

// commandWords returns up to n leading positional arguments (skipping flags
// and their values) and args without them.
func commandWords(args []string, n int) (words, rest []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		if len(words) < n && (a == "" || a[0] != '-' || a == "-") {
			words = append(words, a)
			continue
		}
		rest = append(rest, a)
		if name, hasValue := flagName(a); name != "" && !hasValue && valueFlags[name] && i+1 < len(args) {
			i++
			rest = append(rest, args[i])
		}
	}
	return words, rest
}

// flagName is the name of flag argument a ("--api=x" -> "api", true).
func flagName(a string) (name string, hasValue bool) {
	if !strings.HasPrefix(a, "-") || a == "-" {
		return "", false
	}
	name = strings.TrimLeft(a, "-")
	if k, _, ok := strings.Cut(name, "="); ok {
		return k, true
	}
	return name, false
}

// clientEnv gives the environment to a client run; os.Getenv in main.
type clientEnv func(string) string

// clientIO is where a client command reads and writes.
type clientIO struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         clientEnv
}

// usageError is a mistake on the command line: exit 2, with a pointer to the
// command's help.
type usageError struct {
	msg string
}

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// runClient runs one client command and returns the process exit code.
func runClient(args []string, cio clientIO) int {
	words, rest := commandWords(args, 2)
	group := words[0]
	if group == "help" {
		if len(words) < 2 {
			fmt.Fprint(cio.stdout, usage)
			return exitOK
		}
		fmt.Fprint(cio.stdout, clientHelp[words[1]])
		return exitOK
	}
	sub := ""
	subs := clientGroups[group]
	if len(words) == 2 {
		if slices.Contains(subs, words[1]) && words[1] != "" {
			sub = words[1]
		} else {
			// Not a subcommand: a positional argument of the default one
			// (there is none that takes any, so this reports it below).
			rest = append([]string{words[1]}, rest...)
		}
	}
	if sub == "" && len(subs) > 0 {
		sub = subs[0]
	}
	cmdName := strings.TrimSpace(group + " " + sub)
	if sub == "" && len(subs) > 0 && slices.ContainsFunc(rest, func(a string) bool { return a == "-h" || a == "-help" || a == "--help" }) {
		fmt.Fprint(cio.stdout, clientHelp[group])
		return exitOK
	}
	if sub == "" && len(subs) > 0 {
		fmt.Fprintf(cio.stderr, "gobetween %s: a subcommand is needed: %s\n\n%s", group, strings.Join(subs[1:], ", "), clientHelp[group])
		return exitUsage
	}
	err := dispatchClient(group, sub, rest, cio)
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(cio.stdout, clientHelp[group])
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(cio.stderr, "gobetween %s: %s\n(see gobetween %s --help)\n", cmdName, ue.msg, group)
		return exitUsage
	case errors.Is(err, errSilentFail):
		return exitFail
	default:
		fmt.Fprintf(cio.stderr, "gobetween %s: %s\n", cmdName, err)
		return exitFail
	}
}

// errSilentFail: the command has said why it failed; exit 1 without more.
var errSilentFail = errors.New("failed")

// command is one parsed client command: its flag set (global flags included)
// and, after parse, the positional arguments.
type command struct {
	name  string
	fs    *flag.FlagSet
	flags clientFlags
	args  []string
	io    clientIO
}

// newCommand declares the global client flags on a fresh flag set.
func newCommand(name string, cio clientIO, defaultTimeout time.Duration) *command {
	c := &command{name: name, io: cio, fs: flag.NewFlagSet("gobetween "+name, flag.ContinueOnError)}
	c.fs.SetOutput(io.Discard)
	f := &c.flags
	api := cio.getenv("GOBETWEEN_API")
	if api == "" {
		api = defaultAPI
	}
	c.fs.StringVar(&f.api, "api", api, "")
	c.fs.StringVar(&f.user, "user", cio.getenv("GOBETWEEN_USER"), "")
	c.fs.StringVar(&f.password, "password", cio.getenv("GOBETWEEN_PASSWORD"), "")
	c.fs.StringVar(&f.ca, "ca", "", "")
	c.fs.StringVar(&f.cert, "cert", "", "")
	c.fs.StringVar(&f.key, "key", "", "")
	c.fs.BoolVar(&f.insecure, "insecure", false, "")
	c.fs.DurationVar(&f.timeout, "timeout", defaultTimeout, "")
	for _, n := range []string{"o", "output"} {
		c.fs.StringVar(&f.output, n, "table", "")
	}
	return c
}

// parse reads flags anywhere among args (Go's flag package stops at the first
// positional argument) and checks the positional count.
func (c *command) parse(args []string, minArgs, maxArgs int, what string) error {
	for {
		if err := c.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return usagef("%s", err)
		}
		args = c.fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			c.args = append(c.args, args[1:]...)
			break
		}
		c.args = append(c.args, args[0])
		args = args[1:]
	}
	if len(c.args) < minArgs || (maxArgs >= 0 && len(c.args) > maxArgs) {
		if len(c.args) < minArgs {
			return usagef("missing %s", what)
		}
		return usagef("unexpected arguments: %s", strings.Join(c.args[maxArgs:], " "))
	}
	if c.flags.output != "table" && c.flags.output != "json" {
		return usagef("-o must be table or json, not %q", c.flags.output)
	}
	if c.flags.timeout <= 0 {
		return usagef("--timeout must be positive, not %v", c.flags.timeout)
	}
	if (c.flags.cert == "") != (c.flags.key == "") {
		return usagef("--cert and --key go together")
	}
	return nil
}

func (c *command) json() bool { return c.flags.output == "json" }

// apiClient is an HTTP client bound to one node's API.
type apiClient struct {
	base       *url.URL // scheme://host[:port][/prefix], no user info
	user, pass string
	hc         *http.Client
}

// newAPIClient builds the client from the global flags. The API address may
// be a bare host:port (http, or https when a TLS flag is given) and may carry
// user:password, which --user and --password override.
func newAPIClient(f clientFlags) (*apiClient, error) {
	raw := f.api
	tlsWanted := f.ca != "" || f.cert != "" || f.insecure
	if !strings.Contains(raw, "://") {
		scheme := "http://"
		if tlsWanted {
			scheme = "https://"
		}
		raw = scheme + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, usagef("--api must be an http:// or https:// URL or host:port, not %q", f.api)
	}
	c := &apiClient{}
	if u.User != nil {
		c.user = u.User.Username()
		c.pass, _ = u.User.Password()
		u.User = nil
	}
	if f.user != "" {
		c.user = f.user
	}
	if f.password != "" {
		c.pass = f.password
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	c.base = u

	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // a node's API is reached directly, never through HTTP_PROXY
	if u.Scheme == "https" || tlsWanted {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: f.insecure}
		if f.ca != "" {
			pem, err := os.ReadFile(f.ca)
			if err != nil {
				return nil, fmt.Errorf("--ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--ca %s: no PEM certificate in it", f.ca)
			}
			tc.RootCAs = pool
		}
		if f.cert != "" {
			pair, err := tls.LoadX509KeyPair(f.cert, f.key)
			if err != nil {
				return nil, fmt.Errorf("--cert/--key: %w", err)
			}
			tc.Certificates = []tls.Certificate{pair}
		}
		tr.TLSClientConfig = tc
	}
	c.hc = &http.Client{Transport: tr}
	return c, nil
}

// apiResponse is a 2xx answer.
type apiResponse struct {
	status int
	header http.Header
	body   []byte
}

// apiError is a non-2xx answer, with the API's error body when it sent one.
type apiError struct {
	method, path string
	status       int
	msg          string
	details      []apiProblem
	body         []byte // as received
}

type apiProblem struct {
	Path string `json:"path"`
	Msg  string `json:"msg"`
}

func (e *apiError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d %s", e.method, e.path, e.status, http.StatusText(e.status))
	if e.msg != "" {
		b.WriteString(": " + e.msg)
	}
	for _, d := range e.details {
		if d.Path != "" {
			fmt.Fprintf(&b, "\n  %s: %s", d.Path, d.Msg)
		} else {
			fmt.Fprintf(&b, "\n  %s", d.Msg)
		}
	}
	if e.status == http.StatusUnauthorized {
		b.WriteString("\n  (give --user and --password, or set GOBETWEEN_USER and GOBETWEEN_PASSWORD)")
	}
	if e.status == http.StatusBadRequest && strings.Contains(e.msg, "HTTP request to an HTTPS server") {
		b.WriteString("\n  (the API uses TLS: give --api https://HOST:PORT, with --ca FILE or --insecure)")
	}
	return b.String()
}

// do sends one request; any status but 2xx is an *apiError.
func (c *apiClient) do(ctx context.Context, method, path string, body []byte, hdr http.Header) (*apiResponse, error) {
	u := *c.base
	// path is already escaped by the caller (url.PathEscape per segment).
	u.RawPath = c.base.EscapedPath() + path
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return nil, fmt.Errorf("bad request path %q: %w", path, err)
	}
	u.Path = p
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), r)
	if err != nil {
		return nil, err
	}
	addHeaders(req.Header, hdr)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "gobetween-client/"+version)
	if c.user != "" || c.pass != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("%s %s: no answer within --timeout", method, u.Redacted())
		}
		var unknownCA x509.UnknownAuthorityError
		var badHost x509.HostnameError
		var invalid x509.CertificateInvalidError
		if errors.As(err, &unknownCA) || errors.As(err, &badHost) || errors.As(err, &invalid) {
			return nil, fmt.Errorf("%s %s: %w\n  (the API's certificate is not trusted: --ca FILE names the CA that signed it, --insecure skips the check)", method, u.Redacted(), err)
		}
		return nil, fmt.Errorf("%s %s: %w\n  (is a gobetween node with [api] enabled there? --api or GOBETWEEN_API names the node)", method, u.Redacted(), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, u.Redacted(), err)
	}
	if resp.StatusCode/100 != 2 {
		e := &apiError{method: method, path: path, status: resp.StatusCode, body: b}
		var eb struct {
			Error   string       `json:"error"`
			Details []apiProblem `json:"details"`
		}
		if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
			e.msg, e.details = eb.Error, eb.Details
		} else {
			e.msg = strings.TrimSpace(string(b))
			if len(e.msg) > 300 {
				e.msg = e.msg[:300] + "…"
			}
		}
		return nil, e
	}
	return &apiResponse{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

func addHeaders(dst, src http.Header) {
	for k, vs := range src {
		for _, v := range vs {
			dst.Add(k, v)
		}
	}
}

// getJSON GETs path and decodes the answer into v.
func (c *apiClient) getJSON(ctx context.Context, path string, v any) (*apiResponse, error) {
	resp, err := c.do(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(resp.body, v); err != nil {
		return nil, fmt.Errorf("GET %s: answer is not the JSON expected: %w", path, err)
	}
	return resp, nil
}

// writeJSONOut prints v indented, with a final newline.
func writeJSONOut(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// writeRawJSON prints an API body as it came, ending with one newline.
func writeRawJSON(w io.Writer, body []byte) error {
	_, err := w.Write(append(bytes.TrimRight(body, "\n"), '\n'))
	return err
}

// dispatchClient parses and runs group's subcommand sub.
func dispatchClient(group, sub string, args []string, cio clientIO) error {
	switch group {
	case "servers":
		return runServers(sub, args, cio)
	case "backends":
		return runBackends(sub, args, cio)
	case "cluster":
		return runCluster(sub, args, cio)
	case "health":
		return runHealth(args, cio)
	}
	return usagef("unknown command %q", group)
}

// connect parses args into c and builds its API client and a context bounded
// by --timeout.
func (c *command) connect(args []string, minArgs, maxArgs int, what string) (*apiClient, context.Context, context.CancelFunc, error) {
	if err := c.parse(args, minArgs, maxArgs, what); err != nil {
		return nil, nil, nil, err
	}
	api, err := newAPIClient(c.flags)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.flags.timeout)
	return api, ctx, cancel, nil
}
