"""The Manila shim against the real lustrekit binary on a local-backend directory."""

import os
import pathlib
import subprocess
import uuid

import pytest

from lustrekit_manila.client import Conflict, InvalidArgument, LustrekitClient
from lustrekit_manila.driver import LustrekitShareDriver

REPO = pathlib.Path(__file__).resolve().parents[3]
BINARY = os.environ.get("LUSTREKIT_BIN", str(REPO / "target/debug/lustrekit"))


@pytest.fixture()
def driver(tmp_path):
    if not os.path.exists(BINARY):
        subprocess.run(["cargo", "build", "-q", "-p", "lustrekit"], cwd=REPO, check=True)
    config = tmp_path / "lustrekit.toml"
    config.write_text(
        'backend = "local"\nfsname = "scratch"\nproject_ids = "100-199"\n'
        'export_nids = ["10.0.0.1@tcp"]\n'
        f'[local]\nroot = "{tmp_path / "root"}"\n'
    )
    return LustrekitShareDriver(LustrekitClient(BINARY, str(config)))


def share(size=1):
    return {"id": str(uuid.uuid4()), "size": size}


def rule(to, level="rw", kind="ip"):
    return {"access_id": str(uuid.uuid4()), "access_to": to, "access_level": level, "access_type": kind}


def test_create_extend_access_ensure_delete(driver):
    s = share()
    locations = driver.create_share(None, s)
    assert locations[0]["path"] == f"10.0.0.1@tcp:/scratch/shares/share-{s['id']}"
    assert driver.create_share(None, s) == locations  # Manila retries: idempotent
    driver.extend_share(s, 2)
    assert driver.client.show(f"share-{s['id']}")["share"]["size_bytes"] == 2 << 30
    good, bad_type = rule("10.0.0.0/24", "ro"), rule("alice", kind="user")
    updates = driver.update_access(None, s, [], [good, bad_type], [])
    assert updates == {bad_type["access_id"]: {"state": "error"}}
    assert driver.client.access_list(f"share-{s['id']}")[0]["level"] == "ro"
    # Recovery mode drops rules Manila no longer has.
    driver.update_access(None, s, [], [], [])
    assert driver.client.access_list(f"share-{s['id']}") == []
    status = driver.ensure_shares(None, [s, share()])
    assert status[s["id"]]["status"] == "available"
    assert sum(1 for v in status.values() if v["status"] == "error") == 1
    stats = driver.get_share_stats()
    assert stats["storage_protocol"] == "LUSTRE" and stats["provisioned_capacity_gb"] == 2
    driver.delete_share(None, s)
    driver.delete_share(None, s)  # deleting twice is fine


def test_errors_come_back_typed(driver):
    s = share()
    driver.create_share(None, s)
    other = share()
    driver.create_share(None, other)
    driver.update_access(None, s, [], [rule("10.9.0.0/16")], [])
    clash = rule("10.9.1.1")
    assert driver.update_access(None, other, [], [clash], []) == {clash["access_id"]: {"state": "error"}}
    with pytest.raises(InvalidArgument):
        driver.client.allow(f"share-{s['id']}", "10.0.0.300", "rw")
    with pytest.raises(Conflict):
        driver.client.create(f"share-{s['id']}", 5)
