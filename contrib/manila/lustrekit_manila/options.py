"""The driver's options, and the lustrekit TOML written from them.

The upstream Lustre driver's options (`lustre_*`) are taken from Manila 23's own module, so
their names, types, defaults and meanings are the upstream ones exactly and an operator switches
drivers by changing `share_driver` alone. What lustrekit can do beyond them is a
`lustrekit_*` option.
"""

import ipaddress
import json
import os
import socket
import tempfile

from oslo_config import cfg

try:  # Manila >= 23 ships the upstream driver: reuse its very option objects.
    from manila.share.drivers.lustre.driver import lustre_opts
except ImportError:  # pragma: no cover - older Manila: the same names and meanings.
    lustre_opts = [
        cfg.HostAddressOpt("lustre_share_export_ip", required=True,
                           help="Address of the Lustre MGS that clients mount from (export locations)."),
        cfg.HostAddressOpt("lustre_mgs_ip", help="MGS host for nodemap commands over SSH; local if unset."),
        cfg.HostAddressOpt("lustre_mds_ip", help="MDS host for quota commands over SSH; local if unset."),
        cfg.StrOpt("lustre_mount_point", default="/mnt/lustre", required=True,
                   help="Where the filesystem is mounted on the manila-share host."),
        cfg.StrOpt("lustre_mds_mount_point", help="Where the MDS host has it mounted, if different."),
        cfg.StrOpt("lustre_fs_name", required=True, help="The Lustre filesystem name."),
        cfg.StrOpt("lustre_share_path_prefix", default="manila_shares",
                   help="Directory under the mount point that holds the shares."),
        cfg.IntOpt("lustre_project_id_start", default=10000, help="First project ID to allocate."),
        cfg.IntOpt("lustre_project_id_end", default=60000, help="Last project ID to allocate."),
        cfg.StrOpt("lustre_nid_type", default="tcp", help="LNet network of client NIDs (tcp, o2ib...)."),
        cfg.StrOpt("lustre_ssh_username", default="root", help="SSH user on the MGS/MDS."),
        cfg.StrOpt("lustre_ssh_private_key_path", help="SSH private key for the MGS/MDS."),
        cfg.BoolOpt("lustre_reapply_access_on_startup", default=False,
                    help="Ask Manila to re-send every share's access rules at startup."),
    ]

lustrekit_opts = [
    cfg.StrOpt("lustrekit_binary", default="lustrekit",
               help="The lustrekit binary (a path, or a name looked up in PATH)."),
    cfg.StrOpt("lustrekit_config_path",
               help="Where the driver writes the lustrekit TOML it generates from these options. "
                    "Default: <state_path>/lustrekit/<backend section>.toml."),
    cfg.StrOpt("lustrekit_backend", default="lustre", choices=["lustre", "local"],
               help="'lustre' drives lfs/lctl; 'local' keeps shares as btrfs subvolumes under "
                    "lustre_mount_point (development and tests; nodemaps are only recorded)."),
    cfg.ListOpt("lustrekit_export_nids", default=[],
                help="MGS NIDs in export locations, one per failover MGS node, e.g. "
                     "10.0.0.1@tcp,10.0.0.2@tcp. Default: lustre_share_export_ip@lustre_nid_type."),
    cfg.BoolOpt("lustrekit_root_squash", default=True,
                help="Squash root on read-write access rules too (admin=0). Read-only rules always "
                     "squash every user."),
    cfg.BoolOpt("lustrekit_activate_nodemaps", default=False,
                help="Run `lctl nodemap_activate 1` when a rule is granted and nodemaps are off."),
    cfg.StrOpt("lustrekit_share_mode", default="0777",
               help="Octal mode of a new share directory (the upstream driver uses 0777)."),
    cfg.IntOpt("lustrekit_share_uid", default=0, min=0, help="Owner of a new share directory."),
    cfg.IntOpt("lustrekit_share_gid", default=0, min=0, help="Group of a new share directory."),
    cfg.BoolOpt("lustrekit_delete_to_trash", default=False,
                help="delete_share moves the share to lustrekit's trash (restorable with "
                     "`lustrekit share restore`) instead of removing its data at once."),
    cfg.IntOpt("lustrekit_trash_ttl_hours", default=168, min=0,
               help="How long a trashed share is kept before `ensure` purges it."),
    cfg.IntOpt("lustrekit_command_timeout", default=3900, min=1,
               help="Seconds one lustrekit call may run before it is killed (above the time a "
                    "large share's removal may take)."),
    cfg.IntOpt("lustrekit_lustre_command_timeout", default=60, min=1,
               help="Seconds one lfs/lctl/ssh command run by lustrekit may take."),
    cfg.StrOpt("lustrekit_lfs_path", default="lfs", help="The lfs binary."),
    cfg.StrOpt("lustrekit_lctl_path", default="lctl", help="The lctl binary."),
    cfg.StrOpt("lustrekit_ssh_path", default="ssh", help="The ssh client used for the MGS/MDS."),
    cfg.PortOpt("lustrekit_ssh_port", default=22, help="SSH port of the MGS/MDS."),
    cfg.StrOpt("lustrekit_ssh_known_hosts_file",
               help="known_hosts file for the MGS/MDS host keys (default: ssh's own)."),
    cfg.StrOpt("lustrekit_ssh_host_key_checking", default="yes", choices=["yes", "accept-new", "no"],
               help="ssh StrictHostKeyChecking for the MGS/MDS."),
]

ALL_OPTS = list(lustre_opts) + lustrekit_opts

UPSTREAM_OPTION_NAMES = tuple(opt.dest for opt in lustre_opts)


class ConfigError(ValueError):
    """An option value lustrekit cannot run with."""


