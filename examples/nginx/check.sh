#!/usr/bin/env bash
# `make check`: nginx in the enclave, driven by curl and wrk.
set -euo pipefail
cd "$(dirname "$0")"
source ../common_tools/server.sh
: "${PYLOS:=pylos}" "${PORT:=8002}"
URL="http://127.0.0.1:$PORT"

start_server OUTPUT.server "$PYLOS" run nginx
wait_for_server 30 127.0.0.1 "$PORT"
curl -sf "$URL/index.html" -o OUTPUT.page
cmp OUTPUT.page html/index.html
curl -sf "$URL/" | cmp - html/index.html
echo "[ Success 1/4 ] the 10 KB page, byte for byte"

test "$(curl -s -o /dev/null -w '%{http_code}' "$URL/missing.html")" = 404
echo "[ Success 2/4 ] a missing page is 404"

wrk -t2 -c32 -d2s "$URL/index.html" > OUTPUT.wrk
if grep -q "Non-2xx\|Socket errors" OUTPUT.wrk; then cat OUTPUT.wrk >&2; exit 1; fi
awk '/^Requests\/sec:/ { ok = $2 > 0 } END { exit !ok }' OUTPUT.wrk
echo "[ Success 3/4 ] wrk -t2 -c32 -d2s: $(grep ^Requests/sec OUTPUT.wrk)"

stop_server TERM
echo "[ Success 4/4 ] stopped cleanly"
