"""The driver inside Manila's own test harness, with the real lustrekit binary underneath on
the `local` backend over a btrfs loop mount: shares are subvolumes whose quota the kernel
enforces, and access rules are nodemaps in lustrekit's state. Everything is checked on the
filesystem (btrfs-progs, the directory tree) and in that state, never through mocks.
"""

import errno
import json
import os
import stat
import subprocess

from manila.common import constants
from manila import exception

import helpers
from helpers import FS_NAME, GIB, PREFIX

ACTIVE = {"state": constants.ACCESS_STATE_ACTIVE}
ERROR = {"state": constants.ACCESS_STATE_ERROR}
SQUASH = 65534


def fallocate(path, size):
    """Allocates `size` bytes (counted by the quota at once, without writing them)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


class SetupTest(helpers.DriverTestCase):
    def test_options_become_the_lustrekit_config(self):
        text = open(self.driver.config_path).read()
        for line in ('backend = "local"', f'fsname = "{FS_NAME}"', f'share_prefix = "{PREFIX}"',
                     'project_ids = "10000-10099"', 'export_nids = ["10.0.0.1@tcp"]',
                     'nid_type = "tcp"', 'root_squash = true', f'root = "{self.mnt}"'):
            self.assertIn(line, text)
        self.assertEqual(0o640, stat.S_IMODE(os.stat(self.driver.config_path).st_mode))
        self.assertEqual(0, self.driver.get_network_allocations_number())
        self.assertFalse(self.driver.driver_handles_share_servers)
        # do_setup made the share prefix (lustrekit opened the service).
        self.assertTrue(os.path.isdir(os.path.join(self.mnt, PREFIX)))

    def test_bad_options_are_refused_before_anything_runs(self):
        for overrides in ({"lustre_project_id_start": 500, "lustre_project_id_end": 100},
                          {"lustre_project_id_start": 0},
                          {"lustrekit_share_mode": "999"},
                          {"lustre_mount_point": "relative/path"},
                          {"lustre_share_export_ip": "2001:db8::1"}):
            driver = self.make_driver(**overrides,
                                      lustrekit_config_path=os.path.join(self.fs.dir, "bad.toml"))
            self.assertRaises(exception.BadConfigurationException, driver.do_setup, self.ctx)
            self.assertFalse(os.path.exists(os.path.join(self.fs.dir, "bad.toml")), overrides)

    def test_a_range_overlapping_foreign_project_ids_refuses_creates(self):
        # A directory under the prefix that lustrekit did not make, already in the range. The
        # driver starts (it may be the upstream driver's share, which ensure_shares adopts),
        # but no share can be created that could take its ID.
        foreign = os.path.join(self.mnt, PREFIX, "legacy")
        os.mkdir(foreign)
        os.setxattr(foreign, "user.lustrekit.project", b"10005")
        driver = self.make_driver(lustrekit_config_path=os.path.join(self.fs.dir, "two.toml"))
        driver.do_setup(self.ctx)
        s = self.share()
        err = self.assertRaises(exception.ShareBackendException, driver.create_share, self.ctx, s)
        self.assertIn("10005", str(err))
        self.assertFalse(os.path.exists(self.share_dir(s)))
        self.assertEqual([], os.listdir(os.path.join(self.mnt, PREFIX, ".lustrekit", "projects")))

    def test_check_for_setup_error_needs_the_root(self):
        driver = self.make_driver(lustre_mount_point=os.path.join(self.fs.dir, "missing"))
        self.assertRaises(exception.ShareBackendException, driver.do_setup, self.ctx)


class ShareLifecycleTest(helpers.DriverTestCase):
    def test_create_makes_a_quota_limited_subvolume_with_the_upstream_export(self):
        s = self.share(size=1)
        locations = self.driver.create_share(self.ctx, s)
        # The upstream driver's export format: <ip>@<nid type>:/<fs>/<prefix>/<share id>.
        self.assertEqual([{"path": f"10.0.0.1@tcp:/{FS_NAME}/{PREFIX}/{s['id']}",
                           "is_admin_only": False, "metadata": {}}], locations)
        path = self.share_dir(s)
        st = os.stat(path)
        self.assertEqual(256, st.st_ino)  # a btrfs subvolume root
        self.assertEqual(0o777, stat.S_IMODE(st.st_mode))
        self.assertEqual(GIB, self.qgroup_limit(s))
        # The kernel enforces it.
        fallocate(os.path.join(path, "small"), 100 << 20)
        err = self.assertRaises(OSError, fallocate, os.path.join(path, "big"), GIB)
        self.assertEqual(errno.EDQUOT, err.errno)
        # Manila retries a create: the same share comes back.
        self.assertEqual(locations, self.driver.create_share(self.ctx, s))

    def test_bad_creates_change_nothing(self):
        before = sorted(os.listdir(os.path.join(self.mnt, PREFIX)))
        for share, exc in ((self.share(size=0), exception.InvalidShare),
                           (self.share(size=-1), exception.InvalidShare),
                           (self.share(size="1"), exception.InvalidShare),
                           (self.share(proto="NFS"), exception.InvalidShare),
                           (self.share(share_id="../escape"), exception.InvalidShare),
                           (self.share(share_id=".lustrekit"), exception.InvalidShare)):
            self.assertRaises(exc, self.driver.create_share, self.ctx, share)
        self.assertEqual(before, sorted(os.listdir(os.path.join(self.mnt, PREFIX))))
        self.assertEqual([], self.cli("list"))

    def test_extend_and_shrink_set_the_filesystem_quota(self):
        s = self.share(size=2)
        self.driver.create_share(self.ctx, s)
        self.driver.extend_share(s, 3)
        self.assertEqual(3 * GIB, self.qgroup_limit(s))
        # An extend below, or a shrink above, the current size is refused, unchanged.
        self.assertRaises(exception.InvalidShare, self.driver.extend_share, s, 2)
        self.assertRaises(exception.InvalidShare, self.driver.shrink_share, s, 4)
        self.assertRaises(exception.InvalidShare, self.driver.extend_share, s, 0)
        self.assertRaises(exception.InvalidShare, self.driver.shrink_share, s, 0)
        self.assertEqual(3 * GIB, self.qgroup_limit(s))
        self.driver.shrink_share(s, 1)
        self.assertEqual(GIB, self.qgroup_limit(s))

    def test_shrink_below_usage_is_possible_data_loss_and_changes_nothing(self):
        s = self.share(size=3)
        self.driver.create_share(self.ctx, s)
        fallocate(os.path.join(self.share_dir(s), "data"), GIB + (200 << 20))
        self.assertRaises(exception.ShareShrinkingPossibleDataLoss,
                          self.driver.shrink_share, s, 1)
        self.assertEqual(3 * GIB, self.qgroup_limit(s))
        self.assertEqual(3 * GIB, self.cli("show", s["id"])["share"]["size_bytes"])
        self.driver.shrink_share(s, 2)
        self.assertEqual(2 * GIB, self.qgroup_limit(s))

    def test_unknown_shares(self):
        ghost = self.share()
        self.assertRaises(exception.ShareResourceNotFound, self.driver.extend_share, ghost, 2)
        self.assertRaises(exception.ShareResourceNotFound, self.driver.shrink_share, ghost, 1)
        self.assertRaises(exception.ShareResourceNotFound, self.driver.update_access,
                          self.ctx, ghost, [self.rule("10.0.0.1")], [], [], [])
        # Deleting what does not exist (or never could) succeeds: Manila retries deletes.
        self.driver.delete_share(self.ctx, ghost)
        self.driver.delete_share(self.ctx, self.share(share_id="not-a-uuid"))

    def test_delete_removes_data_quota_and_nodemaps(self):
        s = self.share()
        self.driver.create_share(self.ctx, s)
        rule = self.rule("10.1.0.0/24")
        self.driver.update_access(self.ctx, s, [rule], [rule], [], [])
        self.assertEqual(["lk10000rw"], list(self.local_nodemaps()))
        self.driver.delete_share(self.ctx, s)
        self.assertFalse(os.path.exists(self.share_dir(s)))
        self.assertEqual({}, self.local_nodemaps())
        self.assertEqual([], self.cli("list"))
        self.driver.delete_share(self.ctx, s)  # twice is fine
        # The project ID is free again.
        t = self.share()
        self.driver.create_share(self.ctx, t)
        self.assertEqual(10000, self.cli("show", t["id"])["share"]["project_id"])

    def test_delete_to_trash_keeps_the_data_restorable(self):
        driver = self.make_driver(lustrekit_delete_to_trash=True)
        driver.do_setup(self.ctx)
        s = self.share()
        driver.create_share(self.ctx, s)
        with open(os.path.join(self.share_dir(s), "keep"), "w") as f:
            f.write("data")
        driver.delete_share(self.ctx, s)
        self.assertFalse(os.path.exists(self.share_dir(s)))
        self.assertEqual([s["id"]], [t["name"] for t in self.cli("trash", "list")])
        self.cli("restore", s["id"])
        self.assertEqual("data", open(os.path.join(self.share_dir(s), "keep")).read())


class AccessTest(helpers.DriverTestCase):
    def setUp(self):
        super().setUp()
        self.s = self.share()
        self.driver.create_share(self.ctx, self.s)
        self.fileset = f"/{PREFIX}/{self.s['id']}"

    def access(self, rules, add=(), delete=(), update=()):
        return self.driver.update_access(self.ctx, self.s, list(rules), list(add), list(delete),
                                         list(update))

    def test_rules_become_fileset_locked_squashing_nodemaps(self):
        rw, ro = self.rule("10.1.0.0/24", "rw"), self.rule("10.2.0.7", "ro")
        updates = self.access([rw, ro], add=[rw, ro])
        self.assertEqual({rw["access_id"]: ACTIVE, ro["access_id"]: ACTIVE}, updates)
        maps = self.local_nodemaps()
        self.assertEqual({"lk10000rw", "lk10000ro"}, set(maps))
        for m in maps.values():
            # Fileset: a client of this share mounts this share, never the filesystem root.
            self.assertEqual(self.fileset, m["fileset"])
            # deny_unknown: users without a mapping get nothing.
            self.assertTrue(m["deny_unknown"])
            self.assertEqual((SQUASH, SQUASH), (m["squash_uid"], m["squash_gid"]))
        # Read-write: root squashed (admin=0), other IDs kept (trusted=1).
        self.assertFalse(maps["lk10000rw"]["admin"])
        self.assertTrue(maps["lk10000rw"]["trusted"])
        self.assertEqual([{"start": "10.1.0.0@tcp", "end": "10.1.0.255@tcp"}],
                         maps["lk10000rw"]["ranges"])
        # Read-only: every user squashed, read-only mounts.
        self.assertFalse(maps["lk10000ro"]["admin"])
        self.assertFalse(maps["lk10000ro"]["trusted"])
        self.assertTrue(maps["lk10000ro"]["readonly_mount"])
        self.assertEqual([{"start": "10.2.0.7@tcp", "end": "10.2.0.7@tcp"}],
                         maps["lk10000ro"]["ranges"])

    def test_root_squash_can_be_turned_off_for_read_write(self):
        driver = self.make_driver(lustrekit_root_squash=False)
        driver.do_setup(self.ctx)
        rw = self.rule("10.1.0.0/24", "rw")
        driver.update_access(self.ctx, self.s, [rw], [rw], [], [])
        self.assertTrue(self.local_nodemaps()["lk10000rw"]["admin"])

    def test_bad_rules_go_to_error_and_are_not_applied(self):
        good = self.rule("10.1.0.5")
        bad = [self.rule("2001:db8::/64"), self.rule("2001:db8::1"), self.rule("0.0.0.0/0"),
               self.rule("10.0.0.0/0"), self.rule("CN=alice", kind="cert"),
               self.rule("alice", kind="user"), self.rule("10.0.0.300"), self.rule("host.example"),
               self.rule("10.3.0.1", level="admin")]
        rules = [good, *bad]
        updates = self.access(rules, add=rules)
        self.assertEqual(ACTIVE, updates[good["access_id"]])
        for r in bad:
            self.assertEqual(ERROR, updates[r["access_id"]], r["access_to"])
        self.assertEqual(["10.1.0.5/32"], [r["to"] for r in self.cli("access", "list", self.s["id"])])
        self.assertEqual([{"start": "10.1.0.5@tcp", "end": "10.1.0.5@tcp"}],
                         self.local_nodemaps()["lk10000rw"]["ranges"])
        # Denying an errored rule is not an error, and leaves the good one alone.
        self.assertEqual({}, self.access([good], delete=bad))
        self.assertEqual(["10.1.0.5/32"], [r["to"] for r in self.cli("access", "list", self.s["id"])])

    def test_clients_of_another_share_cannot_be_claimed(self):
        other = self.share()
        self.driver.create_share(self.ctx, other)
        mine = self.rule("10.5.0.0/16")
        self.access([mine], add=[mine])
        theirs = self.rule("10.5.3.0/24")
        updates = self.driver.update_access(self.ctx, other, [theirs], [theirs], [], [])
        self.assertEqual({theirs["access_id"]: ERROR}, updates)
        self.assertEqual([], self.cli("access", "list", other["id"]))
        self.assertNotIn("lk10001rw", self.local_nodemaps())
        # The same clients at two levels of one share: the new rule is the one refused.
        ro = self.rule("10.5.0.0/16", "ro")
        self.assertEqual({ro["access_id"]: ERROR}, self.access([mine, ro], add=[ro]))
        self.assertEqual(["lk10000rw"], list(self.local_nodemaps()))

    def test_delete_rules_revoke_and_never_applied_rules_are_fine(self):
        a, b = self.rule("10.1.0.1"), self.rule("10.1.0.2", "ro")
        self.access([a, b], add=[a, b])
        self.assertEqual({}, self.access([a], delete=[b]))
        self.assertEqual(["lk10000rw"], list(self.local_nodemaps()))
        never = self.rule("10.9.9.9")
        self.assertEqual({}, self.access([a], delete=[never]))
        self.assertEqual({}, self.access([], delete=[a]))
        self.assertEqual({}, self.local_nodemaps())

    def test_update_rules_change_the_level(self):
        a = self.rule("10.1.0.0/24", "rw")
        self.access([a], add=[a])
        a["access_level"] = "ro"
        self.assertEqual({a["access_id"]: ACTIVE}, self.access([a], update=[a]))
        maps = self.local_nodemaps()
        self.assertEqual(["lk10000ro"], list(maps))
        self.assertEqual([{"start": "10.1.0.0@tcp", "end": "10.1.0.255@tcp"}],
                         maps["lk10000ro"]["ranges"])

    def test_recovery_touches_nothing_that_is_unchanged(self):
        a, b = self.rule("10.1.0.0/24", "rw"), self.rule("10.2.0.0/24", "ro")
        self.access([a, b], add=[a, b])
        state = os.path.join(self.mnt, ".lustrekit", "nodemaps.json")
        before = os.stat(state)
        content = open(state).read()
        # Recovery mode (no added or deleted rules) with the rules already in place: the
        # nodemap state is not even rewritten, so no client loses access for a moment.
        updates = self.access([a, b])
        self.assertEqual({a["access_id"]: ACTIVE, b["access_id"]: ACTIVE}, updates)
        after = os.stat(state)
        self.assertEqual((before.st_ino, before.st_mtime_ns), (after.st_ino, after.st_mtime_ns))
        self.assertEqual(content, open(state).read())

    def test_recovery_applies_only_the_differences(self):
        a, b = self.rule("10.1.0.0/24", "rw"), self.rule("10.2.0.0/24", "rw")
        self.access([a, b], add=[a, b])
        # A rule added behind Manila's back, and one Manila no longer has.
        self.cli("access", "allow", self.s["id"], "--to", "10.7.0.1", "--level", "ro")
        c = self.rule("10.3.0.0/24", "ro")
        updates = self.access([a, c])
        self.assertEqual({a["access_id"]: ACTIVE, c["access_id"]: ACTIVE}, updates)
        rules = {r["to"]: r["level"] for r in self.cli("access", "list", self.s["id"])}
        self.assertEqual({"10.1.0.0/24": "rw", "10.3.0.0/24": "ro"}, rules)
        maps = self.local_nodemaps()
        self.assertEqual([{"start": "10.1.0.0@tcp", "end": "10.1.0.255@tcp"}],
                         maps["lk10000rw"]["ranges"])
        self.assertEqual([{"start": "10.3.0.0@tcp", "end": "10.3.0.255@tcp"}],
                         maps["lk10000ro"]["ranges"])

    def test_a_normal_update_also_revokes_rules_manila_does_not_have(self):
        a = self.rule("10.1.0.0/24")
        self.access([a], add=[a])
        self.cli("access", "allow", self.s["id"], "--to", "10.8.0.1")
        b = self.rule("10.2.0.0/24")
        self.assertEqual({b["access_id"]: ACTIVE}, self.access([a, b], add=[b]))
        self.assertEqual(["10.1.0.0/24", "10.2.0.0/24"],
                         sorted(r["to"] for r in self.cli("access", "list", self.s["id"])))

    def test_deleting_one_of_two_rules_for_the_same_clients_keeps_the_other(self):
        a, b = self.rule("10.1.0.0/24", "ro"), self.rule("10.1.0.9/24", "ro")
        self.assertEqual({a["access_id"]: ACTIVE, b["access_id"]: ACTIVE},
                         self.access([a, b], add=[a, b]))
        self.assertEqual({}, self.access([a], delete=[b]))
        self.assertEqual([("10.1.0.0/24", "ro")],
                         [(r["to"], r["level"]) for r in self.cli("access", "list", self.s["id"])])

    def test_host_bits_and_plain_addresses_name_the_same_clients(self):
        a = self.rule("10.1.0.77/24")
        self.assertEqual({a["access_id"]: ACTIVE}, self.access([a], add=[a]))
        self.assertEqual(["10.1.0.0/24"], [r["to"] for r in self.cli("access", "list", self.s["id"])])
        # Recovery sees 10.1.0.77/24 as the live 10.1.0.0/24: nothing to do.
        state = os.path.join(self.mnt, ".lustrekit", "nodemaps.json")
        before = os.stat(state).st_mtime_ns
        self.access([a])
        self.assertEqual(before, os.stat(state).st_mtime_ns)


class EnsureStatsTest(helpers.DriverTestCase):
    def test_ensure_shares_reports_and_repairs(self):
        good, gone, broken = self.share(), self.share(), self.share()
        for s in (good, broken):
            self.driver.create_share(self.ctx, s)
        rule = self.rule("10.1.0.0/24")
        self.driver.update_access(self.ctx, good, [rule], [rule], [], [])
        # Behind lustrekit's back: its nodemap deleted, another share's directory removed.
        state_path = os.path.join(self.mnt, ".lustrekit", "nodemaps.json")
        state = json.load(open(state_path))
        state["nodemaps"] = [m for m in state["nodemaps"] if m["name"] == "default"]
        json.dump(state, open(state_path, "w"))
        subprocess.run(["btrfs", "subvolume", "delete", self.share_dir(broken)], check=True,
                       capture_output=True)
        updates = self.driver.ensure_shares(self.ctx, [good, gone, broken])
        self.assertEqual({"export_locations": [{"path": self.export(good["id"]),
                                                "is_admin_only": False, "metadata": {}}],
                          "reapply_access_rules": False}, updates[good["id"]])
        self.assertEqual({"status": constants.STATUS_ERROR}, updates[gone["id"]])
        self.assertEqual({"status": constants.STATUS_ERROR}, updates[broken["id"]])
        # lustrekit's ensure put the nodemap back from its records.
        self.assertEqual([{"start": "10.1.0.0@tcp", "end": "10.1.0.255@tcp"}],
                         self.local_nodemaps()["lk10000rw"]["ranges"])

    def test_reapply_on_startup_is_honoured(self):
        driver = self.make_driver(lustre_reapply_access_on_startup=True)
        driver.do_setup(self.ctx)
        s = self.share()
        driver.create_share(self.ctx, s)
        self.assertTrue(driver.ensure_shares(self.ctx, [s])[s["id"]]["reapply_access_rules"])

    def test_backend_info_names_what_changes_exports(self):
        info = self.driver.get_backend_info(self.ctx)
        self.assertEqual(FS_NAME, info["lustre_fs_name"])
        self.assertEqual("10.0.0.1@tcp", info["export_nids"])
        self.assertEqual(info, self.driver.get_backend_info(self.ctx))
        other = self.make_driver(lustrekit_export_nids=["10.0.0.2@tcp", "10.0.0.3@tcp"])
        other.do_setup(self.ctx)
        self.assertNotEqual(info, other.get_backend_info(self.ctx))
        s = self.share()
        self.assertEqual("10.0.0.2@tcp:10.0.0.3@tcp:/testfs/manila_shares/" + s["id"],
                         other.create_share(self.ctx, s)[0]["path"])

    def test_stats_without_lustrekit_are_unknown_not_an_exception(self):
        self.driver._client.binary = os.path.join(self.fs.dir, "no-such-lustrekit")
        stats = self.driver.get_share_stats(refresh=True)
        self.assertEqual("unknown", stats["total_capacity_gb"])
        self.assertEqual("unknown", stats["pools"][0]["free_capacity_gb"])

    def test_stats_are_one_pool_per_filesystem(self):
        for size in (1, 2):
            self.driver.create_share(self.ctx, self.share(size=size))
        stats = self.driver.get_share_stats(refresh=True)
        self.assertEqual("LUSTRE", stats["storage_protocol"])
        self.assertEqual("lustrekit", stats["share_backend_name"])
        self.assertFalse(stats["driver_handles_share_servers"])
        [pool] = stats["pools"]
        self.assertEqual(FS_NAME, pool["pool_name"])
        self.assertEqual(3, pool["provisioned_capacity_gb"])
        st = os.statvfs(self.mnt)
        self.assertAlmostEqual(st.f_blocks * st.f_frsize / GIB, pool["total_capacity_gb"], delta=0.5)
        self.assertGreater(pool["free_capacity_gb"], 0)
        self.assertTrue(pool["thin_provisioning"])


class ManageTest(helpers.DriverTestCase):
    def managed(self, location, size=1):
        share = self.share(size=size)
        share["export_locations"] = [{"path": location}]
        return share

    def test_unmanage_keeps_everything_and_manage_takes_it_back(self):
        s = self.share(size=2)
        self.driver.create_share(self.ctx, s)
        rule = self.rule("10.1.0.0/24")
        self.driver.update_access(self.ctx, s, [rule], [rule], [], [])
        with open(os.path.join(self.share_dir(s), "data"), "w") as f:
            f.write("kept")
        self.driver.unmanage(s)
        self.assertEqual("kept", open(os.path.join(self.share_dir(s), "data")).read())
        self.assertEqual(2 * GIB, self.qgroup_limit(s))
        # Managed again under a new Manila ID, from its export location.
        again = self.managed(self.export(s["id"]))
        # A size given by the admin is not taken over the share's own.
        result = self.driver.manage_existing(again, {"size": 7})
        self.assertEqual({"size": 2, "export_locations": [
            {"path": self.export(s["id"]), "is_admin_only": False, "metadata": {}}]}, result)
        self.assertEqual(s["id"], self.driver.private_storage.get(again["id"], "lustrekit_share"))
        # It starts with no access, as Manila shows it.
        self.assertEqual({}, self.local_nodemaps())
        # Later calls reach the right share.
        self.driver.extend_share(again, 3)
        self.assertEqual(3 * GIB, self.qgroup_limit(s))
        self.driver.delete_share(self.ctx, again)
        self.assertFalse(os.path.exists(self.share_dir(s)))
        self.assertIsNone(self.driver.private_storage.get(again["id"], "lustrekit_share"))

    def test_a_share_made_outside_manila_is_rounded_up_to_whole_gib(self):
        self.cli("create", "ops-scratch", "--size", "1536MiB")
        share = self.managed(os.path.join(self.mnt, PREFIX, "ops-scratch"))
        self.assertEqual(2, self.driver.manage_existing(share, {})["size"])
        self.assertEqual(2 * GIB, self.qgroup_limit("ops-scratch"))

    def test_what_is_not_a_lustrekit_share_is_refused(self):
        os.mkdir(os.path.join(self.mnt, PREFIX, "plain"))
        for location in (self.export("plain"), self.export("absent"),
                         f"10.0.0.1@tcp:/otherfs/{PREFIX}/x", f"10.0.0.1@tcp:/{FS_NAME}/elsewhere/x",
                         f"10.0.0.1@tcp:/{FS_NAME}/{PREFIX}/a/b", self.export(".."), "", "/etc"):
            self.assertRaises(exception.ManageInvalidShare, self.driver.manage_existing,
                              self.managed(location), {})
        nfs = self.managed(self.export("plain"))
        nfs["share_proto"] = "NFS"
        self.assertRaises(exception.ManageInvalidShare, self.driver.manage_existing, nfs, {})
        self.assertEqual([], self.cli("list"))

    def test_private_data_is_manilas_own_storage(self):
        s = self.share()
        self.driver.create_share(self.ctx, s)
        self.driver.unmanage(s)
        other = self.managed(self.export(s["id"]))
        self.driver.manage_existing(other, {})
        # The mapping lives in Manila's database, so a new driver instance (a restarted
        # manila-share) finds it.
        restarted = self.make_driver()
        restarted.do_setup(self.ctx)
        self.assertIsNot(self.driver.private_storage, restarted.private_storage)
        restarted.extend_share(other, 2)
        self.assertEqual(2 * GIB, self.qgroup_limit(s))


class UpstreamMigrationTest(helpers.DriverTestCase):
    """Shares made by Manila's own Lustre driver, then `share_driver` switched to this one."""

    def upstream_share(self, share, size_gib, project):
        """What the upstream driver leaves, made by hand with the local backend's own means: the
        share directory (a subvolume, as the local backend's quotas need), its project ID (the
        xattr the local backend keeps it in) and its quota (a level-1 qgroup holding the
        subvolume, limited), and no lustrekit record."""
        path = self.share_dir(share)
        run = helpers.run
        run("btrfs", "subvolume", "create", path)
        os.chmod(path, 0o777)
        os.setxattr(path, "user.lustrekit.project", str(project).encode())
        subvol = run("btrfs", "inspect-internal", "rootid", path).stdout.strip()
        run("btrfs", "qgroup", "create", f"1/{subvol}", self.mnt)
        run("btrfs", "qgroup", "assign", "--no-rescan", f"0/{subvol}", f"1/{subvol}", self.mnt)
        for group in (f"1/{subvol}", f"0/{subvol}"):
            run("btrfs", "qgroup", "limit", str(size_gib * GIB), group, self.mnt)
        with open(os.path.join(path, "data"), "w") as f:
            f.write("kept")
        return path

    def switched_driver(self):
        """manila-share restarted with `share_driver` switched, the options unchanged."""
        driver = self.make_driver()
        driver.do_setup(self.ctx)
        driver.check_for_setup_error()
        return driver

    def test_ensure_shares_adopts_the_upstream_drivers_shares(self):
        a, b, gone = self.share(size=2), self.share(size=1), self.share()
        self.upstream_share(a, 2, 10000)
        self.upstream_share(b, 1, 10001)
        driver = self.switched_driver()
        updates = driver.ensure_shares(self.ctx, [a, b, gone])
        for s in (a, b):
            self.assertEqual({"export_locations": [{"path": self.export(s["id"]),
                                                    "is_admin_only": False, "metadata": {}}],
                              "reapply_access_rules": False}, updates[s["id"]])
            self.assertEqual("kept", open(os.path.join(self.share_dir(s), "data")).read())
        self.assertEqual({"status": constants.STATUS_ERROR}, updates[gone["id"]])
        shown = self.cli("show", a["id"])["share"]
        self.assertEqual((10000, 2 * GIB, "ready"),
                         (shown["project_id"], shown["size_bytes"], shown["state"]))
        self.assertEqual(["10000", "10001"], sorted(
            os.listdir(os.path.join(self.mnt, PREFIX, ".lustrekit", "projects"))))
        # Now ordinary shares: the quota follows an extend, and a new share gets a free ID.
        driver.extend_share(a, 3)
        self.assertEqual(3 * GIB, self.qgroup_limit(a))
        rule = self.rule("10.1.0.0/24")
        self.assertEqual({rule["access_id"]: ACTIVE},
                         driver.update_access(self.ctx, b, [rule], [rule], [], []))
        c = self.share()
        driver.create_share(self.ctx, c)
        self.assertEqual(10002, self.cli("show", c["id"])["share"]["project_id"])
        # A second ensure adopts nothing and changes nothing.
        self.assertEqual(updates[a["id"]], driver.ensure_shares(self.ctx, [a, b])[a["id"]])
        self.assertEqual(3 * GIB, self.cli("show", a["id"])["share"]["size_bytes"])

    def test_manage_existing_adopts_an_upstream_share(self):
        s = self.share(size=2)
        self.upstream_share(s, 2, 10007)
        driver = self.switched_driver()
        managed = self.share()
        managed["export_locations"] = [{"path": self.export(s["id"])}]
        self.assertEqual({"size": 2, "export_locations": [
            {"path": self.export(s["id"]), "is_admin_only": False, "metadata": {}}]},
            driver.manage_existing(managed, {}))
        self.assertEqual(s["id"], driver.private_storage.get(managed["id"], "lustrekit_share"))
        self.assertEqual(10007, self.cli("show", s["id"])["share"]["project_id"])
        driver.extend_share(managed, 4)
        self.assertEqual(4 * GIB, self.qgroup_limit(s))

    def test_a_directory_whose_id_another_share_holds_is_not_adopted(self):
        mine = self.share()
        self.driver.create_share(self.ctx, mine)  # project 10000
        s = self.share()
        self.upstream_share(s, 1, 10000)
        managed = self.share()
        managed["export_locations"] = [{"path": self.export(s["id"])}]
        self.assertRaises(exception.ManageInvalidShare, self.driver.manage_existing, managed, {})
        self.assertEqual([mine["id"]], [x["name"] for x in self.cli("list")])
        self.assertEqual({"status": constants.STATUS_ERROR},
                         self.driver.ensure_shares(self.ctx, [s])[s["id"]])