def _ipv4(host, what):
    """`host` as an IPv4 address text (a hostname is resolved once, here)."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            raise ConfigError(f"{what} {host!r}: cannot resolve: {exc}") from exc
        if not infos:
            raise ConfigError(f"{what} {host!r}: no IPv4 address")
        return infos[0][4][0]
    if addr.version != 4:
        raise ConfigError(f"{what} {host!r}: Lustre MGS NIDs in export locations must be IPv4")
    return str(addr)


def _ssh_host(conf, host):
    key = conf.lustre_ssh_private_key_path
    if not key:
        raise ConfigError(
            "lustre_mgs_ip/lustre_mds_ip is set but lustre_ssh_private_key_path is not: "
            "lustrekit reaches servers with key-based SSH only"
        )
    section = {
        "host": host,
        "user": conf.lustre_ssh_username or "root",
        "key": key,
        "port": conf.lustrekit_ssh_port,
        "strict_host_key_checking": conf.lustrekit_ssh_host_key_checking,
    }
    timeout = conf.safe_get("ssh_conn_timeout")
    if timeout:
        section["connect_timeout_secs"] = int(timeout)
    if conf.lustrekit_ssh_known_hosts_file:
        section["known_hosts_file"] = conf.lustrekit_ssh_known_hosts_file
    return section


def settings(conf):
    """Validated settings from a Manila `Configuration` (raises ConfigError)."""
    fs_name = conf.lustre_fs_name
    if not fs_name:
        raise ConfigError("lustre_fs_name is required")
    start, end = conf.lustre_project_id_start, conf.lustre_project_id_end
    if not (1 <= start <= end <= 4294967294):
        raise ConfigError(
            f"lustre_project_id_start/_end {start}-{end}: need 1 <= start <= end <= 4294967294"
        )
    nid_type = conf.lustre_nid_type or "tcp"
    nids = [n.strip() for n in (conf.lustrekit_export_nids or []) if n.strip()]
    if not nids:
        if not conf.lustre_share_export_ip:
            raise ConfigError("lustre_share_export_ip is required")
        nids = [f"{_ipv4(conf.lustre_share_export_ip, 'lustre_share_export_ip')}@{nid_type}"]
    mount_point = conf.lustre_mount_point
    if not mount_point or not os.path.isabs(mount_point):
        raise ConfigError(f"lustre_mount_point {mount_point!r} must be an absolute path")
    try:
        mode = int(conf.lustrekit_share_mode, 8)
    except (TypeError, ValueError):
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise ConfigError(f"lustrekit_share_mode {conf.lustrekit_share_mode!r} is not an octal mode")
    return {
        "backend": conf.lustrekit_backend,
        "fs_name": fs_name,
        "prefix": (conf.lustre_share_path_prefix or "manila_shares").strip("/"),
        "project_ids": f"{start}-{end}",
        "export_nids": nids,
        "nid_type": nid_type,
        "mount_point": mount_point,
        "mds_mount_point": conf.lustre_mds_mount_point,
        "mgs_host": _ssh_host(conf, conf.lustre_mgs_ip) if conf.lustre_mgs_ip else None,
        "mds_host": _ssh_host(conf, conf.lustre_mds_ip) if conf.lustre_mds_ip else None,
        "root_squash": bool(conf.lustrekit_root_squash),
        "activate_nodemaps": bool(conf.lustrekit_activate_nodemaps),
        "share_mode": f"{mode:04o}",
        "share_uid": conf.lustrekit_share_uid,
        "share_gid": conf.lustrekit_share_gid,
        "trash_ttl_hours": conf.lustrekit_trash_ttl_hours,
        "lfs": conf.lustrekit_lfs_path,
        "lctl": conf.lustrekit_lctl_path,
        "ssh": conf.lustrekit_ssh_path,
        "command_timeout_secs": conf.lustrekit_lustre_command_timeout,
    }


def _value(v):
    """A TOML value (a JSON string is a valid TOML basic string)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return json.dumps(str(v))


def _table(pairs):
    return "".join(f"{k} = {_value(v)}\n" for k, v in pairs if v is not None)


def render_toml(s):
    """The lustrekit configuration (crates/share/src/config.rs) for settings `s`."""
    out = "# Written by the lustrekit Manila driver from its options; edits are overwritten.\n"
    out += _table([
        ("backend", s["backend"]),
        ("fsname", s["fs_name"]),
        ("share_prefix", s["prefix"]),
        ("project_ids", s["project_ids"]),
        ("export_nids", s["export_nids"]),
        ("nid_type", s["nid_type"]),
        ("trash_ttl_hours", s["trash_ttl_hours"]),
        ("root_squash", s["root_squash"]),
        ("activate_nodemaps", s["activate_nodemaps"]),
        ("share_mode", s["share_mode"]),
        ("share_uid", s["share_uid"]),
        ("share_gid", s["share_gid"]),
    ])
    if s["backend"] == "local":
        out += "\n[local]\n" + _table([("root", s["mount_point"])])
        return out
    out += "\n[lustre]\n" + _table([
        ("lfs", s["lfs"]),
        ("lctl", s["lctl"]),
        ("ssh", s["ssh"]),
        ("fsname", s["fs_name"]),
        ("mgs_nids", s["export_nids"]),
        ("mount_point", s["mount_point"]),
        ("mds_mount_point", s["mds_mount_point"]),
        ("command_timeout_secs", s["command_timeout_secs"]),
    ])
    for section in ("mds_host", "mgs_host"):
        if s[section]:
            out += f"\n[lustre.{section}]\n" + _table(sorted(s[section].items()))
    return out


def write_atomically(path, text, mode=0o640):
    """Writes `text` to `path` through a temporary file in the same directory and a rename, so
    a reader sees the old file or the new one."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o750, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".lustrekit-", suffix=".toml", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
