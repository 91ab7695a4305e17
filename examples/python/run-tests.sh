#!/usr/bin/env bash
# Gramine's python example checks, in the enclave. Tests 3 and 4 need numpy/scipy for the
# entrypoint interpreter; without them they are reported as skipped, not passed.
set -u
PYLOS=${PYLOS:-pylos}
RUN="$PYLOS run ./python"
PYTHON=${PYTHON:-python3}
failed=0

$RUN scripts/helloworld.py > OUTPUT 2>/dev/null
grep -q "Hello World" OUTPUT && echo "[ Success 1/4 ]" || { echo "[ Failure 1/4 ]"; failed=1; }

$RUN scripts/dummy-web-server.py 8005 > SERVER_OUTPUT 2>&1 &
server=$!
for _ in $(seq 300); do
    (exec 3<>/dev/tcp/127.0.0.1/8005) 2>/dev/null && break
    sleep 0.1
done
$RUN scripts/test-http.py 127.0.0.1 8005 > OUTPUT1 2>/dev/null
"$PYTHON" -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:8005/").read().decode())' > OUTPUT2
kill "$server"; wait "$server" 2>/dev/null
if [ -s OUTPUT2 ] && grep -qxFf OUTPUT2 OUTPUT1; then echo "[ Success 2/4 ]"; else echo "[ Failure 2/4 ]"; failed=1; fi

for n in 3 4; do
    script=$([ $n = 3 ] && echo test-numpy.py || echo test-scipy.py)
    marker=$([ $n = 3 ] && echo "dot: " || echo "cholesky: ")
    module=$([ $n = 3 ] && echo numpy || echo scipy.linalg)
    if ! "$ENTRYPOINT" -c "import $module" 2>/dev/null; then
        echo "[ Skipped $n/4: $module is not installed for $ENTRYPOINT ]"
        continue
    fi
    $RUN scripts/$script > OUTPUT 2>/dev/null
    grep -q "$marker" OUTPUT && echo "[ Success $n/4 ]" || { echo "[ Failure $n/4 ]"; failed=1; }
done
rm -f OUTPUT OUTPUT1 OUTPUT2 SERVER_OUTPUT
exit $failed
