#!/usr/bin/env bash
# Loop N times over small coreutils (fork + execve each time), as Gramine's bash example does.
set -e
times=${1:-1}
for ((i = 1; i <= times; i++)); do
    echo "hello $i"
    echo "createdfile" > testdir/file_$i
    cp testdir/file_$i testdir/copy_$i
    cat testdir/copy_$i
    echo "somefile" > testdir/some_$i
    ls testdir | grep -q "some_$i" && cat testdir/some_$i
    rm testdir/file_$i testdir/copy_$i testdir/some_$i
    echo "current date: $(date +%Y)"
done
