"""Fetch http://HOST:PORT/ and print the body (the example's test 2)."""

import sys
import urllib.request

host, port = sys.argv[1], sys.argv[2]
with urllib.request.urlopen(f"http://{host}:{port}/", timeout=30) as response:
    print(response.read().decode())
