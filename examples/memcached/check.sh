#!/usr/bin/env bash
# `make check`: memcached in the enclave, driven over its text protocol and by memcslap.
set -euo pipefail
cd "$(dirname "$0")"
source ../common_tools/server.sh
: "${PYLOS:=pylos}" "${PORT:=11211}"

# expect REQUEST LINE...: send REQUEST on one connection, compare the answer's lines.
expect() {
    local request=$1 line want
    shift
    exec 3<>"/dev/tcp/127.0.0.1/$PORT"
    printf '%b' "$request" >&3
    for want in "$@"; do
        IFS= read -r -t 10 line <&3 || { echo "no answer to '$request'" >&2; return 1; }
        line=${line%$'\r'}
        if [ "$line" != "$want" ]; then
            echo "'$request': got '$line', expected '$want'" >&2
            return 1
        fi
    done
    exec 3<&-
}

start_server OUTPUT.server "$PYLOS" run memcached
wait_for_server 30 127.0.0.1 "$PORT"
expect 'set greeting 5 0 13\r\nhello, world!\r\n' STORED
expect 'get greeting\r\n' "VALUE greeting 5 13" "hello, world!" END
expect 'set counter 0 0 2\r\n41\r\nincr counter 1\r\n' STORED 42
expect 'delete greeting\r\nget greeting\r\n' DELETED END
echo "[ Success 1/3 ] set, get, incr, delete"

memcslap --servers="127.0.0.1:$PORT" --concurrency=8 --execute-number=2000 --test=get \
    > OUTPUT.memcslap 2>&1
if grep -qi "error\|failure" OUTPUT.memcslap; then head -20 OUTPUT.memcslap >&2; exit 1; fi
exec 3<>"/dev/tcp/127.0.0.1/$PORT"
printf 'stats\r\nquit\r\n' >&3
hits=$(tr -d '\r' <&3 | awk '$2 == "get_hits" { print $3 }')
test "${hits:-0}" -ge 16000
echo "[ Success 2/3 ] memcslap: 8 connections, $hits hits"

stop_server TERM
echo "[ Success 3/3 ] stopped cleanly"
