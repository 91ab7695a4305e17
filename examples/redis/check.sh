#!/usr/bin/env bash
# `make check`: Redis in the enclave, driven by the real clients.
set -euo pipefail
cd "$(dirname "$0")"
source ../common_tools/server.sh
: "${PYLOS:=pylos}" "${PORT:=6379}" "${ENCRYPTED:=1}"
: "${ENCRYPTION_KEY:=ffeeddccbbaa99887766554433221100}"
cli() { redis-cli -h 127.0.0.1 -p "$PORT" "$@"; }
VALUE="pylos-persisted-value-$$"

rm -f data/dump.rdb
start_server OUTPUT.server "$PYLOS" run redis-server
wait_for_server 30 127.0.0.1 "$PORT"
test "$(cli SET greeting "$VALUE")" = OK
test "$(cli GET greeting)" = "$VALUE"
test "$(cli INCRBY counter 41)" = 41 && test "$(cli INCR counter)" = 42
echo "[ Success 1/5 ] SET, GET, INCR"

redis-benchmark -h 127.0.0.1 -p "$PORT" -q -n 20000 -t set,get --csv > OUTPUT.benchmark
awk -F'"' '$2 == "SET" || $2 == "GET" { if ($4 + 0 > 0) ok++ } END { exit ok != 2 }' \
    OUTPUT.benchmark
echo "[ Success 2/5 ] redis-benchmark SET and GET: $(cut -d, -f1,2 OUTPUT.benchmark | tail -2 | tr '\n' ' ')"

# BGSAVE forks a child that writes the snapshot while the parent keeps serving.
# Done: N snapshots written and the child reaped by the parent.
saved() {
    cli INFO persistence | tr -d '\r' > OUTPUT.persistence
    grep -qx "rdb_saves:$1" OUTPUT.persistence &&
        grep -qx "rdb_bgsave_in_progress:0" OUTPUT.persistence
}
saved 0
cli BGSAVE > /dev/null
for _ in $(seq 100); do
    saved 1 && break
    sleep 0.1
done
saved 1 && grep -qx "rdb_last_bgsave_status:ok" OUTPUT.persistence && test -s data/dump.rdb
echo "[ Success 3/5 ] BGSAVE in a forked child"

stop_server TERM
cli PING > /dev/null 2>&1 && { echo "redis still answers after SIGTERM" >&2; exit 1; }
start_server OUTPUT.server2 "$PYLOS" run redis-server
wait_for_server 30 127.0.0.1 "$PORT"
test "$(cli GET greeting)" = "$VALUE" && test "$(cli GET counter)" = 42
stop_server TERM
echo "[ Success 4/5 ] restarted from the snapshot"

if [ "$ENCRYPTED" = 1 ]; then
    if grep -q "$VALUE" data/dump.rdb || grep -q REDIS data/dump.rdb; then
        echo "data/dump.rdb holds plain text" >&2
        exit 1
    fi
    # ... and it is a Gramine protected file that the key opens (as gramine-sgx-pf-crypt).
    printf "$(echo "$ENCRYPTION_KEY" | sed 's/../\\x&/g')" > OUTPUT.key
    "$PYLOS" pf decrypt -w OUTPUT.key -i data/dump.rdb -o OUTPUT.dump.rdb > /dev/null
    head -c 5 OUTPUT.dump.rdb | grep -q REDIS && grep -q "$VALUE" OUTPUT.dump.rdb
    echo "[ Success 5/5 ] the snapshot on the host is encrypted (and decrypts with the key)"
else
    grep -q "$VALUE" data/dump.rdb
    echo "[ Success 5/5 ] the snapshot on the host holds the data in plain text (ENCRYPTED=0)"
fi
