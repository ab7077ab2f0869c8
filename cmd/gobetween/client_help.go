package main

// clientFlagsHelp is the part of every client command's help about the flags
// they share.
const clientFlagsHelp = `
Client flags (before or after the command):
  --api URL             the node's REST API: http(s)://host:port or host:port
                        (default $GOBETWEEN_API, else http://127.0.0.1:8888);
                        user:password@ in the URL is used for basic auth
  --user NAME           basic-auth login (default $GOBETWEEN_USER)
  --password PASS       basic-auth password (default $GOBETWEEN_PASSWORD)
  --ca FILE             PEM CA certificate(s) to verify an https API with
  --cert FILE --key FILE
                        client certificate and key, for an API behind mutual TLS
  --insecure            do not verify the API's certificate
  --timeout DURATION    give up after this long (default 30s; health 2s;
                        backends ... --wait 5m)
  -o, --output table|json
                        tables for people (default), or JSON: the API's answer
                        as it came, or one object combining several answers

Exit status: 0 done, 1 failed (the API's error and its details are printed),
2 the command line is wrong.
`

// clientHelp is `gobetween help COMMAND` and `gobetween COMMAND --help`.
var clientHelp = map[string]string{
	"servers": `Usage:
  gobetween servers [list]                   every server at the node
  gobetween servers show NAME                a server's definition and its backends
  gobetween servers add [NAME] -f FILE       create a server
  gobetween servers update [NAME] -f FILE [--if-revision N]
                                             replace a server's definition
  gobetween servers delete NAME              remove a server (its open connections
                                             get drain_timeout to finish)

list prints NAME BIND PROTOCOL BALANCE BACKENDS ACTIVE CLUSTER-ACTIVE ORIGIN
REVISION. BACKENDS is live/total: live backends are healthy for the cluster and
neither drained nor disabled. ACTIVE counts this node's connections, CLUSTER
ACTIVE every live node's. ORIGIN is config (a node's config file) or api.

show prints the definition and one row per backend: STATE (enabled, drain,
disable), LIVE (the cluster verdict this node routes by), NODES (each node's own
health verdict), ACTIVE (this node), CLUSTER ACTIVE (every live node), RX/s and
TX/s (this node), TOTAL and REFUSED connections (this node).

add and update read FILE (- for stdin) as TOML or JSON (by its extension, or
--format toml|json). FILE is either one server's table, as under
[servers.NAME] (bind = ..., [discovery], [healthcheck]), with NAME given on the
command line; or a whole config file with [servers.NAME] sections, of which
NAME picks one (without NAME: every server in the file). The node validates the
definition like its config file, every problem listed with its path.
--if-revision N updates only if the server is still at revision N (see
servers show), so that a concurrent change is not overwritten.

Flags:
  -f, --file FILE         the definition
      --format toml|json  FILE's format (default: by extension, else toml)
      --if-revision N     update: only if the server is at revision N
` + clientFlagsHelp,

	"backends": `Usage:
  gobetween backends drain SERVER HOST:PORT [--wait] [--timeout 5m]
  gobetween backends disable SERVER HOST:PORT [--wait]
  gobetween backends enable SERVER HOST:PORT

drain: no new connections go to the backend; open ones finish. disable: no new
connections either. enable: back in rotation. The change is replicated to every
node of the cluster and survives restarts. HOST:PORT is the backend as servers
show lists it.

--wait (drain, disable) waits until the backend's connections are gone from the
whole cluster: its cluster-wide active connections are 0 and every live member
has published two observed-state reports since the drain was acknowledged, so
connections let in by a node that applied the drain late are counted too.
Progress (connections left) goes to stderr. Exit 0 once drained, 1 when
--timeout (default 5m with --wait) passes first.

Flags:
  --wait                  wait for the backend's connections to close
` + clientFlagsHelp,

	"cluster": `Usage:
  gobetween cluster [show]          this node, the leader, the applied revision
                                    and the members
  gobetween cluster join ADDR...    let the node(s) at ADDR (gossip host:port)
                                    in, or join this node to their cluster
  gobetween cluster remove ID       remove a member from Raft and gossip

show lists every member: ID, ADDRESS (its Raft address), RAFT (leader, voter, nonvoter,
none), GOSSIP (alive, suspect, dead, left, none) and LAST REPORT (when this
node last heard the member's observed state, its sequence number and how many
backends it covered).
` + clientFlagsHelp,

	"health": `Usage:
  gobetween health [--api URL]

GET /health: prints the node's answer and exits 0 when it is healthy (200),
1 otherwise or when the node does not answer within --timeout (default 2s).
/health needs no credentials. The binary needs nothing else, so an image FROM
scratch can use it:

  HEALTHCHECK CMD ["/gobetween", "health", "--api", "http://127.0.0.1:8888"]
` + clientFlagsHelp,
}
