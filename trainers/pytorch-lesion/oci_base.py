#!/usr/bin/env python3
"""Wraps a root filesystem tar (as mmdebstrap writes it) into a one-layer OCI image and writes
it as an oci-archive tar, byte for byte the same for the same input: every timestamp is
SOURCE_DATE_EPOCH, owners are root, the layer is stored uncompressed.

    oci_base.py ROOTFS.tar OUT.oci.tar
"""

import hashlib
import io
import json
import os
import sys
import tarfile

CHUNK = 1 << 20


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                return h.hexdigest()
            h.update(b)


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def main():
    rootfs, out = sys.argv[1], sys.argv[2]
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    created = __import__("datetime").datetime.fromtimestamp(epoch, __import__("datetime").timezone.utc)
    created = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    layer = sha256_file(rootfs)
    layer_size = os.path.getsize(rootfs)
    config = canonical({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer}"]},
        "history": [{"created": created, "created_by": "mmdebstrap (trainers/pytorch-lesion/build.sh)"}],
    })
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": f"sha256:{layer}", "size": layer_size}],
    })
    index = canonical({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(),
                       "size": len(manifest)}],
    })

    def info(name, size, kind=tarfile.REGTYPE):
        ti = tarfile.TarInfo(name)
        ti.size, ti.type, ti.mtime = size, kind, epoch
        ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    tmp = out + ".partial"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as t:
        for d in ("blobs", "blobs/sha256"):
            t.addfile(info(d, 0, tarfile.DIRTYPE))
        for name, data in (("oci-layout", canonical({"imageLayoutVersion": "1.0.0"})),
                           ("index.json", index),
                           (f"blobs/sha256/{hashlib.sha256(config).hexdigest()}", config),
                           (f"blobs/sha256/{hashlib.sha256(manifest).hexdigest()}", manifest)):
            t.addfile(info(name, len(data)), io.BytesIO(data))
        with open(rootfs, "rb") as f:
            t.addfile(info(f"blobs/sha256/{layer}", layer_size), f)
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
