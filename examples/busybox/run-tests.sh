#!/usr/bin/env bash
# Busybox applets in the enclave, each compared with the same applet run natively.
set -u
PYLOS=${PYLOS:-pylos}
failed=0
n=0
total=5

check() {  # check NAME EXPECTED ACTUAL
    n=$((n + 1))
    if [ "$2" = "$3" ]; then echo "[ Success $n/$total ]"; else
        echo "[ Failure $n/$total: $1 ]"; echo "  expected: $2"; echo "  got:      $3"; failed=1; fi
}

check "echo" "hello from busybox" "$($PYLOS run ./busybox echo hello from busybox 2>/dev/null)"
check "sha256sum of itself" "$(./busybox sha256sum busybox | cut -d' ' -f1)" \
      "$($PYLOS run ./busybox sha256sum /busybox 2>/dev/null | cut -d' ' -f1)"
check "sh with its exit status" "in sh 7" \
      "$($PYLOS run ./busybox sh -c 'echo -n in sh; exit 7' 2>/dev/null; echo " $?")"
# sys.enable_extra_runtime_domain_names_conf: the host's hostname, as Gramine sets it
check "hostname" "$(./busybox hostname)" "$($PYLOS run ./busybox hostname 2>/dev/null)"
# the view holds only the manifest's mounts (and fs.root, the current directory): no host
# /etc/passwd; the mounted /etc/hosts is neither trusted nor allowed, so not readable (the
# verified view refuses its first read, Gramine its open: docs/runtime.md)
check "files outside the manifest" "cat: can't open '/etc/passwd': No such file or directory
cat: read error: Permission denied" \
      "$($PYLOS run ./busybox cat /etc/passwd /etc/hosts 2>&1 >/dev/null | grep '^cat:')"
rm -f OUTPUT
exit $failed
