#!/bin/sh
# keepalived track_script for gobetween: exit 0 when this node's GET /health
# answers 200, else 1 (see README.md for what /health checks).
#
# Usage: gobetween-check.sh [URL]
#   URL   the node's health endpoint; default $GOBETWEEN_HEALTH_URL, else
#         http://127.0.0.1:8888/health (the API must listen on 127.0.0.1 then:
#         [api] bind = "0.0.0.0:8888" or "127.0.0.1:8888").
# Environment:
#   GOBETWEEN_HEALTH_URL      the URL when none is given
#   GOBETWEEN_HEALTH_TIMEOUT  seconds the whole request may take (curl
#                             --max-time; default 1). Keep it below the
#                             vrrp_script timeout in keepalived.conf.
#   GOBETWEEN_HEALTH_CA       with [api.tls]: a PEM CA file that verifies the
#                             API's certificate (curl --cacert)
#   GOBETWEEN_HEALTH_INSECURE with [api.tls]: 1 skips certificate verification
#                             (curl -k); fine for https://127.0.0.1, where a
#                             certificate for the node's name does not match
#
# /health needs no credentials. Run by hand, the script prints why it failed:
# the 503 body names each failing check.

url=${1:-${GOBETWEEN_HEALTH_URL:-http://127.0.0.1:8888/health}}
max_time=${GOBETWEEN_HEALTH_TIMEOUT:-1}

# --noproxy: a proxy in the environment must never answer for this node.
# The status code is appended after the body; a transport failure gives 000.
set -- -sS --noproxy '*' --max-time "$max_time" -w ' %{http_code}'
if [ -n "${GOBETWEEN_HEALTH_CA:-}" ]; then
	set -- "$@" --cacert "$GOBETWEEN_HEALTH_CA"
fi
if [ "${GOBETWEEN_HEALTH_INSECURE:-}" = 1 ]; then
	set -- "$@" -k
fi
out=$(curl "$@" "$url" 2>&1)
code=${out##* }
if [ "$code" = 200 ]; then
	exit 0
fi
printf 'gobetween-check: %s: %s\n' "$url" "$out" >&2
exit 1
