"""The Manila share driver (DHSS=False) over lustrekit, following the Lustre driver spec:
share = sub-directory with a project quota, access = IP rules as nodemaps, export location =
`<nid>[:<nid>]:/<fsname>/<prefix>/<share>`.

Manila's base class is used when Manila is installed; the logic does not depend on it, so it
is tested without Manila against the real lustrekit binary.
"""

from .client import Conflict, LustrekitClient, NotFound

try:  # pragma: no cover - only inside a Manila deployment
    from manila.share import driver as _manila_driver

    _Base = _manila_driver.ShareDriver
except ImportError:  # pragma: no cover - the shim runs and is tested without Manila
    _Base = object

GIB = 1 << 30


def share_name(share):
    """lustrekit share names are Manila share IDs (UUIDs: safe path components)."""
    return f"share-{share['id']}"


class LustrekitShareDriver(_Base):
    driver_handles_share_servers = False

    def __init__(self, client=None, backend_name="lustrekit"):
        if _Base is not object:  # pragma: no cover
            super().__init__(False)
        self.client = client or LustrekitClient()
        self.backend_name = backend_name

    def create_share(self, context, share, share_server=None):
        created = self.client.create(share_name(share), share["size"], labels={"manila.share_id": share["id"]})
        return [{"path": created["export_location"], "is_admin_only": False, "metadata": {}}]

    def delete_share(self, context, share, share_server=None):
        self.client.delete(share_name(share))

    def extend_share(self, share, new_size, share_server=None):
        self.client.extend(share_name(share), new_size)

    def shrink_share(self, share, new_size, share_server=None):
        # lustrekit refuses (and changes nothing) while the share uses more than new_size.
        self.client.shrink(share_name(share), new_size)

    def update_access(self, context, share, access_rules, add_rules, delete_rules, share_server=None):
        name = share_name(share)
        if not add_rules and not delete_rules:
            # Recovery mode: make the live rules exactly access_rules.
            wanted = {r["access_to"]: r["access_level"] for r in access_rules}
            for rule in self.client.access_list(name):
                if rule["to"] not in {self._cidr(t) for t in wanted}:
                    self.client.deny(name, rule["to"])
            add_rules = access_rules
        updates = {}
        for rule in delete_rules:
            self.client.deny(name, rule["access_to"])
        for rule in add_rules:
            if rule["access_type"] != "ip":
                updates[rule["access_id"]] = {"state": "error"}
                continue
            try:
                self.client.allow(name, rule["access_to"], rule["access_level"])
            except Conflict:
                updates[rule["access_id"]] = {"state": "error"}
        return updates

    @staticmethod
    def _cidr(to):
        return to if "/" in to else (f"{to}/128" if ":" in to else f"{to}/32")

    def ensure_shares(self, context, shares):
        report = self.client.ensure()
        broken = {p["share"] for p in report["problems"]}
        result = {}
        for share in shares:
            name = share_name(share)
            try:
                shown = self.client.show(name)
            except NotFound:
                result[share["id"]] = {"status": "error", "export_locations": []}
                continue
            result[share["id"]] = {
                "status": "error" if name in broken else "available",
                "export_locations": [{"path": shown["share"]["export_location"], "is_admin_only": False}],
            }
        return result

    def get_share_stats(self):
        cap = self.client.capacity()
        return {
            "share_backend_name": self.backend_name,
            "storage_protocol": "LUSTRE",
            "driver_handles_share_servers": False,
            "total_capacity_gb": cap["total_bytes"] // GIB,
            "free_capacity_gb": cap["available_bytes"] // GIB,
            "provisioned_capacity_gb": cap["provisioned_bytes"] // GIB,
            "reserved_percentage": 0,
            "thin_provisioning": True,
        }
