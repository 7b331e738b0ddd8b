"""An OpenStack Manila share driver (DHSS=False) on lustrekit, a drop-in for Manila 23's own
`manila.share.drivers.lustre.driver.LustreShareDriver`: the same options, the same share
layout (`<lustre_mount_point>/<lustre_share_path_prefix>/<share id>`, one project quota each)
and the same export locations (`<ip>@<nid type>:/<fs>/<prefix>/<share id>`), with every
operation carried out by `lustrekit share ... --json`.

What lustrekit adds (README, "OpenStack Manila"): each access rule's nodemap is locked to the
share's fileset with `deny_unknown` and squashing; access changes touch only what changed;
project IDs are claimed in O(1) instead of scanning the tree; bad rules end in `error`.

Configure with `share_driver = lustrekit_manila.driver.LustrekitShareDriver`.
"""

import ipaddress
import math
import os
import re

from oslo_config import cfg
from oslo_log import log

from manila.common import constants
from manila import exception
from manila.i18n import _
from manila.share import driver

from lustrekit_manila import client as lk
from lustrekit_manila import options
from lustrekit_manila import preflight

LOG = log.getLogger(__name__)
CONF = cfg.CONF

DRIVER_VERSION = "1.0.0"
GIB = 1 << 30
# The Manila share (instance) ID a lustrekit share was created for.
LABEL_SHARE_ID = "manila.share_id"
# Private data key: the lustrekit share name of a managed share whose name is not its ID.
PRIVATE_NAME = "lustrekit_share"
# Preflight `lctl` calls are quick reads.
PREFLIGHT_TIMEOUT = 60

_UUID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


class _BadRule(Exception):
    """An access rule lustrekit cannot apply; the rule goes to `error`."""


def _field(obj, key, default=None):
    """`obj[key]` for dicts and Manila models alike."""
    try:
        value = obj[key]
    except (KeyError, TypeError, AttributeError):
        return default
    return default if value is None else value


