"""The checks `do_setup` makes on a real Lustre before it serves: the Lustre version (2.16 or
later: nodemap `readonly_mount` and root project quotas) and `root_prj_enable`.

These read `lctl get_param` where lustrekit itself would run it: on the MGS (version) and
the MDS (`osd-*` quota parameters), over SSH with the same key-only options as lustrekit's
SSH runner when `lustre_mgs_ip`/`lustre_mds_ip` are set, else on this host.
"""

import os
import re
import shlex
import subprocess

MIN_VERSION = (2, 16)

_VERSION = re.compile(r"(?:^|[\s=:v])(\d+)\.(\d+)(?:\.\d+)*")


class PreflightError(Exception):
    """A check that failed, with what to do about it."""


def parse_version(text):
    """(major, minor) from `lctl get_param [-n] version` of any release, or None."""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(("kernel:", "build:")):
            continue
        m = _VERSION.search(line)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


def ssh_argv(settings, host, argv):
    """`ssh` options as lustrekit's SSH runner sets them, then the remote command line."""
    h = settings[host]
    out = [
        settings["ssh"], "-T",
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "PasswordAuthentication=no",
        "-o", "KbdInteractiveAuthentication=no",
        "-o", "LogLevel=ERROR",
        "-o", f"ConnectTimeout={int(h.get('connect_timeout_secs', 10))}",
        "-o", f"StrictHostKeyChecking={h['strict_host_key_checking']}",
    ]
    if h.get("known_hosts_file"):
        out += ["-o", f"UserKnownHostsFile={h['known_hosts_file']}"]
    elif h["strict_host_key_checking"] == "no":
        out += ["-o", "UserKnownHostsFile=/dev/null"]
    out += ["-i", h["key"], "-p", str(h["port"]), f"{h['user']}@{h['host']}", "--",
            "env LC_ALL=C " + " ".join(shlex.quote(a) for a in argv)]
    return out


def run_lctl(settings, host, args, timeout):
    """Runs `lctl ARGS` on `host` ('mgs_host' or 'mds_host'); returns (exit code, stdout,
    stderr)."""
    argv = [settings["lctl"], *args]
    if settings.get(host):
        argv = ssh_argv(settings, host, argv)
    try:
        proc = subprocess.run(  # noqa: S603 - argv, never a shell
            argv, capture_output=True, text=True, timeout=timeout, check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except subprocess.TimeoutExpired as exc:
        raise PreflightError(f"{' '.join(argv)}: no answer within {timeout} s") from exc
    except OSError as exc:
        raise PreflightError(f"cannot run {argv[0]!r}: {exc}") from exc
    return proc.returncode, proc.stdout, proc.stderr


def check_version(settings, timeout):
    """The MGS's Lustre version, refused below 2.16."""
    code, out, err = run_lctl(settings, "mgs_host", ["get_param", "-n", "version"], timeout)
    if code != 0:
        raise PreflightError(f"cannot read the Lustre version (lctl get_param -n version): "
                             f"{(err or out).strip() or f'exit status {code}'}")
    version = parse_version(out)
    if version is None:
        raise PreflightError(f"no Lustre version in {out.strip()[:80]!r}")
    if version < MIN_VERSION:
        raise PreflightError(
            f"Lustre {version[0]}.{version[1]} is older than 2.16: nodemap readonly_mount and "
            "root project quota enforcement (root_prj_enable) need 2.16"
        )
    return version


def check_root_prj_enable(settings, timeout):
    """`root_prj_enable` of every target the MDS-side host sees.

    Returns ('enabled', n), ('disabled', names) or ('unknown', why): the parameter exists on
    server nodes only, so a client-only host cannot see it.
    """
    param = f"osd-*.{settings['fs_name']}-*.quota_slave.root_prj_enable"
    code, out, err = run_lctl(settings, "mds_host", ["get_param", param], timeout)
    if code != 0:
        return "unknown", (err or out).strip() or f"exit status {code}"
    values = {}
    for line in out.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep:
            values[name] = value.strip()
    if not values:
        return "unknown", f"no {param} on this host"
    disabled = sorted(n for n, v in values.items() if v != "1")
    if disabled:
        return "disabled", disabled
    return "enabled", len(values)
