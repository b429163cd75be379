"""Driver of bench/archive.sh: starts Orthanc (rapha-testkit serve orthanc), loads the four
parts of the corpus, runs the node's cohort build and a feed pass against it under
/usr/bin/time on one core (the feed pass with RAPHA_BENCH_IN_FLIGHT retrievals in flight,
default 8, one pass per stored syntax), decodes the same files from local disk, and prints one JSON line."""
import glob
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.parse

bench_bin, testkit, n, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
QUERIES = [f"StudyDate=19500101-20491231&ModalitiesInStudy={m}&limit=1000000"
           for m in ("CT", "MR", "CR", "DX")]


def timed(args):
    p = subprocess.run(["/usr/bin/time", "-f", "RSSKB %M %U %S", "taskset", "-c", "0", *args],
                       capture_output=True, text=True, check=True)
    res = json.loads(p.stdout.strip().splitlines()[-1])
    rss, user, system = [l for l in p.stderr.splitlines() if l.startswith("RSSKB")][-1].split()[1:]
    res["rss_kb"] = int(rss)
    # The node's own CPU seconds (the rest of the wall time is the PACS and the network).
    res["cpu_secs"] = round(float(user) + float(system), 2)
    return res


srv = subprocess.Popen([testkit, "serve", "orthanc"], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, text=True)
try:
    info = json.loads(srv.stdout.readline())
    u = urllib.parse.urlparse(info["url"])
    conn = http.client.HTTPConnection(u.hostname, u.port)
    files = sorted(glob.glob(f"{work}/part*/dicom/**/*.dcm", recursive=True))
    t = time.monotonic()
    for f in files:
        with open(f, "rb") as fh:
            conn.request("POST", "/instances", body=fh.read(),
                         headers={"Content-Type": "application/dicom"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200, (f, r.status)
    load_secs = time.monotonic() - t
    # Each instance's stored syntax, from the generator's manifests, for the per-syntax passes.
    with open(f"{work}/syntaxes.txt", "w") as out:
        for m in sorted(glob.glob(f"{work}/part*/manifest.json")):
            for s in json.load(open(m))["studies"]:
                for i in s["instances"]:
                    out.write(f"{i['sop_instance_uid']} {i['transfer_syntax']}\n")
    os.environ["RAPHA_BENCH_SYNTAXES"] = f"{work}/syntaxes.txt"
    cohort = timed([bench_bin, "cohort", info["dicomweb"], *QUERIES])
    feed = timed([bench_bin, "feed", info["dicomweb"], *QUERIES])
    syntaxes = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80",
                "1.2.840.10008.1.2.4.201"]
    local = {ts: timed([bench_bin, "decode", f"{work}/part{i}/dicom"])
             for i, ts in enumerate(syntaxes)}
    ratios = {}
    for ts, r in local.items():
        f = feed["by_ts"].get(ts)
        if f and r["secs"] > 0 and f["secs"] > 0:
            ratios[ts] = round((f["decoded_bytes"] / f["secs"]) / (r["decoded_bytes"] / r["secs"]), 2)
    print(json.dumps({"studies": n, "files": len(files), "load_secs": round(load_secs, 1),
                      "cohort": cohort, "feed": feed, "local_decode": local,
                      "feed_vs_local_decode": ratios}))
finally:
    srv.stdin.close()
    srv.wait(timeout=120)
