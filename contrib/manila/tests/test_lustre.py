"""The same scenarios on lustrekit's `lustre` backend: the real binary runs `lfs`, `lctl` (and
`ssh`) stand-ins (standins/lustre_standin.py) that log every argv, keep Lustre's state and
answer in Lustre 2.16's output formats; directories are real, on a btrfs loop mount. The
exact argv of every Lustre command is checked.
"""

import os

from manila.common import constants
from manila import exception

import helpers
from helpers import FS_NAME, GIB, PREFIX

ACTIVE = {"state": constants.ACCESS_STATE_ACTIVE}
ERROR = {"state": constants.ACCESS_STATE_ERROR}
MUTATING = ("nodemap_add", "nodemap_del", "nodemap_add_range", "nodemap_del_range",
            "nodemap_modify", "nodemap_set_fileset", "nodemap_activate")


def fallocate(path, size):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


class LustreTestCase(helpers.DriverTestCase):
    backend = "lustre"

    def calls(self, tool):
        """The argv (without the program) of every `tool` call since the last clear, with
        the mount point written MNT."""
        return [[a.replace(self.mnt, "MNT") for a in argv] for _, argv in self.standins.calls(tool)]

    def mutations(self):
        return [argv for argv in self.calls("lctl") if argv[0] in MUTATING]

    def modify(self, name, prop, value):
        return ["nodemap_modify", "--name", name, "--property", prop, "--value", value]

    def lustre_nodemaps(self):
        return self.standins.state()["nodemap"]["maps"]


class LustreSetupTest(LustreTestCase):
    def test_setup_reads_the_version_and_root_prj_enable(self):
        first = self.standins.calls("lctl")[:2]
        self.assertEqual([("lctl", ["get_param", "-n", "version"]),
                          ("lctl", ["get_param", f"osd-*.{FS_NAME}-*.quota_slave.root_prj_enable"])],
                         first)
        self.assertIn('backend = "lustre"', open(self.driver.config_path).read())

    def test_lustre_older_than_2_16_is_refused(self):
        self.standins.edit(lambda s: s.update(version="2.15.4"))
        driver = self.make_driver(lustrekit_config_path=os.path.join(self.fs.dir, "old.toml"))
        err = self.assertRaises(exception.ShareBackendException, driver.do_setup, self.ctx)
        self.assertIn("2.16", str(err))
        self.assertFalse(os.path.exists(os.path.join(self.fs.dir, "old.toml")))

    def test_an_unreadable_or_unparseable_version_is_refused(self):
        self.standins.edit(lambda s: s.update(version="garbage"))
        self.assertRaises(exception.ShareBackendException, self.make_driver().do_setup, self.ctx)
        self.standins.edit(lambda s: s["fail"].append(
            {"tool": "lctl", "words": ["version"], "code": 1, "stderr": "error: invalid ioctl"}))
        err = self.assertRaises(exception.ShareBackendException, self.make_driver().do_setup,
                                self.ctx)
        self.assertIn("invalid ioctl", str(err))

    def test_root_prj_enable_0_is_refused_when_root_is_not_squashed(self):
        targets = {f"osd-ldiskfs.{FS_NAME}-MDT0000.quota_slave.root_prj_enable": "1",
                   f"osd-ldiskfs.{FS_NAME}-OST0000.quota_slave.root_prj_enable": "0"}
        self.standins.edit(lambda s: s.update(root_prj_enable=targets))
        unsquashed = self.make_driver(lustrekit_root_squash=False)
        err = self.assertRaises(exception.ShareBackendException, unsquashed.do_setup, self.ctx)
        self.assertIn("OST0000", str(err))
        # With root squashed on every client, it is a warning only.
        self.make_driver().do_setup(self.ctx)
        targets[f"osd-ldiskfs.{FS_NAME}-OST0000.quota_slave.root_prj_enable"] = "1"
        self.standins.edit(lambda s: s.update(root_prj_enable=targets))
        self.make_driver(lustrekit_root_squash=False).do_setup(self.ctx)

    def test_an_unmounted_filesystem_is_refused(self):
        plain = os.path.join(self.fs.dir, "not-mounted")
        os.mkdir(plain)
        driver = self.make_driver(lustre_mount_point=plain)
        self.assertRaises(exception.ShareBackendException, driver.do_setup, self.ctx)
        self.driver._settings["mount_point"] = plain
        self.assertRaises(exception.InvalidShare, self.driver.check_for_setup_error)


