"""The driver's pure parts, inside Manila's harness, needing neither root nor the binary:
option compatibility with the upstream driver, the TOML written, access-rule parsing,
export-location parsing, lustrekit's output and error handling."""

import os
import stat
import sys
import time
import tomllib

from manila import exception
from manila.share import configuration
from manila.share import driver as manila_driver
from manila.share.drivers.lustre import driver as upstream
from oslo_config import cfg

import helpers
from lustrekit_manila import client as lk
from lustrekit_manila import driver as lk_driver
from lustrekit_manila import options
from lustrekit_manila import preflight

CONF = cfg.CONF

UPSTREAM_SECTION = {
    "lustre_share_export_ip": "10.0.0.1",
    "lustre_mgs_ip": "mgs.example.org",
    "lustre_mds_ip": "10.0.0.3",
    "lustre_mount_point": "/mnt/scratch",
    "lustre_mds_mount_point": "/lustre/scratch",
    "lustre_fs_name": "scratch",
    "lustre_share_path_prefix": "manila_shares",
    "lustre_project_id_start": 20000,
    "lustre_project_id_end": 29999,
    "lustre_nid_type": "o2ib",
    "lustre_ssh_username": "root",
    "lustre_ssh_private_key_path": "/etc/manila/id_lustre",
    "lustre_reapply_access_on_startup": False,
}


class OptionsTest(helpers.TestCase):
    def conf(self, values):
        group = "lk_units_" + str(len(values)) + str(id(values))
        conf = configuration.Configuration(manila_driver.share_opts, config_group=group)
        self.addCleanup(CONF.unregister_opts, manila_driver.share_opts + options.ALL_OPTS,
                        group=group)
        conf.append_config_values(options.ALL_OPTS)
        self.override_config("driver_handles_share_servers", False, group=group)
        for name, value in values.items():
            self.override_config(name, value, group=group)
        return conf

    def test_the_upstream_options_are_the_upstream_objects(self):
        self.assertEqual([o.dest for o in upstream.lustre_opts], list(options.UPSTREAM_OPTION_NAMES))
        self.assertTrue(all(a is b for a, b in zip(upstream.lustre_opts, options.lustre_opts)))
        self.assertTrue(all(o.dest.startswith("lustrekit_") for o in options.lustrekit_opts))

    def test_an_upstream_section_works_unchanged_beside_the_upstream_driver(self):
        conf = self.conf(UPSTREAM_SECTION)
        # Both drivers register their options in one section: no duplicate-option error.
        upstream.LustreShareDriver(configuration=conf, private_storage=None)
        ours = lk_driver.LustrekitShareDriver(configuration=conf, private_storage=None)
        s = options.settings(ours.configuration)
        toml = tomllib.loads(options.render_toml(s))
        self.assertEqual("lustre", toml["backend"])
        self.assertEqual("scratch", toml["fsname"])
        self.assertEqual("manila_shares", toml["share_prefix"])
        self.assertEqual("20000-29999", toml["project_ids"])
        self.assertEqual(["10.0.0.1@o2ib"], toml["export_nids"])
        self.assertEqual("o2ib", toml["nid_type"])
        self.assertTrue(toml["root_squash"])
        self.assertEqual("0777", toml["share_mode"])
        lustre = toml["lustre"]
        self.assertEqual(("/mnt/scratch", "/lustre/scratch", ["10.0.0.1@o2ib"]),
                         (lustre["mount_point"], lustre["mds_mount_point"], lustre["mgs_nids"]))
        self.assertEqual({"host": "mgs.example.org", "user": "root", "key": "/etc/manila/id_lustre",
                          "port": 22, "strict_host_key_checking": "yes",
                          # Manila's own ssh_conn_timeout, as the upstream driver uses it.
                          "connect_timeout_secs": 60}, lustre["mgs_host"])
        self.assertEqual("10.0.0.3", lustre["mds_host"]["host"])

    def test_strings_are_escaped_in_the_toml(self):
        conf = self.conf({**UPSTREAM_SECTION, "lustre_mount_point": '/mnt/we"ird\\path',
                          "lustre_mgs_ip": None, "lustre_mds_ip": None})
        toml = tomllib.loads(options.render_toml(options.settings(conf)))
        self.assertEqual('/mnt/we"ird\\path', toml["lustre"]["mount_point"])
        self.assertNotIn("mgs_host", toml["lustre"])

    def test_bad_values_are_config_errors(self):
        for change in ({"lustre_fs_name": None}, {"lustre_project_id_end": 10},
                       {"lustre_project_id_end": 4294967295}, {"lustre_share_export_ip": "::1"},
                       {"lustre_ssh_private_key_path": None}, {"lustre_mount_point": "mnt"},
                       {"lustrekit_share_mode": "0o7777x"}):
            conf = self.conf({**UPSTREAM_SECTION, **change})
            self.assertRaises(options.ConfigError, options.settings, conf)

    def test_the_config_file_is_replaced_atomically(self):
        d = self.useFixture(__import__("fixtures").TempDir()).path
        path = os.path.join(d, "sub", "lk.toml")
        options.write_atomically(path, "a = 1\n")
        options.write_atomically(path, "a = 2\n")
        self.assertEqual("a = 2\n", open(path).read())
        self.assertEqual(0o640, stat.S_IMODE(os.stat(path).st_mode))
        self.assertEqual(["lk.toml"], os.listdir(os.path.dirname(path)))