def _whole_gib(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise exception.InvalidShare(
            reason=_("%(what)s %(value)r: a size is a whole number of GiB, at least 1")
            % {"what": what, "value": value})
    return value


class LustrekitShareDriver(driver.ShareDriver):
    """Shares are lustrekit shares: a directory with its own project ID and quota under the
    share prefix, and IP access rules as per-share nodemaps."""

    def __init__(self, *args, **kwargs):
        super().__init__(False, *args, **kwargs)
        if self.configuration is None:
            from manila.share import configuration

            self.configuration = configuration.Configuration(driver.share_opts)
        self.configuration.append_config_values(options.ALL_OPTS)
        self.backend_name = self.configuration.safe_get("share_backend_name") or "lustrekit"
        self.private_storage = kwargs.get("private_storage")
        self.configuration.protocol_access_mapping = {"ip": ["lustre"]}
        self._settings = None
        self._client = None
        self.config_path = None

    # ------------------------------------------------------------------ setup

    def _default_config_path(self):
        group = self.configuration.config_group or "DEFAULT"
        state_path = getattr(CONF, "state_path", None) or "/var/lib/manila"
        return os.path.join(state_path, "lustrekit", f"{group}.toml")

    def do_setup(self, context):
        conf = self.configuration
        try:
            s = options.settings(conf)
        except options.ConfigError as exc:
            raise exception.BadConfigurationException(reason=str(exc)) from exc
        mount_point = s["mount_point"]
        if s["backend"] == "lustre":
            if not os.path.ismount(mount_point):
                raise exception.ShareBackendException(
                    msg=_("Lustre filesystem is not mounted at %s") % mount_point)
            try:
                version = preflight.check_version(s, PREFLIGHT_TIMEOUT)
                state, detail = preflight.check_root_prj_enable(s, PREFLIGHT_TIMEOUT)
            except preflight.PreflightError as exc:
                raise exception.ShareBackendException(msg=str(exc)) from exc
            LOG.info("Lustre %d.%d on the MGS of %s.", version[0], version[1], s["fs_name"])
            if state == "disabled":
                message = (_("root_prj_enable is 0 on %s: root ignores project quotas there "
                             "(set osd-*.%s-*.quota_slave.root_prj_enable=1)")
                           % (", ".join(detail), s["fs_name"]))
                if not s["root_squash"]:
                    # Read-write clients keep root (lustrekit_root_squash = False), so a share's
                    # quota would not hold against them.
                    raise exception.ShareBackendException(msg=message)
                LOG.warning("%s; clients' root is squashed, so only root on servers can exceed "
                            "a share's quota.", message)
            elif state == "unknown":
                LOG.warning("Cannot check root_prj_enable from this host (%s); make sure it is 1 "
                            "on every MDT and OST.", detail)
        elif not os.path.isdir(mount_point):
            raise exception.ShareBackendException(
                msg=_("lustrekit local backend root %s is not a directory") % mount_point)
        path = conf.lustrekit_config_path or self._default_config_path()
        try:
            options.write_atomically(path, options.render_toml(s))
        except OSError as exc:
            raise exception.ShareBackendException(
                msg=_("cannot write the lustrekit configuration %(path)s: %(err)s")
                % {"path": path, "err": exc}) from exc
        self._settings = s
        self.config_path = path
        self._client = lk.LustrekitClient(conf.lustrekit_binary, path,
                                          conf.lustrekit_command_timeout)
        # Opening the service checks the configuration, makes the share prefix, and refuses a
        # project-ID range that directories not made by lustrekit already use.
        try:
            self._client.capacity()
        except lk.LustrekitError as exc:
            if exc.code == lk.PROJECT_IDS_IN_USE:
                # Shares of Manila's own Lustre driver (the operator just switched drivers):
                # ensure_shares and manage_existing adopt them. Until every such ID is adopted
                # lustrekit refuses to create, so no new share can take one of their IDs.
                LOG.warning("lustrekit: %s. ensure_shares adopts the shares Manila knows among "
                            "them; until then no share can be created.", exc.message)
                return
            raise exception.ShareBackendException(
                msg=_("lustrekit cannot serve with %(path)s: %(err)s")
                % {"path": path, "err": exc.message}) from exc

    def check_for_setup_error(self):
        if self._settings is None:
            raise exception.ShareBackendException(msg=_("do_setup has not run"))
        mount_point = self._settings["mount_point"]
        if self._settings["backend"] == "lustre" and not os.path.ismount(mount_point):
            raise exception.InvalidShare(reason=_("Lustre not mounted at %s") % mount_point)
        if not os.path.isdir(mount_point):
            raise exception.InvalidShare(reason=_("%s is not a directory") % mount_point)

    # ------------------------------------------------------------------ helpers

    def _fail(self, exc, share_id):
        """The Manila exception for a failed lustrekit call."""
        code = exc.code
        if code == lk.NOT_FOUND:
            return exception.ShareResourceNotFound(share_id=share_id)
        if code == lk.SHRINK_BELOW_USAGE:
            return exception.ShareShrinkingPossibleDataLoss(share_id=share_id)
        if code == lk.INVALID_ARGUMENT:
            return exception.InvalidShare(reason=exc.message)
        if code == lk.BUSY:
            return exception.ShareBusyException(reason=exc.message)
        return exception.ShareBackendException(msg=exc.message)

    def _name(self, share):
        """The lustrekit share name: the share ID, or what `manage_existing` recorded."""
        share_id = _field(share, "id")
        if not isinstance(share_id, str) or not _UUID.match(share_id):
            raise exception.InvalidShare(reason=_("share id %r is not a UUID") % (share_id,))
        if self.private_storage is not None:
            stored = self.private_storage.get(share_id, PRIVATE_NAME)
            if stored:
                return stored
        return share_id

    @staticmethod
    def _exports(share):
        return [{"path": share["export_location"], "is_admin_only": False, "metadata": {}}]

    def _call(self, share, method, *args):
        try:
            return method(*args)
        except lk.LustrekitError as exc:
            raise self._fail(exc, _field(share, "id")) from exc

    # ------------------------------------------------------------------ shares

    def create_share(self, context, share, share_server=None):
        proto = str(_field(share, "share_proto", "")).upper()
        if proto != "LUSTRE":
            raise exception.InvalidShare(reason=_("Unsupported protocol: %s") % proto)
        size = _whole_gib(_field(share, "size"), "size")
        name = self._name(share)
        created = self._call(share, self._client.create, name, size,
                             {LABEL_SHARE_ID: share["id"]})
        LOG.info("Share %(id)s created: project %(project)s, %(size)d GiB.",
                 {"id": share["id"], "project": created["project_id"], "size": size})
        return self._exports(created)

    def delete_share(self, context, share, share_server=None):
        try:
            name = self._name(share)
        except exception.InvalidShare:
            # Nothing was ever made for an ID that is not a UUID.
            LOG.warning("Deleting share %r: not a UUID, nothing to delete.", _field(share, "id"))
            return
        conf = self.configuration
        self._call(share, self._client.delete, name, conf.lustrekit_delete_to_trash,
                   conf.lustrekit_trash_ttl_hours if conf.lustrekit_delete_to_trash else None)
        if self.private_storage is not None:
            self.private_storage.delete(share["id"])

    def extend_share(self, share, new_size, share_server=None):
        size = _whole_gib(new_size, "new size")
        self._call(share, self._client.extend, self._name(share), size)

    def shrink_share(self, share, new_size, share_server=None):
        size = _whole_gib(new_size, "new size")
        # lustrekit refuses, changing nothing, while the share uses more than the new size.
        self._call(share, self._client.shrink, self._name(share), size)

    def _adopt_unrecorded(self, shares):
        """Adopts the shares whose directory exists with a project ID but which lustrekit has
        no record of: those of Manila's own Lustre driver, before `share_driver` was switched."""
        try:
            recorded = {s["name"] for s in self._client.list()}
        except lk.LustrekitError as exc:
            if exc.code != lk.PROJECT_IDS_IN_USE:
                raise exception.ShareBackendException(msg=exc.message) from exc
            recorded = set()  # the upstream driver's directories hold IDs: adopt them below
        for share in shares:
            try:
                name = self._name(share)
            except exception.InvalidShare:
                continue
            if name in recorded:
                continue
            try:
                adopted = self._client.adopt(name)
            except lk.LustrekitError as exc:
                if exc.code != lk.NOT_FOUND:
                    LOG.warning("Share %(id)s: cannot adopt %(name)s: %(err)s",
                                {"id": _field(share, "id"), "name": name, "err": exc.message})
                continue
            LOG.info("Share %(id)s adopted: project %(project)s, %(size)d bytes.",
                     {"id": _field(share, "id"), "project": adopted["project_id"],
                      "size": adopted["size_bytes"]})

    def ensure_shares(self, context, shares):
        self._adopt_unrecorded(shares)
        problems = {}
        try:
            report = self._client.ensure()
            problems = {p["share"]: p["problem"] for p in report.get("problems", [])}
            for repair in report.get("repaired", []):
                LOG.info("lustrekit ensure repaired %(share)s: %(what)s", repair)
        except lk.LustrekitError as exc:
            LOG.error("lustrekit ensure failed: %s", exc)
        try:
            listed = {s["name"]: s for s in self._client.list()}
        except lk.LustrekitError as exc:
            raise exception.ShareBackendException(msg=exc.message) from exc
        reapply = bool(self.configuration.lustre_reapply_access_on_startup)
        updates = {}
        for share in shares:
            share_id = _field(share, "id")
            try:
                name = self._name(share)
            except exception.InvalidShare:
                updates[share_id] = {"status": constants.STATUS_ERROR}
                continue
            found = listed.get(name)
            if found is None or found.get("state") != "ready" or name in problems:
                LOG.warning("Share %(id)s (lustrekit %(name)s): %(why)s",
                            {"id": share_id, "name": name,
                             "why": problems.get(name) or ("missing" if found is None
                                                           else f"state {found.get('state')}")})
                updates[share_id] = {"status": constants.STATUS_ERROR}
                continue
            updates[share_id] = {
                "export_locations": self._exports(found),
                "reapply_access_rules": reapply,
            }
        return updates

    def get_backend_info(self, context):
        s = self._settings or {}
        return {
            "driver": "lustrekit",
            "driver_version": DRIVER_VERSION,
            "lustre_fs_name": s.get("fs_name"),
            "lustre_mount_point": s.get("mount_point"),
            "lustre_share_path_prefix": s.get("prefix"),
            "export_nids": ",".join(s.get("export_nids", [])),
            "lustre_nid_type": s.get("nid_type"),
            "root_squash": str(s.get("root_squash")),
        }

    def get_network_allocations_number(self):
        return 0

    # ------------------------------------------------------------------ access

    @staticmethod
    def _rule_cidr(rule):
        """(normalised CIDR, level) of an access rule, or _BadRule."""
        if _field(rule, "access_type") != "ip":
            raise _BadRule(_("only 'ip' access rules are supported, not %r")
                           % _field(rule, "access_type"))
        level = _field(rule, "access_level")
        if level not in (constants.ACCESS_LEVEL_RW, constants.ACCESS_LEVEL_RO):
            raise _BadRule(_("access level %r is neither rw nor ro") % (level,))
        to = _field(rule, "access_to")
        try:
            network = ipaddress.ip_network(str(to), strict=False)
        except ValueError as exc:
            raise _BadRule(_("%(to)r is not an IP address or CIDR: %(err)s")
                           % {"to": to, "err": exc}) from exc
        if network.version != 4:
            raise _BadRule(_("%r is IPv6: the share's export (its MGS NIDs) is IPv4, and "
                             "lctl cannot express IPv6 ranges") % (to,))
        if network.prefixlen == 0:
            raise _BadRule(_("%r is every client: their one nodemap would be this share's, "
                             "locking them out of every other share") % (to,))
        return str(network), level

    def update_access(self, context, share, access_rules, add_rules, delete_rules,
                      update_rules=None, share_server=None):
        """Makes the share's lustrekit rules exactly the valid rules of `access_rules`.

        Only differences are applied: with added, deleted or updated rules, just those; in
        recovery mode (none of them), the live rules are read and only what differs changes, so
        a rule whose clients and level are unchanged is never touched and no client loses
        access. Revoking a rule never applied is not an error. Rules on the share that Manila
        does not have are revoked. A rule lustrekit cannot apply (not `ip`, IPv6, a /0, clients
        of another nodemap) goes to `error` and is not on the back end.
        """
        name = self._name(share)
        share_id = _field(share, "id")
        update_rules = update_rules or []
        changing = {_field(r, "access_id") for r in list(add_rules) + list(update_rules)}
        recovery = not add_rules and not delete_rules and not update_rules
        updates = {}

        def error(rule, why):
            LOG.warning("Access rule %(id)s (%(to)s) of share %(share)s: %(why)s",
                        {"id": _field(rule, "access_id"), "to": _field(rule, "access_to"),
                         "share": share_id, "why": why})
            updates[_field(rule, "access_id")] = {"state": constants.ACCESS_STATE_ERROR}

        # Rules already in place first, so a new rule for the same clients at another level
        # is the one refused.
        ordered = sorted(access_rules, key=lambda r: _field(r, "access_id") in changing)
        wanted, owners = {}, {}
        for rule in ordered:
            try:
                cidr, level = self._rule_cidr(rule)
            except _BadRule as exc:
                error(rule, exc)
                continue
            if wanted.get(cidr, level) != level:
                error(rule, _("another rule gives %(cidr)s %(level)s access")
                      % {"cidr": cidr, "level": wanted[cidr]})
                continue
            wanted[cidr] = level
            owners.setdefault(cidr, []).append(rule)

        if recovery:
            # Compare with what is live, and change only the differences.
            live = {r["to"]: r["level"]
                    for r in self._call(share, self._client.access_list, name)}
            to_deny = sorted(set(live) - set(wanted))
            to_allow = {c: lvl for c, lvl in wanted.items() if live.get(c) != lvl}
        else:
            # Only what Manila changed (granting an identical rule again changes nothing).
            touched = set()
            for rule in list(add_rules) + list(update_rules):
                try:
                    touched.add(self._rule_cidr(rule)[0])
                except _BadRule:
                    pass
            deleted = set()
            for rule in delete_rules:
                try:
                    deleted.add(self._rule_cidr(rule)[0])
                except _BadRule:
                    pass  # never applied
            to_deny = sorted(deleted - set(wanted))
            # A deleted rule may share its clients with a rule that stays: keep that one's.
            to_allow = {c: wanted[c] for c in sorted((touched | deleted) & set(wanted))}

        after = None  # the share's rules as the last successful call left them

        def allow(cidr):
            nonlocal after
            try:
                after = self._client.allow(name, cidr, to_allow[cidr])
                return None
            except lk.LustrekitError as exc:
                if exc.code not in (lk.INVALID_ARGUMENT, lk.ACCESS_CONFLICT):
                    raise self._fail(exc, share_id) from exc
                return exc

        # Grants first, so a nodemap that keeps clients is never emptied and re-made in
        # between; a grant refused for clients that a revoked rule still held is retried after
        # the revocations.
        failed = {cidr: exc for cidr in to_allow if (exc := allow(cidr)) is not None}
        for cidr in to_deny:
            after = self._call(share, self._client.deny, name, cidr)
        if to_deny:
            for cidr in [c for c, e in failed.items() if e.code == lk.ACCESS_CONFLICT]:
                if allow(cidr) is None:
                    del failed[cidr]
        for cidr, exc in failed.items():
            for rule in owners[cidr]:
                error(rule, exc.message)
        # Rules on the share that Manila does not have (granted behind its back, or left by a
        # crash) are revoked too; every call above returned the full list, so this costs no
        # extra call.
        for stale in sorted({r["to"] for r in after or []} - set(wanted)):
            self._call(share, self._client.deny, name, stale)

        for rule in access_rules:
            access_id = _field(rule, "access_id")
            if access_id not in updates and (recovery or access_id in changing):
                updates[access_id] = {"state": constants.ACCESS_STATE_ACTIVE}
        return updates

    # ------------------------------------------------------------------ stats

    def _update_share_stats(self, data=None):
        conf = self.configuration
        fs_name = (self._settings or {}).get("fs_name") or conf.safe_get("lustre_fs_name")
        try:
            cap = self._client.capacity()
            total = round(cap["total_bytes"] / GIB, 2)
            free = round(cap["available_bytes"] / GIB, 2)
            provisioned = round(cap["provisioned_bytes"] / GIB, 2)
        except (lk.LustrekitError, AttributeError, KeyError, TypeError):
            LOG.exception("Cannot read the capacity of %s.", fs_name)
            total = free = "unknown"
            provisioned = 0
        reserved = conf.safe_get("reserved_share_percentage") or 0
        pool = {
            "pool_name": fs_name,
            "total_capacity_gb": total,
            "free_capacity_gb": free,
            "provisioned_capacity_gb": provisioned,
            "reserved_percentage": reserved,
            "reserved_snapshot_percentage":
                conf.safe_get("reserved_share_from_snapshot_percentage") or reserved,
            "reserved_share_extend_percentage":
                conf.safe_get("reserved_share_extend_percentage") or reserved,
            "max_over_subscription_ratio": conf.safe_get("max_over_subscription_ratio"),
            # A project quota reserves nothing: shares are thin.
            "thin_provisioning": True,
            "qos": False,
            "dedupe": False,
            "compression": False,
            "snapshot_support": False,
            "create_share_from_snapshot_support": False,
            "revert_to_snapshot_support": False,
            "mount_snapshot_support": False,
        }
        stats = {
            "share_backend_name": self.backend_name,
            "vendor_name": "lustrekit",
            "driver_version": DRIVER_VERSION,
            "storage_protocol": "LUSTRE",
            "total_capacity_gb": total,
            "free_capacity_gb": free,
            "pools": [pool],
        }
        stats.update(data or {})
        super()._update_share_stats(stats)

    # ------------------------------------------------------------------ manage

    def _name_from_export(self, location):
        """The share name in an export location `<nids>:/<fs>/<prefix>/<name>` (or the share's
        path on this host, `<mount point>/<prefix>/<name>`)."""
        s = self._settings
        if not isinstance(location, str) or not location:
            raise exception.ManageInvalidShare(reason=_("no export location given"))
        nids, sep, rest = location.partition(":/")
        if sep:
            expected = f"{s['fs_name']}/{s['prefix']}/"
        else:
            rest = location
            expected = f"{s['mount_point'].rstrip('/')}/{s['prefix']}/"
        if not rest.startswith(expected):
            raise exception.ManageInvalidShare(
                reason=_("%(loc)s is not under %(expected)s of this back end")
                % {"loc": location, "expected": expected})
        name = rest[len(expected):].rstrip("/")
        if not name or "/" in name or name in (".", ".."):
            raise exception.ManageInvalidShare(
                reason=_("%s does not name one share directory") % location)
        return name

    def manage_existing(self, share, driver_options):
        proto = str(_field(share, "share_proto", "")).upper()
        if proto != "LUSTRE":
            raise exception.ManageInvalidShare(reason=_("Unsupported protocol: %s") % proto)
        share_id = _field(share, "id")
        if not isinstance(share_id, str) or not _UUID.match(share_id):
            raise exception.ManageInvalidShare(reason=_("share id %r is not a UUID") % (share_id,))
        locations = _field(share, "export_locations") or []
        if not locations:
            raise exception.ManageInvalidShare(reason=_("no export location given"))
        name = self._name_from_export(_field(locations[0], "path"))
        try:
            found = self._client.show(name)["share"]
        except lk.LustrekitError as exc:
            if exc.code == lk.INVALID_ARGUMENT:
                raise exception.ManageInvalidShare(
                    reason=_("%(name)s is not a lustrekit share: %(err)s")
                    % {"name": name, "err": exc.message}) from exc
            if exc.code not in (lk.NOT_FOUND, lk.PROJECT_IDS_IN_USE):
                raise self._fail(exc, share_id) from exc
            found = self._adopt_for_manage(share_id, name)
        if found["state"] != "ready":
            raise exception.ManageInvalidShare(
                reason=_("lustrekit share %(name)s is %(state)s")
                % {"name": name, "state": found["state"]})
        # A managed share starts with no access rules in Manila: none on the back end either.
        for rule in found.get("access", []):
            LOG.info("Managing %(name)s: revoking its rule for %(to)s.",
                     {"name": name, "to": rule["to"]})
            self._call(share, self._client.deny, name, rule["to"])
        size = max(1, math.ceil(found["size_bytes"] / GIB))
        if size * GIB != found["size_bytes"]:
            # Manila sizes are whole GiB: round the quota up, never below what the share had.
            found = self._call(share, self._client.extend, name, size)
        if self.private_storage is not None:
            if name != share_id:
                self.private_storage.update(share_id, {PRIVATE_NAME: name})
            else:
                self.private_storage.delete(share_id, PRIVATE_NAME)
        return {"size": size, "export_locations": self._exports(found)}

    def _adopt_for_manage(self, share_id, name):
        """A directory with no lustrekit record: adopted when it is a share of Manila's own
        Lustre driver (a project ID in the range, held by no other share, and a quota)."""
        try:
            return self._client.adopt(name)
        except lk.LustrekitError as exc:
            if exc.code in (lk.NOT_FOUND, lk.INVALID_ARGUMENT, lk.CONFLICT):
                raise exception.ManageInvalidShare(
                    reason=_("%(name)s is neither a lustrekit share nor one to adopt (a directory "
                             "with a project ID and quota): %(err)s")
                    % {"name": name, "err": exc.message}) from exc
            raise self._fail(exc, share_id) from exc

    def unmanage(self, share):
        # The share, its data, quota and nodemaps stay; Manila forgets it.
        if self.private_storage is not None and _UUID.match(str(_field(share, "id", ""))):
            self.private_storage.delete(share["id"])