class LustreShareTest(LustreTestCase):
    def test_create_extend_shrink_delete_run_exactly_these_commands(self):
        s = self.share(size=1)
        self.standins.clear_calls()
        self.assertEqual(self.export(s["id"]), self.driver.create_share(self.ctx, s)[0]["path"])
        d = f"MNT/{PREFIX}/{s['id']}"
        changes = [a for a in self.calls("lfs") if a[0] != "project" or "-d" not in a]
        self.assertEqual([["project", "-p", "10000", "-s", d],
                          ["setquota", "-p", "10000", "-b", "0", "-B", "1048576", "-i", "0",
                           "-I", "0", "MNT"]], changes)
        self.assertEqual(0o777, os.stat(self.share_dir(s)).st_mode & 0o7777)
        self.standins.clear_calls()
        self.driver.extend_share(s, 3)
        self.assertEqual([["setquota", "-p", "10000", "-b", "0", "-B", "3145728", "-i", "0",
                           "-I", "0", "MNT"]], [a for a in self.calls("lfs") if a[0] == "setquota"])
        # Shrinking below what the project uses: refused, no setquota at all.
        fallocate(os.path.join(self.share_dir(s), "data"), GIB + (300 << 20))
        self.standins.clear_calls()
        self.assertRaises(exception.ShareShrinkingPossibleDataLoss, self.driver.shrink_share, s, 1)
        self.assertIn(["quota", "-p", "10000", "MNT"], self.calls("lfs"))
        self.assertEqual([], [a for a in self.calls("lfs") if a[0] == "setquota"])
        self.assertEqual(3145728, self.standins.state()["quotas"]["10000"]["-B"])
        self.driver.shrink_share(s, 2)
        self.assertEqual(2097152, self.standins.state()["quotas"]["10000"]["-B"])
        self.standins.clear_calls()
        self.driver.delete_share(self.ctx, s)
        self.assertFalse(os.path.exists(self.share_dir(s)))
        self.assertEqual([["setquota", "-p", "10000", "-b", "0", "-B", "0", "-i", "0", "-I", "0",
                           "MNT"]], [a for a in self.calls("lfs") if a[0] == "setquota"])

    def test_allocation_never_scans_share_trees(self):
        # The upstream driver lists every project ID under the prefix with
        # `lfs project -d -r` (every file of every share) on each create.
        first = self.share()
        self.driver.create_share(self.ctx, first)
        for i in range(200):
            open(os.path.join(self.share_dir(first), f"f{i}"), "w").close()
        self.standins.clear_calls()
        second = self.share()
        self.driver.create_share(self.ctx, second)
        lfs = self.calls("lfs")
        self.assertEqual([], [a for a in lfs if "-r" in a])
        share_dirs = {f"MNT/{PREFIX}/{first['id']}", f"MNT/{PREFIX}/{second['id']}"}
        # Only share directories themselves are ever named, never a file inside one.
        self.assertEqual(set(), {a[-1] for a in lfs if a[0] == "project"} - share_dirs)
        self.assertEqual(["project", "-p", "10001", "-s", f"MNT/{PREFIX}/{second['id']}"],
                         [a for a in lfs if "-p" in a and a[0] == "project"][0])

    def test_a_failed_delete_is_finished_by_the_retry(self):
        s = self.share()
        self.driver.create_share(self.ctx, s)
        self.standins.edit(lambda st: st["fail"].append(
            {"tool": "lfs", "words": ["setquota", "-B", "0"], "code": 1,
             "stderr": "lfs setquota: quotactl failed: Input/output error"}))
        self.assertRaises(exception.ShareBackendException, self.driver.delete_share, self.ctx, s)
        self.standins.edit(lambda st: st["fail"].clear())
        self.driver.delete_share(self.ctx, s)  # Manila retries the delete
        self.assertFalse(os.path.exists(self.share_dir(s)))
        self.assertEqual(0, self.standins.state()["quotas"]["10000"]["-B"])
        self.assertEqual([], self.cli("list"))

    def test_an_exhausted_project_range_refuses_cleanly(self):
        driver = self.make_driver(lustre_project_id_start=10000, lustre_project_id_end=10000)
        driver.do_setup(self.ctx)
        driver.create_share(self.ctx, self.share())
        extra = self.share()
        err = self.assertRaises(exception.ShareBackendException, driver.create_share, self.ctx,
                                extra)
        self.assertIn("exhausted", str(err))
        self.assertFalse(os.path.exists(self.share_dir(extra)))

    def test_quota_commands_use_the_mds_mount_point(self):
        mds_view = os.path.join(self.fs.dir, "mds-view")
        os.mkdir(mds_view)
        helpers.run("mount", "--bind", self.mnt, mds_view)
        self.addCleanup(helpers.run, "umount", mds_view)
        driver = self.make_driver(lustre_mds_mount_point=mds_view)
        driver.do_setup(self.ctx)
        s = self.share()
        self.standins.clear_calls()
        # The export location still names the share by the filesystem, not a host path.
        self.assertEqual(self.export(s["id"]), driver.create_share(self.ctx, s)[0]["path"])
        driver.extend_share(s, 2)
        setquota = [a for _, a in self.standins.calls("lfs") if a[0] == "setquota"]
        self.assertEqual([mds_view, mds_view], [a[-1] for a in setquota])
        self.assertIn(["project", "-p", "10000", "-s", f"{mds_view}/{PREFIX}/{s['id']}"],
                      [a for _, a in self.standins.calls("lfs")])

    def test_stats_come_from_lfs_df(self):
        self.driver.create_share(self.ctx, self.share(size=2))
        self.standins.clear_calls()
        [pool] = self.driver.get_share_stats(refresh=True)["pools"]
        self.assertEqual([["df", "MNT"], ["df", "-i", "MNT"]],
                         [a for a in self.calls("lfs") if a[0] == "df"])
        self.assertEqual(FS_NAME, pool["pool_name"])
        self.assertEqual(2, pool["provisioned_capacity_gb"])
        st = os.statvfs(self.mnt)
        self.assertAlmostEqual(st.f_blocks * st.f_frsize / GIB, pool["total_capacity_gb"], delta=0.1)

    def test_a_failing_lfs_leaves_nothing_half_made(self):
        self.standins.edit(lambda s: s["fail"].append(
            {"tool": "lfs", "words": ["setquota"], "code": 1,
             "stderr": "lfs setquota: quotactl failed: Input/output error"}))
        s = self.share()
        self.assertRaises(exception.ShareBackendException, self.driver.create_share, self.ctx, s)
        self.assertFalse(os.path.exists(self.share_dir(s)))
        self.assertEqual([], os.listdir(os.path.join(self.mnt, PREFIX, ".lustrekit", "projects")))
        self.assertEqual([], self.cli("list"))


