# Shared by the server examples' check.sh (source it): start a server in the background,
# wait for its port, stop it cleanly, and never leave it running when a check fails.
# Gramine's CI-Examples have the same `wait_for_server` in common_tools.

SERVER_PID=
SERVER_LOG=

# start_server LOG COMMAND [ARGS...]: run COMMAND in the background, output to LOG.
start_server() {
    SERVER_LOG=$1
    shift
    "$@" > "$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    trap cleanup_server EXIT
}

# wait_for_server TIMEOUT HOST PORT: until a TCP connect succeeds; fails early if the server
# has already exited.
wait_for_server() {
    local deadline=$((SECONDS + $1))
    while ! (exec 3<>"/dev/tcp/$2/$3") 2>/dev/null; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "the server exited before listening on $2:$3; its output:" >&2
            cat "$SERVER_LOG" >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "the server did not listen on $2:$3 within $1 s" >&2
            return 1
        fi
        sleep 0.1
    done
}

# stop_server [SIGNAL]: signal the server (TERM by default), wait up to 20 s, succeed only
# when it exited with status 0.
stop_server() {
    local pid=$SERVER_PID status=0
    SERVER_PID=
    kill "-${1:-TERM}" "$pid" 2>/dev/null || true
    for _ in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "the server did not stop within 20 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" || status=$?
    if [ "$status" != 0 ]; then
        echo "the server exited with status $status; its output:" >&2
        cat "$SERVER_LOG" >&2
        return 1
    fi
}

cleanup_server() {
    if [ -n "$SERVER_PID" ]; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}
