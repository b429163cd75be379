#!/usr/bin/env python3
"""Independent RFC 9162 section 2.1 reference, written from the RFC's recursive definitions.

Prints JSON: for every tree size n in 1..=MAX, the root, the inclusion path of every leaf and
the consistency proof from every smaller size. The Rust test compares its implementation
against this output. Leaf i's data is the ASCII bytes "leaf-<i>".
"""
import hashlib
import json
import sys

MAX = int(sys.argv[1]) if len(sys.argv) > 1 else 64


def h(b):
    return hashlib.sha256(b).digest()


def k_of(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d):
    if len(d) == 0:
        return h(b"")
    if len(d) == 1:
        return h(b"\x00" + d[0])
    k = k_of(len(d))
    return h(b"\x01" + mth(d[:k]) + mth(d[k:]))


def path(m, d):
    if len(d) <= 1:
        return []
    k = k_of(len(d))
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m, d, b):
    if m == len(d):
        return [] if b else [mth(d)]
    k = k_of(len(d))
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


out = []
for n in range(1, MAX + 1):
    d = [("leaf-%d" % i).encode() for i in range(n)]
    out.append({
        "size": n,
        "root": mth(d).hex(),
        "paths": [[x.hex() for x in path(i, d)] for i in range(n)],
        "consistency": [[x.hex() for x in subproof(m, d, True)] for m in range(1, n)],
    })
json.dump(out, sys.stdout)
