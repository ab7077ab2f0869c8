// Command gobetween is an L4 (TCP, TLS, UDP) load balancer and reverse proxy.
//
// main parses the command line, then hands over to run, which owns the process:
// signals, the order of start-up and the order of shutdown.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"
)

// options is the parsed command line.
type options struct {
	command      string // "run" or "validate"
	configPath   string
	source       string // "" (the file configPath), sourceURL or sourceConsul
	sourceAddr   string // the URL, or Consul's HOST:PORT
	consulKey    string
	consulScheme string
	watch        time.Duration // re-read the source this often; 0 = on SIGHUP only
	format       string
	env          bool
	pidfile      string
	strict       bool
	version      bool
	dataDir      string
	stopGrace    time.Duration // after a stop signal, keep accepting this long with /health failing
}

const usage = `gobetween — L4 load balancer

Usage:
  gobetween -c FILE [flags]            run with the config FILE
  gobetween from-file FILE [flags]     the same
  gobetween from-url URL [flags]       run with the config served at URL (HTTP GET)
  gobetween from-consul HOST:PORT [-k KEY] [-s SCHEME] [flags]
                                       run with the config in a Consul KV key
  gobetween validate -c FILE [flags]   check a config and exit (0 = valid)
  gobetween -v                         print the version

Flags:
  -c, --config FILE               config file
  -f, --format toml|json          config format (default toml)
  -e, --use-config-env-vars       substitute ${VAR} in the config from the environment
  -p, --pidfile FILE              write the process id to FILE
  -k, --key KEY                   from-consul: the KV key (default gobetween)
  -s, --scheme http|https         from-consul: how to reach Consul (default http);
                                  token and TLS files come from CONSUL_HTTP_TOKEN,
                                  CONSUL_CACERT, ... as for the consul CLI
      --watch DURATION            re-read the config source every DURATION and
                                  apply it when it changed (e.g. 30s)
      --strict                    unknown config keys are errors, not warnings
      --data-dir DIR              where the desired state (servers created through
                                  the API) is kept (default ./gobetween-data, or
                                  [cluster] data_dir)
      --stop-grace DURATION       after SIGTERM/SIGINT, fail /health at once but keep
                                  accepting for DURATION, so that a keepalived VIP or
                                  an outside balancer moves away first (e.g. 3s)
  -v, --version                   print the version and exit

Signals: SIGHUP reloads the config (file, URL or Consul key); SIGTERM and SIGINT fail /health,
wait --stop-grace, stop accepting, drain open connections for drain_timeout and exit.

Client commands (talk to a running node's REST API; gobetween help COMMAND for more):
  gobetween servers [list]             servers, backends live/total, connections
  gobetween servers show NAME          a server's definition and backends
  gobetween servers add [NAME] -f FILE create server(s) from a TOML or JSON file
  gobetween servers update [NAME] -f FILE [--if-revision N]
  gobetween servers delete NAME
  gobetween backends drain|disable|enable SERVER HOST:PORT [--wait]
  gobetween cluster [show]             node, leader, revision, members
  gobetween cluster join ADDR...       add nodes by gossip address
  gobetween cluster remove ID          remove a member
  gobetween health                     exit 0 when the node is healthy
  client flags: --api URL (default $GOBETWEEN_API or http://127.0.0.1:8888),
  --user/--password, --ca, --cert/--key, --insecure, --timeout, -o table|json
`

func main() {
	// Client commands read only the command line: GOBETWEEN, which may carry a
	// container's run arguments, must not break its HEALTHCHECK.
	if isClientCommand(os.Args[1:]) {
		os.Exit(runClient(os.Args[1:], clientIO{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}))
	}
	args, err := argv(os.Args[1:], os.Getenv("GOBETWEEN"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "gobetween:", err)
		os.Exit(2)
	}
	// Asked-for help goes to stdout (so that `gobetween --help | less` works);
	// usage printed for a mistake goes to stderr.
	if len(args) == 1 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
		fmt.Fprint(os.Stdout, usage)
		return
	}
	opts, err := parseArgs(args, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "gobetween:", err)
		os.Exit(2)
	}
	if opts.version {
		fmt.Println(versionString())
		return
	}
	switch opts.command {
	case "validate":
		os.Exit(validate(opts, os.Stdout, os.Stderr))
	default:
		os.Exit(run(opts))
	}
}