class LustreAccessTest(LustreTestCase):
    def setUp(self):
        super().setUp()
        self.s = self.share()
        self.driver.create_share(self.ctx, self.s)
        self.fileset = f"/{PREFIX}/{self.s['id']}"
        self.standins.clear_calls()

    def access(self, rules, add=(), delete=(), update=()):
        return self.driver.update_access(self.ctx, self.s, list(rules), list(add), list(delete),
                                         list(update))

    def test_a_read_write_rule_is_one_fileset_locked_squashing_nodemap(self):
        rule = self.rule("10.1.0.0/24", "rw")
        self.assertEqual({rule["access_id"]: ACTIVE}, self.access([rule], add=[rule]))
        m = "lk10000rw"
        self.assertEqual([
            ["get_param", "nodemap.active", "nodemap.*.*"],
            ["nodemap_add", m],
            ["nodemap_set_fileset", "--name", m, "--fileset", self.fileset],
            self.modify(m, "deny_unknown", "1"),
            self.modify(m, "admin", "0"),
            self.modify(m, "trusted", "1"),
            self.modify(m, "squash_uid", "65534"),
            self.modify(m, "squash_gid", "65534"),
            # The range goes last: no client joins the map before its restrictions are set.
            ["nodemap_add_range", "--name", m, "--range", "10.1.0.[0-255]@tcp"],
        ], self.calls("lctl"))

    def test_a_read_only_rule_squashes_everyone_and_mounts_read_only(self):
        rule = self.rule("10.2.0.7", "ro")
        self.access([rule], add=[rule])
        m = "lk10000ro"
        self.assertEqual([
            ["nodemap_add", m],
            ["nodemap_set_fileset", "--name", m, "--fileset", self.fileset],
            self.modify(m, "deny_unknown", "1"),
            self.modify(m, "admin", "0"),
            self.modify(m, "trusted", "0"),
            self.modify(m, "squash_uid", "65534"),
            self.modify(m, "squash_gid", "65534"),
            self.modify(m, "readonly_mount", "1"),
            ["nodemap_add_range", "--name", m, "--range", "10.2.0.7@tcp"],
        ], self.mutations())

    def test_the_nid_type_is_the_network_of_every_range(self):
        driver = self.make_driver(lustre_nid_type="o2ib3")
        driver.do_setup(self.ctx)
        rule = self.rule("192.168.4.0/23")
        driver.update_access(self.ctx, self.s, [rule], [rule], [], [])
        self.assertEqual(["nodemap_add_range", "--name", "lk10000rw", "--range",
                          "192.168.[4-5].[0-255]@o2ib3"], self.mutations()[-1])

    def test_adding_and_deleting_in_one_call(self):
        a, b = self.rule("10.1.0.1"), self.rule("10.1.0.2")
        self.access([a], add=[a])
        self.standins.clear_calls()
        self.assertEqual({b["access_id"]: ACTIVE}, self.access([b], add=[b], delete=[a]))
        # The grant first: the map keeps a client throughout, never deleted and re-made.
        self.assertEqual([
            ["nodemap_add_range", "--name", "lk10000rw", "--range", "10.1.0.2@tcp"],
            ["nodemap_del_range", "--name", "lk10000rw", "--range", "10.1.0.1@tcp"],
        ], self.mutations())

    def test_clients_moving_to_a_new_rule_in_one_call(self):
        wide = self.rule("10.1.0.0/24", "rw")
        self.access([wide], add=[wide])
        # Replace the /24 read-write by one read-only host inside it: the grant is refused
        # while the /24 holds the host, and applied once the /24 is revoked.
        host = self.rule("10.1.0.5", "ro")
        self.assertEqual({host["access_id"]: ACTIVE}, self.access([host], add=[host], delete=[wide]))
        self.assertEqual([("10.1.0.5/32", "ro")],
                         [(r["to"], r["level"]) for r in self.cli("access", "list", self.s["id"])])
        self.assertNotIn("lk10000rw", self.lustre_nodemaps())

    def test_recovery_with_one_bad_rule_applies_the_others(self):
        def site(state):
            state["nodemap"]["maps"]["site"] = {
                "id": 90, "props": {}, "fileset": "/tenants/site",
                "ranges": [{"id": 1, "start": "10.9.0.0@tcp", "end": "10.9.255.255@tcp"}]}
        self.standins.edit(site)
        good, clash = self.rule("10.1.0.0/24"), self.rule("10.9.0.0/24")
        updates = self.access([good, clash])
        self.assertEqual({good["access_id"]: ACTIVE, clash["access_id"]: ERROR}, updates)
        self.assertEqual(["10.1.0.0/24"], [r["to"] for r in self.cli("access", "list", self.s["id"])])

    def test_activation_is_opt_in(self):
        driver = self.make_driver(lustrekit_activate_nodemaps=True)
        driver.do_setup(self.ctx)
        rule = self.rule("10.1.0.1")
        driver.update_access(self.ctx, self.s, [rule], [rule], [], [])
        self.assertEqual(["nodemap_activate", "1"], self.mutations()[-1])
        self.assertEqual(1, self.standins.state()["nodemap"]["active"])

    def test_recovery_of_unchanged_rules_runs_no_nodemap_command(self):
        a, b = self.rule("10.1.0.0/24", "rw"), self.rule("10.2.0.0/24", "ro")
        self.access([a, b], add=[a, b])
        self.standins.clear_calls()
        updates = self.access([a, b])
        self.assertEqual({a["access_id"]: ACTIVE, b["access_id"]: ACTIVE}, updates)
        # Not one lctl call, so no client is dropped even for a moment. (The upstream driver
        # deletes both nodemaps and re-adds every rule.)
        self.assertEqual([], self.calls("lctl"))

    def test_recovery_applies_exactly_the_differences(self):
        a, b = self.rule("10.1.0.0/24", "rw"), self.rule("10.2.0.0/24", "rw")
        self.access([a, b], add=[a, b])
        self.standins.clear_calls()
        c = self.rule("10.3.0.0/24", "ro")
        self.access([a, c])
        ro = "lk10000ro"
        self.assertEqual([
            ["nodemap_add", ro],
            ["nodemap_set_fileset", "--name", ro, "--fileset", self.fileset],
            self.modify(ro, "deny_unknown", "1"),
            self.modify(ro, "admin", "0"),
            self.modify(ro, "trusted", "0"),
            self.modify(ro, "squash_uid", "65534"),
            self.modify(ro, "squash_gid", "65534"),
            self.modify(ro, "readonly_mount", "1"),
            ["nodemap_add_range", "--name", ro, "--range", "10.3.0.[0-255]@tcp"],
            ["nodemap_del_range", "--name", "lk10000rw", "--range", "10.2.0.[0-255]@tcp"],
        ], self.mutations())
        maps = self.lustre_nodemaps()
        self.assertEqual([("10.1.0.0@tcp", "10.1.0.255@tcp")],
                         [(r["start"], r["end"]) for r in maps["lk10000rw"]["ranges"]])

    def test_bad_rules_run_no_lustre_command(self):
        bad = [self.rule("2001:db8::/64"), self.rule("2001:db8::5"), self.rule("0.0.0.0/0"),
               self.rule("CN=alice", kind="cert"), self.rule("alice", kind="user"),
               self.rule("300.1.1.1")]
        updates = self.access(bad, add=bad)
        self.assertEqual({r["access_id"]: ERROR for r in bad}, updates)
        self.assertEqual([], self.mutations())
        self.assertEqual({}, self.lustre_nodemaps())

    def test_clients_in_a_foreign_nodemap_are_refused(self):
        def site(state):
            state["nodemap"]["maps"]["site"] = {
                "id": 90, "props": {}, "fileset": "/tenants/site",
                "ranges": [{"id": 1, "start": "10.9.0.0@tcp", "end": "10.9.255.255@tcp"}]}
        self.standins.edit(site)
        rule = self.rule("10.9.1.1")
        self.assertEqual({rule["access_id"]: ERROR}, self.access([rule], add=[rule]))
        self.assertEqual([], self.mutations())
        self.assertEqual([], self.cli("access", "list", self.s["id"]))

    def test_a_failing_lctl_raises_and_records_no_rule(self):
        self.standins.edit(lambda s: s["fail"].append(
            {"tool": "lctl", "words": ["nodemap_add_range"], "code": 1,
             "stderr": "error: nodemap_add_range: Input/output error"}))
        rule = self.rule("10.1.0.1")
        self.assertRaises(exception.ShareBackendException, self.access, [rule], [rule])
        self.assertEqual([], self.cli("access", "list", self.s["id"]))
        self.assertEqual([], self.lustre_nodemaps().get("lk10000rw", {}).get("ranges", []))

    def test_ensure_puts_back_a_nodemap_deleted_on_the_mgs(self):
        rule = self.rule("10.1.0.0/24")
        self.access([rule], add=[rule])
        self.standins.edit(lambda s: s["nodemap"]["maps"].clear())
        self.standins.clear_calls()
        updates = self.driver.ensure_shares(self.ctx, [self.s])
        self.assertNotIn("status", updates[self.s["id"]])
        m = "lk10000rw"
        self.assertEqual(["nodemap_add", m], self.mutations()[0])
        self.assertEqual(["nodemap_add_range", "--name", m, "--range", "10.1.0.[0-255]@tcp"],
                         self.mutations()[-1])
        self.assertEqual(self.fileset, self.lustre_nodemaps()[m]["fileset"])

    def test_delete_removes_ranges_then_maps(self):
        a, b = self.rule("10.1.0.0/24", "rw"), self.rule("10.2.0.1", "ro")
        self.access([a, b], add=[a, b])
        self.standins.clear_calls()
        self.driver.delete_share(self.ctx, self.s)
        self.assertEqual([
            ["nodemap_del_range", "--name", "lk10000rw", "--range", "10.1.0.[0-255]@tcp"],
            ["nodemap_del_range", "--name", "lk10000ro", "--range", "10.2.0.1@tcp"],
            ["nodemap_del", "lk10000rw"],
            ["nodemap_del", "lk10000ro"],
        ], self.mutations())
        self.assertEqual({}, self.lustre_nodemaps())


