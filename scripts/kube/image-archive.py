#!/usr/bin/env python3
"""Writes a one-layer container image as a docker-archive tarball from a directory on disk,
for `ctr -n k8s.io images import` (the test cluster has no registry and no image builder).

    image-archive.py --tag localhost/lustrekit/busybox:1.35 --rootfs DIR --out img.tar \
        [--entrypoint /bin/sh] [--cmd ARG]... [--env K=V]... [--workdir /]

The layer is reproducible: entries sorted, owned by 0:0, mtime 0, so the same files give the
same image ID and a re-import is a no-op.
"""

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile


def layer_bytes(rootfs: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = []
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                entries.append(os.path.join(dirpath, name))
        for path in sorted(entries):
            arcname = os.path.relpath(path, rootfs)
            info = tar.gettarinfo(path, arcname)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isfile():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tag", required=True)
    p.add_argument("--rootfs", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--entrypoint", action="append", default=[])
    p.add_argument("--cmd", action="append", default=[])
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--workdir", default="/")
    a = p.parse_args()
    if not os.path.isdir(a.rootfs):
        print(f"image-archive: {a.rootfs} is not a directory", file=sys.stderr)
        return 1

    layer = layer_bytes(a.rootfs)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + a.env
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": env,
            "Entrypoint": a.entrypoint or None,
            "Cmd": a.cmd or None,
            "WorkingDir": a.workdir,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/kube/image-archive.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.split(":", 1)[1] + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [a.tag], "Layers": [layer_name]}]

    tmp = a.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as out:
        for name, data in (
            (config_name, config_bytes),
            (layer_name, layer),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            if "/" in name:
                d = tarfile.TarInfo(name.split("/", 1)[0])
                d.type = tarfile.DIRTYPE
                d.mode = 0o755
                out.addfile(d)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            out.addfile(info, io.BytesIO(data))
    os.replace(tmp, a.out)
    print(config_name.removesuffix(".json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
