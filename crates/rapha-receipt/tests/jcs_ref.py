#!/usr/bin/env python3
"""Independent RFC 8785 canonicalization with the `rfc8785` package (PyPI, Trail of Bits).

Reads a JSON list on stdin; prints a JSON list of the hex of each item's canonical bytes.
Python's json module parses numbers into exact doubles, as RFC 8785 requires.
"""
import json
import sys

import rfc8785

json.dump([rfc8785.dumps(v).hex() for v in json.load(sys.stdin)], sys.stdout)