// argv returns the arguments to parse: gobetween 0.8 let the GOBETWEEN environment
// variable carry them as a JSON array instead of the command line.
func argv(cmdline []string, env string) ([]string, error) {
	if env == "" {
		return cmdline, nil
	}
	if len(cmdline) > 0 {
		return nil, errors.New("arguments given both on the command line and in GOBETWEEN")
	}
	var args []string
	if err := json.Unmarshal([]byte(env), &args); err != nil {
		return nil, fmt.Errorf("GOBETWEEN must be a JSON array of strings: %w", err)
	}
	return args, nil
}

func parseArgs(args []string, stderr io.Writer) (options, error) {
	var o options
	o.command = "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "from-file":
			if len(args) < 2 || strings.HasPrefix(args[1], "-") {
				return o, errors.New("from-file needs a FILE")
			}
			o.configPath = args[1]
			args = args[2:]
		case "from-url", "from-consul":
			if len(args) < 2 || strings.HasPrefix(args[1], "-") {
				return o, fmt.Errorf("%s needs a %s", args[0], map[string]string{"from-url": "URL", "from-consul": "HOST:PORT"}[args[0]])
			}
			o.source = strings.TrimPrefix(args[0], "from-")
			o.sourceAddr = args[1]
			args = args[2:]
		case "validate":
			o.command = "validate"
			args = args[1:]
		case "help":
			if len(args) > 1 {
				return o, fmt.Errorf("no help for %q: not a command (see gobetween help)", args[1])
			}
			fmt.Fprint(stderr, usage)
			return o, flag.ErrHelp
		default:
			return o, fmt.Errorf("unknown command %q (see gobetween --help)", args[0])
		}
	}
	fs := flag.NewFlagSet("gobetween", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	for _, name := range []string{"c", "config"} {
		fs.StringVar(&o.configPath, name, o.configPath, "config file")
	}
	for _, name := range []string{"f", "format"} {
		fs.StringVar(&o.format, name, "toml", "config format")
	}
	for _, name := range []string{"e", "use-config-env-vars"} {
		fs.BoolVar(&o.env, name, false, "substitute ${VAR}")
	}
	for _, name := range []string{"p", "pidfile"} {
		fs.StringVar(&o.pidfile, name, "", "pid file")
	}
	for _, name := range []string{"v", "version"} {
		fs.BoolVar(&o.version, name, false, "print the version")
	}
	for _, name := range []string{"k", "key"} {
		fs.StringVar(&o.consulKey, name, "", "consul key")
	}
	for _, name := range []string{"s", "scheme"} {
		fs.StringVar(&o.consulScheme, name, "", "consul scheme")
	}
	fs.DurationVar(&o.watch, "watch", 0, "re-read the config source every interval")
	fs.BoolVar(&o.strict, "strict", false, "unknown keys are errors")
	fs.StringVar(&o.dataDir, "data-dir", "", "data directory")
	fs.DurationVar(&o.stopGrace, "stop-grace", 0, "after a stop signal, keep accepting this long with /health failing")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if o.version {
		return o, nil
	}
	if o.format != "toml" && o.format != "json" {
		return o, fmt.Errorf("--format must be toml or json, not %q", o.format)
	}
	if o.stopGrace < 0 {
		return o, fmt.Errorf("--stop-grace must not be negative, not %v", o.stopGrace)
	}
	if o.watch < 0 {
		return o, fmt.Errorf("--watch must not be negative, not %v", o.watch)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.source != sourceConsul && (set["k"] || set["key"] || set["s"] || set["scheme"]) {
		return o, errors.New("--key and --scheme go with from-consul")
	}
	switch o.source {
	case sourceURL:
		u, err := url.Parse(o.sourceAddr)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return o, fmt.Errorf("from-url needs an http:// or https:// URL, not %q", o.sourceAddr)
		}
	case sourceConsul:
		if !set["k"] && !set["key"] {
			o.consulKey = "gobetween"
		}
		if o.consulScheme == "" {
			o.consulScheme = "http"
		}
		if o.consulScheme != "http" && o.consulScheme != "https" {
			return o, fmt.Errorf("--scheme must be http or https, not %q", o.consulScheme)
		}
		if o.consulKey == "" {
			return o, errors.New("--key must not be empty")
		}
	}
	if o.source != "" && o.configPath != "" {
		return o, fmt.Errorf("-c and from-%s name two configs: use one", o.source)
	}
	if o.source == "" && o.configPath == "" {
		fs.Usage()
		return o, errNoSource
	}
	return o, nil
}
