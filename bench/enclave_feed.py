#!/usr/bin/env python3
"""Helper of bench/enclave.sh (run by the rapha-trainer-sdk feed_bench example): reads every
record in the given order through the Python SDK and prints decoded MB/s and the CPU seconds
the reading took in this process (interpreter start-up and imports not counted).

usage: enclave_feed.py SOCKET records|fetch INDEX,INDEX,...
"""

import sys
import time

from rapha_trainer import Client


def main():
    sock, mode, order = sys.argv[1], sys.argv[2], [int(i) for i in sys.argv[3].split(",")]
    client = Client.connect("feed-bench", sock)
    t = time.perf_counter()
    cpu = time.process_time()
    total = 0
    if mode == "records":
        for rec in client.records(order):
            total += rec.pixels.nbytes
    else:
        for i in order:
            total += client.fetch(i).pixels.nbytes
    rate = total / (time.perf_counter() - t) / 1e6
    cpu = time.process_time() - cpu
    client.done()
    print(f"{rate:.3f} {cpu:.6f}")


if __name__ == "__main__":
    main()
