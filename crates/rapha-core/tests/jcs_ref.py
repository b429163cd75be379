#!/usr/bin/env python3
"""Independent RFC 8785 canonicalization with the `rfc8785` package (PyPI, Trail of Bits).

Reads a JSON list on stdin. For each item prints {"hex": canonical bytes in hex} or
{"error": the package's error class} when it refuses the value (an integer outside
+-(2^53-1), say). Python's json module parses numbers into exact doubles and integers into
ints, as RFC 8785 requires. With --sha256, "hex" is the SHA-256 of the canonical bytes.
"""
import hashlib
import json
import sys

import rfc8785

digest = "--sha256" in sys.argv[1:]
out = []
for v in json.load(sys.stdin):
    try:
        b = rfc8785.dumps(v)
        out.append({"hex": hashlib.sha256(b).hexdigest() if digest else b.hex()})
    except rfc8785.CanonicalizationError as e:
        out.append({"error": type(e).__name__})
json.dump(out, sys.stdout)
