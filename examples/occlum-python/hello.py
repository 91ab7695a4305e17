"""Runs in the enclave: the standard library, a C extension, and the persistent /root."""

import hashlib
import json
import platform
import sqlite3
import sys

print(f"Hello from Python {platform.python_version_tuple()[0]} in a simulated SGX enclave")
print("argv:", sys.argv[1:])
print("sha256(pylos):", hashlib.sha256(b"pylos").hexdigest())
db = sqlite3.connect(":memory:")
db.execute("create table t (x)")
db.executemany("insert into t values (?)", [(i,) for i in range(10)])
print("sqlite sum:", db.execute("select sum(x) from t").fetchone()[0])
with open("/root/runs.json", "a+") as f:
    f.seek(0)
    runs = [json.loads(line) for line in f if line.strip()]
    f.write(json.dumps({"run": len(runs) + 1}) + "\n")
print("runs so far:", len(runs) + 1)
