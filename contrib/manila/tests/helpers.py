"""What the driver's tests run on: the real lustrekit binary, a btrfs loop image made and
removed per test, Manila's own configuration and private-data storage, and (for the `lustre`
backend) the `lfs`/`lctl`/`ssh` stand-ins of standins/lustre_standin.py.

Tests that need root, btrfs-progs or the binary skip with the reason printed, except under
`CI=true`, where such a skip is a failure.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import uuid

from oslo_config import cfg

from manila import context
from manila.share import configuration
from manila.share import driver as manila_driver
from manila.share import drivers_private_data
from manila import test

from lustrekit_manila import driver as lk_driver
from lustrekit_manila import options

REPO = pathlib.Path(__file__).resolve().parents[3]
STANDIN = pathlib.Path(__file__).resolve().parent / "standins" / "lustre_standin.py"
FS_NAME = "testfs"
PREFIX = "manila_shares"
EXPORT_IP = "10.0.0.1"
GIB = 1 << 30
CONF = cfg.CONF


def lustrekit_binary():
    """The lustrekit binary ($LUSTREKIT_BIN, else target/debug/lustrekit, built if missing);
    None with the reason when there is none."""
    explicit = os.environ.get("LUSTREKIT_BIN")
    if explicit:
        return (explicit, None) if os.access(explicit, os.X_OK) else (None, f"LUSTREKIT_BIN={explicit} is not executable")
    binary = REPO / "target" / "debug" / "lustrekit"
    if not binary.exists():
        build = subprocess.run(["cargo", "build", "-q", "-p", "lustrekit"], cwd=REPO,
                               capture_output=True, text=True, check=False, timeout=3600)
        if build.returncode != 0:
            return None, f"cargo build -p lustrekit failed: {build.stderr.strip()[-400:]}"
    return str(binary), None


def skip_or_fail(testcase, reason):
    """Skips with `reason` printed; under CI=true the skip is a failure."""
    print(f"SKIP: {reason}", file=sys.stderr)
    if os.environ.get("CI") == "true":
        testcase.fail(f"{reason} (CI=true: this test must run, not skip)")
    testcase.skipTest(reason)


def run(*argv, **kwargs):
    return subprocess.run(list(argv), capture_output=True, text=True, check=True, timeout=120, **kwargs)


class BtrfsImage:
    """A btrfs filesystem on a sparse loop image, mounted under a temporary directory."""

    def __init__(self, size_gib=8):
        self.dir = tempfile.mkdtemp(prefix="lk-manila-")
        self.image = os.path.join(self.dir, "fs.img")
        self.mnt = os.path.join(self.dir, "mnt")
        self.mounted = False
        os.mkdir(self.mnt)
        with open(self.image, "wb") as f:
            f.truncate(size_gib * GIB)
        try:
            run("mkfs.btrfs", "-q", self.image)
            run("mount", "-o", "loop", self.image, self.mnt)
            self.mounted = True
        except BaseException:
            self.close()
            raise

    def close(self):
        if self.mounted:
            subprocess.run(["umount", self.mnt], check=False, timeout=120)
            self.mounted = False
        shutil.rmtree(self.dir, ignore_errors=True)


class Standins:
    """`lfs`, `lctl` and `ssh` wrappers around the stand-in, sharing one state directory."""

    def __init__(self, root):
        self.dir = os.path.join(root, "standins")
        self.state_dir = os.path.join(self.dir, "state")
        os.makedirs(self.state_dir)
        self.paths = {}
        for tool in ("lfs", "lctl", "ssh"):
            path = os.path.join(self.dir, tool)
            with open(path, "w") as f:
                f.write(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" {tool} '
                        f'"{self.state_dir}" "$@"\n')
            os.chmod(path, 0o755)
            self.paths[tool] = path

    def state(self):
        try:
            with open(os.path.join(self.state_dir, "state.json")) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def edit(self, change):
        """Changes the stand-in state in place: `change(state)`."""
        sys.path.insert(0, str(STANDIN.parent))
        try:
            import lustre_standin
        finally:
            sys.path.pop(0)
        state = lustre_standin.load(self.state_dir)
        change(state)
        lustre_standin.save(self.state_dir, state)

    def calls(self, tool=None):
        """Every logged call as (tool, argv-without-program), in order."""
        try:
            with open(os.path.join(self.state_dir, "calls.jsonl")) as f:
                entries = [json.loads(line) for line in f]
        except FileNotFoundError:
            return []
        return [(e["tool"], e["argv"]) for e in entries if tool is None or e["tool"] == tool]

    def clear_calls(self):
        open(os.path.join(self.state_dir, "calls.jsonl"), "w").close()


class TestCase(test.TestCase):
    """manila.test.TestCase, run by pytest."""

    def tearDown(self):
        # manila.test.TestCase drops every public attribute after a test, including the test
        # method pytest put on the instance and removes itself afterwards.
        keep = {k: v for k, v in self.__dict__.items() if k.startswith("test")}
        super().tearDown()
        self.__dict__.update(keep)


class DriverTestCase(TestCase):
    """A driver on a fresh btrfs loop mount, with the real binary underneath."""

    backend = "local"
    extra_options = {}

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            skip_or_fail(self, "needs root (loop devices, mount, btrfs quotas)")
        if shutil.which("mkfs.btrfs") is None:
            skip_or_fail(self, "mkfs.btrfs not installed (make test installs btrfs-progs)")
        binary, why = lustrekit_binary()
        if binary is None:
            skip_or_fail(self, why)
        self.binary = binary
        try:
            self.fs = BtrfsImage()
        except subprocess.CalledProcessError as exc:
            skip_or_fail(self, f"cannot make a btrfs loop mount here: {exc.stderr.strip()}")
        self.addCleanup(self.fs.close)
        self.mnt = self.fs.mnt
        self.standins = Standins(self.fs.dir) if self.backend == "lustre" else None
        self.ctx = context.get_admin_context()
        self.driver = self.make_driver()
        self.driver.do_setup(self.ctx)
        self.driver.check_for_setup_error()

    def driver_options(self):
        values = {
            "lustre_share_export_ip": EXPORT_IP,
            "lustre_mount_point": self.mnt,
            "lustre_fs_name": FS_NAME,
            "lustre_share_path_prefix": PREFIX,
            "lustre_project_id_start": 10000,
            "lustre_project_id_end": 10099,
            "lustrekit_backend": self.backend,
            "lustrekit_binary": self.binary,
            "lustrekit_config_path": os.path.join(self.fs.dir, "lustrekit.toml"),
        }
        if self.standins:
            values.update({
                "lustrekit_lfs_path": self.standins.paths["lfs"],
                "lustrekit_lctl_path": self.standins.paths["lctl"],
                "lustrekit_ssh_path": self.standins.paths["ssh"],
            })
        values.update(self.extra_options)
        return values

    def make_driver(self, **overrides):
        group = "lustrekit_" + uuid.uuid4().hex[:8]
        conf = configuration.Configuration(manila_driver.share_opts, config_group=group)
        # Runs after manila.test.TestCase.tearDown has reset CONF: the next test's CONF() would
        # otherwise find this group's required options unset.
        self.addCleanup(CONF.unregister_opts, manila_driver.share_opts + options.ALL_OPTS
                        + drivers_private_data.private_data_opts, group=group)
        conf.append_config_values(options.ALL_OPTS)
        self.override_config("share_backend_name", "lustrekit", group=group)
        self.override_config("driver_handles_share_servers", False, group=group)
        for name, value in {**self.driver_options(), **overrides}.items():
            self.override_config(name, value, group=group)
        storage = drivers_private_data.DriverPrivateData(
            context=self.ctx, backend_host="host@lustrekit", config_group=group)
        return lk_driver.LustrekitShareDriver(configuration=conf, private_storage=storage)

    # ---- Manila-shaped inputs ----

    @staticmethod
    def share(size=1, proto="LUSTRE", share_id=None):
        sid = share_id or str(uuid.uuid4())
        return {"id": sid, "share_id": sid, "size": size, "share_proto": proto}

    @staticmethod
    def rule(to, level="rw", kind="ip"):
        return {"id": str(uuid.uuid4()), "access_id": str(uuid.uuid4()), "access_type": kind,
                "access_to": to, "access_level": level}

    def share_dir(self, share_or_name):
        name = share_or_name["id"] if isinstance(share_or_name, dict) else share_or_name
        return os.path.join(self.mnt, PREFIX, name)

    def export(self, name):
        return f"{EXPORT_IP}@tcp:/{FS_NAME}/{PREFIX}/{name}"

    def cli(self, *args, check=True):
        """`lustrekit share ARGS --json` on the driver's own configuration (the operator's
        view, and how a test reaches behind Manila's back)."""
        proc = subprocess.run([self.binary, "--config", self.driver.config_path, "--json", "share",
                               *args], capture_output=True, text=True, check=False, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"lustrekit share {' '.join(args)}: {proc.stdout} {proc.stderr}")
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def local_nodemaps(self):
        """The local backend's nodemap state file, as lustrekit keeps it."""
        path = os.path.join(self.mnt, ".lustrekit", "nodemaps.json")
        try:
            with open(path) as f:
                state = json.load(f)
        except FileNotFoundError:
            return {}
        return {m["name"]: m for m in state["nodemaps"] if m["name"] != "default"}

    def qgroup_limit(self, share):
        """The btrfs qgroup max_referenced limit of the share's subvolume (None: no limit),
        read from the filesystem with btrfs-progs."""
        path = self.share_dir(share)
        subvol_id = run("btrfs", "inspect-internal", "rootid", path).stdout.strip()
        table = run("btrfs", "qgroup", "show", "-re", "--raw", "--sync", self.mnt).stdout
        for line in table.splitlines():
            cols = line.split()
            if cols and cols[0] == f"0/{subvol_id}":
                return None if cols[3] == "none" else int(cols[3])
        raise AssertionError(f"no qgroup 0/{subvol_id} in\n{table}")