class RulesTest(helpers.TestCase):
    def rule(self, to, level="rw", kind="ip"):
        return {"access_id": "x", "access_type": kind, "access_to": to, "access_level": level}

    def test_addresses_normalise_like_lustrekit(self):
        parse = lk_driver.LustrekitShareDriver._rule_cidr
        self.assertEqual(("10.0.0.7/32", "rw"), parse(self.rule("10.0.0.7")))
        self.assertEqual(("10.0.0.0/24", "ro"), parse(self.rule("10.0.0.7/24", "ro")))
        self.assertEqual(("10.0.0.0/8", "rw"), parse(self.rule("10.1.2.3/8")))
        self.assertEqual(("10.0.0.7/32", "rw"), parse(self.rule("10.0.0.7/32")))

    def test_what_cannot_be_a_nodemap_range_is_refused(self):
        parse = lk_driver.LustrekitShareDriver._rule_cidr
        for rule in (self.rule("2001:db8::1"), self.rule("2001:db8::/32"), self.rule("0.0.0.0/0"),
                     self.rule("8.8.8.8/0"), self.rule("CN=x", kind="cert"),
                     self.rule("bob", kind="user"), self.rule("10.0.0.256"),
                     self.rule("10.0.0.1/33"), self.rule(""), self.rule(None),
                     self.rule("010.0.0.1"), self.rule("10.0.0.1", level="rwx")):
            self.assertRaises(lk_driver._BadRule, parse, rule)


class ExportsTest(helpers.TestCase):
    def driver(self):
        d = lk_driver.LustrekitShareDriver.__new__(lk_driver.LustrekitShareDriver)
        d._settings = {"fs_name": "scratch", "prefix": "manila_shares",
                       "mount_point": "/mnt/scratch"}
        return d

    def test_export_locations_name_one_share(self):
        d = self.driver()
        self.assertEqual("abc", d._name_from_export("10.0.0.1@tcp:/scratch/manila_shares/abc"))
        self.assertEqual("abc", d._name_from_export(
            "10.0.0.1@tcp:10.0.0.2@tcp:/scratch/manila_shares/abc/"))
        self.assertEqual("abc", d._name_from_export("/mnt/scratch/manila_shares/abc"))
        for bad in ("10.0.0.1@tcp:/other/manila_shares/abc", "10.0.0.1@tcp:/scratch/x/abc",
                    "10.0.0.1@tcp:/scratch/manila_shares/", "10.0.0.1@tcp:/scratch/manila_shares/a/b",
                    "10.0.0.1@tcp:/scratch/manila_shares/..", "/mnt/other/manila_shares/abc", "",
                    None):
            self.assertRaises(exception.ManageInvalidShare, d._name_from_export, bad)

    def test_lustrekit_errors_become_manila_exceptions(self):
        d = self.driver()
        cases = {lk.NOT_FOUND: exception.ShareResourceNotFound,
                 lk.SHRINK_BELOW_USAGE: exception.ShareShrinkingPossibleDataLoss,
                 lk.INVALID_ARGUMENT: exception.InvalidShare,
                 lk.BUSY: exception.ShareBusyException,
                 lk.CONFLICT: exception.ShareBackendException,
                 lk.PROJECT_IDS_EXHAUSTED: exception.ShareBackendException,
                 "backend": exception.ShareBackendException,
                 lk.TIMEOUT: exception.ShareBackendException}
        for code, exc in cases.items():
            self.assertIsInstance(d._fail(lk.LustrekitError(code, "m"), "id"), exc, code)


