#!/usr/bin/env bash
# `make check`: python3 -m http.server in the enclave, driven by curl and wrk.
set -euo pipefail
cd "$(dirname "$0")"
source ../common_tools/server.sh
: "${PYLOS:=pylos}" "${PORT:=8005}"
URL="http://127.0.0.1:$PORT"

start_server OUTPUT.server "$PYLOS" run python
wait_for_server 30 127.0.0.1 "$PORT"
curl -sf "$URL/index.html" -o OUTPUT.page
cmp OUTPUT.page html/index.html
curl -sf "$URL/" | cmp - html/index.html
echo "[ Success 1/4 ] the 10 KB page, byte for byte"

test "$(curl -s -o /dev/null -w '%{http_code}' "$URL/missing.html")" = 404
echo "[ Success 2/4 ] a missing page is 404"

# 4 connections: http.server listens with a backlog of 5; a burst of 32 connects overflows it
# and each dropped SYN waits a second for its retransmission.
wrk -t2 -c4 -d2s "$URL/index.html" > OUTPUT.wrk
if grep -q "Non-2xx\|Socket errors" OUTPUT.wrk; then cat OUTPUT.wrk >&2; exit 1; fi
awk '/^Requests\/sec:/ { ok = $2 > 0 } END { exit !ok }' OUTPUT.wrk
echo "[ Success 3/4 ] wrk -t2 -c4 -d2s: $(grep ^Requests/sec OUTPUT.wrk)"

# SIGINT: KeyboardInterrupt, the server says "exiting" and exits 0 (SIGTERM kills Python).
stop_server INT
echo "[ Success 4/4 ] stopped cleanly"
