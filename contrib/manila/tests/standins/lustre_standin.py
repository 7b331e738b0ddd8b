"""Stand-ins for `lfs`, `lctl` and `ssh`, so that lustrekit's `lustre` backend runs end to end
without a Lustre: every call is logged with its exact argv, the state (project IDs, project
quotas, nodemaps) is kept in a JSON file, and outputs are printed in the formats of Lustre 2.16
as `shared/lustre-formats/` records them (lfs-project.md, lfs-quota.md, lfs-df.md,
lctl-nodemap.md). Directories are real: usage is the blocks allocated under a project's
directories on the real filesystem.

Usage (through the wrappers the tests generate):
    lustre_standin.py lfs|lctl|ssh STATE_DIR ARGS...
"""

import fcntl
import json
import os
import subprocess
import sys

DEFAULT_STATE = {
    "version": "2.16.1",
    "root_prj_enable": {},
    "projects": {},
    "quotas": {},
    "nodemap": {"active": 0, "maps": {}, "next_id": 1, "next_range": 1},
    # argv words -> [exit code, stderr]: a call whose argv contains all the words fails so.
    "fail": [],
}


class Fail(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def load(state_dir):
    path = os.path.join(state_dir, "state.json")
    try:
        with open(path) as f:
            state = json.load(f)
    except FileNotFoundError:
        state = json.loads(json.dumps(DEFAULT_STATE))
    return state


def save(state_dir, state):
    path = os.path.join(state_dir, "state.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


# ------------------------------------------------------------------ lfs

def project_of(state, path):
    entry = state["projects"].get(os.path.realpath(path))
    return (entry[0], entry[1]) if entry else (0, False)


def project_usage(state, pid):
    kib = files = 0
    roots = [p for p, (i, _inherit) in state["projects"].items() if i == pid and os.path.isdir(p)]
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            files += 1
            kib += os.lstat(dirpath).st_blocks // 2
            for name in filenames:
                files += 1
                kib += os.lstat(os.path.join(dirpath, name)).st_blocks // 2
    return kib, files


def lfs(state, args):
    if args[:1] == ["project"]:
        rest = args[1:]
        if "-p" in rest:  # lfs project -p ID -s DIR
            i = rest.index("-p")
            pid, target = int(rest[i + 1]), rest[-1]
            if not os.path.exists(target):
                raise Fail(1, f"lfs: failed to get xattr for '{target}': No such file or directory")
            state["projects"][os.path.realpath(target)] = [pid, "-s" in rest]
            return ""
        target = rest[-1]
        if not os.path.exists(target):
            raise Fail(1, f"lfs: failed to get xattr for '{target}': No such file or directory")
        paths = [target]
        if "-r" in rest:
            for dirpath, dirnames, filenames in os.walk(target):
                paths += [os.path.join(dirpath, n) for n in dirnames + filenames]
        out = ""
        for p in paths:
            pid, inherit = project_of(state, p)
            out += "%5u %c %s\n" % (pid, "P" if inherit else "-", p)
        return out
    if args[:1] == ["setquota"]:
        opts = dict(zip(args[1:-1:2], args[2:-1:2]))
        state["quotas"][opts["-p"]] = {k: int(opts.get(k, 0)) for k in ("-b", "-B", "-i", "-I")}
        return ""
    if args[:1] == ["quota"]:
        pid, mount = args[args.index("-p") + 1], args[-1]
        q = state["quotas"].get(pid, {"-b": 0, "-B": 0, "-i": 0, "-I": 0})
        kib, files = project_usage(state, int(pid))
        bover = q["-B"] and kib >= q["-B"]
        iover = q["-I"] and files >= q["-I"]
        out = f"Disk quotas for prj {pid} (pid {pid}):\n"
        out += "%16s %7s %7s %7s %7s %7s %7s %7s %7s\n" % (
            "Filesystem", "kbytes", "quota", "limit", "grace", "files", "quota", "limit", "grace")
        out += "%16s" % mount
        out += " %7s%c %6s %7s %7s" % (kib, "*" if bover else " ", q["-b"], q["-B"], "-")
        out += " %7s%c %6s %7s %7s\n" % (files, "*" if iover else " ", q["-i"], q["-I"], "-")
        return out
    if args[:1] == ["df"]:
        mount = args[-1]
        st = os.statvfs(mount)
        fs = state.get("fsname", "testfs")
        if "-i" in args:
            total, free = st.f_files, st.f_ffree
            head = ("UUID", "Inodes", "IUsed", "IFree", "IUse%", "Mounted on")
        else:
            total, free = st.f_blocks * st.f_frsize // 1024, st.f_bavail * st.f_frsize // 1024
            head = ("UUID", "1K-blocks", "Used", "Available", "Use%", "Mounted on")
        used = total - free
        pct = -(-used * 100 // total) if total else 0
        out = "%-20s %11s %11s %11s %4s %-s\n" % head
        row = "%-20s %11d %11d %11d %3d%% %s"
        out += (row % (f"{fs}-MDT0000_UUID", total, used, free, pct, mount)) + "[MDT:0]\n"
        out += (row % (f"{fs}-OST0000_UUID", total, used, free, pct, mount)) + "[OST:0]\n"
        out += "\n" + (row % ("filesystem_summary:", total, used, free, pct, mount)) + "\n\n"
        return out
    raise Fail(1, f"lfs: unknown command {args!r}")


# ------------------------------------------------------------------ lctl

def parse_range(expr):
    nid, _, net = expr.rpartition("@")
    if nid == "*":
        return f"0.0.0.0@{net}", f"255.255.255.255@{net}"
    lo, hi = [], []
    for octet in nid.split("."):
        if octet == "*":
            a, b = 0, 255
        elif octet.startswith("["):
            a, b = (int(x) for x in octet[1:-1].split("-"))
        else:
            a = b = int(octet)
        lo.append(str(a))
        hi.append(str(b))
    if len(lo) != 4:
        raise Fail(1, f"error: invalid range {expr!r}")
    return ".".join(lo) + "@" + net, ".".join(hi) + "@" + net


def _ip_value(nid):
    return [int(x) for x in nid.split("@")[0].split(".")]


def overlaps(a, b):
    return (a[0].split("@")[1] == b[0].split("@")[1]
            and _ip_value(a[0]) <= _ip_value(b[1]) and _ip_value(b[0]) <= _ip_value(a[1]))


PROPERTY_FILES = {"admin": "admin_nodemap", "trusted": "trusted_nodemap"}


def render_nodemaps(nm):
    maps = dict(nm["maps"])
    maps.setdefault("default", {"id": 0, "props": {}, "fileset": "", "ranges": []})
    out = f"nodemap.active={nm['active']}\n"
    for name in sorted(maps):
        m = maps[name]
        p = {"admin_nodemap": "0", "trusted_nodemap": "0", "deny_unknown": "0",
             "squash_uid": "65534", "squash_gid": "65534", "squash_projid": "65534",
             "readonly_mount": "0"}
        for key, value in m["props"].items():
            p[PROPERTY_FILES.get(key, key)] = value
        p["id"] = str(m["id"])
        p["fileset"] = m["fileset"]
        lines = {k: f"nodemap.{name}.{k}={v}\n" for k, v in p.items()}
        lines["idmap"] = f"nodemap.{name}.idmap=\n[\n\n]\n"
        ranges = ",\n".join(f" {{ id: {r['id']}, start_nid: {r['start']}, end_nid: {r['end']} }}"
                            for r in m["ranges"])
        lines["ranges"] = f"nodemap.{name}.ranges=\n[\n{ranges}\n]\n"
        out += "".join(lines[k] for k in sorted(lines))
    return out


def opts(args):
    return dict(zip(args[0::2], args[1::2]))


def lctl(state, args):
    nm = state["nodemap"]
    maps = nm["maps"]
    if args[:1] == ["get_param"]:
        params = [a for a in args[1:] if not a.startswith("-")]
        if params == ["version"]:
            return state["version"] + "\n" if "-n" in args else f"version={state['version']}\n"
        if params == ["nodemap.active", "nodemap.*.*"]:
            return render_nodemaps(nm)
        if len(params) == 1 and params[0].endswith(".quota_slave.root_prj_enable"):
            values = state["root_prj_enable"]
            if not values:
                raise Fail(2, f"error: get_param: param_path '{params[0]}': No such file or directory")
            return "".join(f"{k}={v}\n" if "-n" not in args else f"{v}\n" for k, v in values.items())
        raise Fail(2, f"error: get_param: unknown parameters {params!r}")
    cmd, o = args[0], opts(args[1:])
    if cmd == "nodemap_add":
        name = args[1]
        if name in maps:
            raise Fail(1, f"error: {name} existing nodemap name")
        maps[name] = {"id": nm["next_id"], "props": {}, "fileset": "", "ranges": []}
        nm["next_id"] += 1
        return ""
    if cmd == "nodemap_del":
        name = args[1]
        if name not in maps:
            raise Fail(1, f"error: {name} not existing nodemap name")
        del maps[name]
        return ""
    name = o.get("--name")
    if cmd != "nodemap_activate" and name not in maps:
        raise Fail(1, f"error: {cmd}: nodemap '{name}' does not exist: No such file or directory")
    if cmd == "nodemap_add_range":
        start, end = parse_range(o["--range"])
        for other, m in maps.items():
            if any(overlaps((start, end), (r["start"], r["end"])) for r in m["ranges"]):
                raise Fail(1, f"error: {cmd}: cannot add range '{o['--range']}' to nodemap '{name}': "
                              f"File exists (in {other})")
        maps[name]["ranges"].append({"id": nm["next_range"], "start": start, "end": end})
        nm["next_range"] += 1
        return ""
    if cmd == "nodemap_del_range":
        start, end = parse_range(o["--range"])
        kept = [r for r in maps[name]["ranges"] if (r["start"], r["end"]) != (start, end)]
        if len(kept) == len(maps[name]["ranges"]):
            raise Fail(1, f"error: {cmd}: cannot delete range '{o['--range']}' from nodemap '{name}': "
                          "No such file or directory")
        maps[name]["ranges"] = kept
        return ""
    if cmd == "nodemap_modify":
        maps[name]["props"][o["--property"]] = o["--value"]
        return ""
    if cmd == "nodemap_set_fileset":
        maps[name]["fileset"] = o["--fileset"]
        return ""
    if cmd == "nodemap_activate":
        nm["active"] = int(args[1])
        return ""
    raise Fail(1, f"error: {cmd}: invalid command")


# ------------------------------------------------------------------ ssh

def ssh(args):
    """Runs the remote command line (the word after `--`) on this host with `sh -c`."""
    if "-O" in args:  # closing a multiplexed master
        return 0
    if "--" not in args:
        sys.stderr.write("ssh: stand-in needs `--` before the remote command\n")
        return 255
    command = args[args.index("--") + 1:]
    return subprocess.run(["sh", "-c", " ".join(command)], check=False).returncode


def main():
    tool, state_dir, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(os.path.join(state_dir, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(os.path.join(state_dir, "calls.jsonl"), "a") as log:
            log.write(json.dumps({"tool": tool, "argv": args}) + "\n")
        if tool == "ssh":
            fcntl.flock(lock, fcntl.LOCK_UN)
            return ssh(args)
        state = load(state_dir)
        for rule in state.get("fail", []):
            if all(word in args for word in rule["words"]) and rule.get("tool", tool) == tool:
                sys.stderr.write(rule["stderr"] + "\n")
                return rule["code"]
        try:
            out = (lfs if tool == "lfs" else lctl)(state, args)
        except Fail as exc:
            sys.stderr.write(exc.message + "\n")
            return exc.code
        save(state_dir, state)
        sys.stdout.write(out)
        return 0


if __name__ == "__main__":
    sys.exit(main())
