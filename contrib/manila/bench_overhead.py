#!/usr/bin/env python3
"""The cost of the Python layer: create_share + update_access (one rule) + delete_share
through the driver, against the same three steps as `lustrekit share` commands run directly,
on the local backend over a btrfs loop image (as root).

Usage: <manila venv python> contrib/manila/bench_overhead.py [ROUNDS]
Prints per-round medians and the ratio driver / direct.
"""

import os
import statistics
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "tests"))

from oslo_config import cfg  # noqa: E402

from manila.share import configuration  # noqa: E402
from manila.share import driver as manila_driver  # noqa: E402

import helpers  # noqa: E402
from lustrekit_manila import driver as lk_driver  # noqa: E402
from lustrekit_manila import options  # noqa: E402


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    if os.geteuid() != 0:
        sys.exit("bench_overhead: needs root (btrfs loop image)")
    binary, why = helpers.lustrekit_binary()
    if binary is None:
        sys.exit(f"bench_overhead: {why}")
    cfg.CONF([], default_config_files=[])
    fs = helpers.BtrfsImage()
    try:
        group = "lustrekit_bench"
        conf = configuration.Configuration(manila_driver.share_opts, config_group=group)
        conf.append_config_values(options.ALL_OPTS)
        values = {
            "driver_handles_share_servers": False,
            "lustre_share_export_ip": helpers.EXPORT_IP,
            "lustre_mount_point": fs.mnt,
            "lustre_fs_name": helpers.FS_NAME,
            "lustrekit_backend": "local",
            "lustrekit_binary": binary,
            "lustrekit_config_path": os.path.join(fs.dir, "lustrekit.toml"),
        }
        for name, value in values.items():
            cfg.CONF.set_override(name, value, group=group)
        drv = lk_driver.LustrekitShareDriver(configuration=conf)
        drv.do_setup(None)

        def through_driver():
            share = {"id": str(uuid.uuid4()), "size": 1, "share_proto": "LUSTRE"}
            rule = {"id": "r", "access_id": str(uuid.uuid4()), "access_type": "ip",
                    "access_to": "10.1.0.0/24", "access_level": "rw"}
            drv.create_share(None, share)
            drv.update_access(None, share, [rule], [rule], [], [])
            drv.delete_share(None, share)

        def direct():
            name = str(uuid.uuid4())
            base = [binary, "--config", drv.config_path, "--json", "share"]
            for args in (["create", name, "--size", "1GiB", "--label", f"manila.share_id={name}"],
                         ["access", "allow", name, "--to", "10.1.0.0/24", "--level", "rw"],
                         ["delete", name]):
                subprocess.run(base + args, check=True, capture_output=True)

        timings = {"driver": [], "direct": []}
        through_driver()  # warm both paths once
        direct()
        for _ in range(rounds):  # interleaved, so load changes hit both alike
            for label, fn in (("driver", through_driver), ("direct", direct)):
                start = time.perf_counter()
                fn()
                timings[label].append(time.perf_counter() - start)
        drv_ms = statistics.median(timings["driver"]) * 1000
        dir_ms = statistics.median(timings["direct"]) * 1000
        print(f"rounds: {rounds}")
        print(f"driver (create_share + update_access 1 rule + delete_share): {drv_ms:.1f} ms median")
        print(f"direct (lustrekit share create + access allow + delete):     {dir_ms:.1f} ms median")
        print(f"ratio driver/direct: {drv_ms / dir_ms:.2f}")
    finally:
        fs.close()


if __name__ == "__main__":
    main()