class ClientTest(helpers.TestCase):
    def script(self, body):
        d = self.useFixture(__import__("fixtures").TempDir()).path
        path = os.path.join(d, "fake-lustrekit")
        with open(path, "w") as f:
            f.write(f"#!{sys.executable}\nimport sys, time, json\n{body}\n")
        os.chmod(path, 0o755)
        return path

    def test_two_documents_on_a_failing_ensure_give_the_report(self):
        path = self.script('print(json.dumps({"checked": 1, "repaired": [], "problems": '
                           '[{"share": "a", "problem": "gone"}], "purged_trash": []}, indent=2))\n'
                           'print(json.dumps({"error": {"code": "error", "message": "1 share(s)"}}))\n'
                           'sys.exit(1)')
        report = lk.LustrekitClient(path, "/dev/null", 10).ensure()
        self.assertEqual([{"share": "a", "problem": "gone"}], report["problems"])
        err = self.assertRaises(lk.LustrekitError, lk.LustrekitClient(path, "/dev/null", 10).list)
        self.assertEqual("error", err.code)

    def test_error_codes_and_garbage(self):
        path = self.script('print(json.dumps({"error": {"code": "not_found", "message": "no"}}));'
                           'sys.exit(3)')
        err = self.assertRaises(lk.LustrekitError, lk.LustrekitClient(path, "c", 10).show, "x")
        self.assertEqual((lk.NOT_FOUND, "no"), (err.code, err.message))
        path = self.script('print("not json")')
        err = self.assertRaises(lk.LustrekitError, lk.LustrekitClient(path, "c", 10).show, "x")
        self.assertIn("unreadable", err.message)
        err = self.assertRaises(lk.LustrekitError, lk.LustrekitClient("/nonexistent/lk", "c", 10).list)
        self.assertEqual(lk.NOT_RUN, err.code)

    def test_a_hung_call_is_killed_with_what_it_started(self):
        d = self.useFixture(__import__("fixtures").TempDir()).path
        pidfile = os.path.join(d, "child")
        path = self.script("import subprocess\n"
                           f"p = subprocess.Popen(['sleep', '600'])\n"
                           f"open({pidfile!r}, 'w').write(str(p.pid))\n"
                           "time.sleep(600)")
        err = self.assertRaises(lk.LustrekitError, lk.LustrekitClient(path, "c", 2).list)
        self.assertEqual(lk.TIMEOUT, err.code)
        child = int(open(pidfile).read())
        # The grandchild got SIGKILL with its process group (it may linger as a zombie
        # until reaped, but it runs no more).
        for _ in range(100):
            try:
                state = open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                break
            if state == "Z":
                break
            time.sleep(0.1)
        else:
            self.fail(f"process {child} started by the hung call still runs")

    def test_argv_is_the_documented_command_line(self):
        c = lk.LustrekitClient("lk", "/etc/lk.toml", 10)
        self.assertEqual(["lk", "--config", "/etc/lk.toml", "--json", "share", "capacity"],
                         c.argv("capacity"))
        self.assertEqual("3GiB", lk.gib(3))


class PreflightTest(helpers.TestCase):
    def test_versions_of_every_release_format(self):
        cases = {"2.16.0_ddn56b\n": (2, 16), "version=2.15.4\n": (2, 15),
                 "lustre: 2.12.9\nkernel: patchless_client\nbuild: 2.12.9\n": (2, 12),
                 "version=\nlustre: 2.17.0\n": (2, 17), "nonsense": None}
        for text, want in cases.items():
            self.assertEqual(want, preflight.parse_version(text), text)

    def test_ssh_options_match_lustrekits_runner(self):
        s = {"ssh": "ssh", "mgs_host": {"host": "mgs", "user": "root", "key": "/k", "port": 2222,
                                        "strict_host_key_checking": "no"}}
        argv = preflight.ssh_argv(s, "mgs_host", ["lctl", "get_param", "-n", "version"])
        for pair in (["-o", "BatchMode=yes"], ["-o", "IdentitiesOnly=yes"],
                     ["-o", "StrictHostKeyChecking=no"], ["-o", "UserKnownHostsFile=/dev/null"],
                     ["-i", "/k"], ["-p", "2222"]):
            self.assertTrue(any(argv[i:i + 2] == pair for i in range(len(argv))), pair)
        self.assertEqual(["root@mgs", "--", "env LC_ALL=C lctl get_param -n version"], argv[-3:])