class LustreSshTest(LustreTestCase):
    """lustre_mgs_ip / lustre_mds_ip: nodemap commands run on the MGS and directory, project
    and quota commands on the MDS, over key-only SSH that never prompts."""

    extra_options = {
        "lustre_mgs_ip": "192.0.2.10",
        "lustre_mds_ip": "192.0.2.11",
        "lustre_ssh_username": "lustre-admin",
        "lustre_ssh_private_key_path": "/etc/manila/lustre_id",
        "lustrekit_ssh_known_hosts_file": "/etc/manila/lustre_known_hosts",
    }

    def ssh_calls(self):
        """(user@host, remote command) of every ssh call, with its options checked."""
        out = []
        for argv in self.calls("ssh"):
            if "-O" in argv:
                continue
            dash = argv.index("--")
            opts = argv[:dash - 1]
            for required in (["-o", "BatchMode=yes"], ["-o", "IdentitiesOnly=yes"],
                             ["-o", "PasswordAuthentication=no"],
                             ["-o", "StrictHostKeyChecking=yes"],
                             ["-o", "UserKnownHostsFile=/etc/manila/lustre_known_hosts"],
                             ["-i", "/etc/manila/lustre_id"], ["-p", "22"]):
                self.assertTrue(any(opts[i:i + len(required)] == required
                                    for i in range(len(opts))), (required, argv))
            out.append((argv[dash - 1], argv[dash + 1].replace(self.standins.dir + "/", "")))
        return out

    def test_preflight_and_every_command_go_to_the_right_server(self):
        setup = self.ssh_calls()
        self.assertEqual(("lustre-admin@192.0.2.10", "env LC_ALL=C lctl get_param -n version"),
                         setup[0])
        self.assertEqual("lustre-admin@192.0.2.11", setup[1][0])
        self.standins.clear_calls()
        s = self.share()
        self.driver.create_share(self.ctx, s)
        rule = self.rule("10.1.0.5")
        self.driver.update_access(self.ctx, s, [rule], [rule], [], [])
        calls = self.ssh_calls()
        lctl = [c for c in calls if c[1].startswith("env LC_ALL=C lctl ")]
        lfs = [c for c in calls if c[1].startswith("env LC_ALL=C lfs ")]
        self.assertEqual({"lustre-admin@192.0.2.10"}, {host for host, _ in lctl})
        self.assertEqual({"lustre-admin@192.0.2.11"}, {host for host, _ in lfs})
        self.assertIn(("lustre-admin@192.0.2.11",
                       f"env LC_ALL=C lfs project -p 10000 -s MNT/{PREFIX}/{s['id']}"), lfs)
        self.assertIn(("lustre-admin@192.0.2.10",
                       "env LC_ALL=C lctl nodemap_add_range --name lk10000rw --range 10.1.0.5@tcp"),
                      lctl)
        # Directories are made on the MDS too; nothing runs on this host but ssh.
        self.assertIn(("lustre-admin@192.0.2.11",
                       f"env LC_ALL=C mkdir -m 0700 -- MNT/{PREFIX}/{s['id']}"), calls)
        self.assertEqual(len(self.calls("lctl")), len(lctl))
        self.assertEqual(len(self.calls("lfs")), len(lfs))

    def test_ssh_without_a_key_is_a_configuration_error(self):
        driver = self.make_driver(lustre_ssh_private_key_path=None)
        self.assertRaises(exception.BadConfigurationException, driver.do_setup, self.ctx)
