//! Tenants: a named root (a sub-directory of the share prefix) plus the nodes that belong to
//! it. Every share of a tenant lives under its root; one nodemap per tenant (`lkt_<name>`)
//! holds its nodes to that root (the fileset) with the squash, `deny_unknown`, idmaps and,
//! where the servers have rbac (2.16+), only the roles a tenant needs. This module is pure:
//! it validates tenants and computes the desired nodemaps, which [`crate::access::plan`]
//! diffs against the live state like any share's.

use std::collections::BTreeMap;

use lustre_model::{IdMap, IdType, LNet, NidRange, NodemapName, NodemapState, RelPath};
use serde::{Deserialize, Serialize};

use crate::access::{self, NodemapSpec, SQUASH_ID};
use crate::{Result, ShareError};

/// Nodemap names of tenants: `lkt_<name>` (share maps are `lk<digits>..`, so never clash).
pub const NODEMAP_PREFIX: &str = "lkt_";
/// Tenant names are at most this long, so `lkt_<name>` fits Lustre's 16 characters.
pub const NAME_MAX_LEN: usize = 16 - NODEMAP_PREFIX.len();
/// The rbac roles a tenant gets unless its configuration says otherwise: root may change
/// owners and modes inside its fileset and manage its own encryption, nothing filesystem-wide.
pub const DEFAULT_RBAC: &[&str] = &["file_perms", "fscrypt_admin"];
/// Roles that would let a tenant step outside its quota or read others' metadata: refused.
pub const FORBIDDEN_RBAC: &[&str] = &[
    "quota_ops",
    "pool_quota_ops",
    "lqa_quota_ops",
    "ignore_root_prjquota",
    "projid_set",
    "chlg_ops",
    "byfid_ops",
    "local_admin",
    "server_upcall",
];

/// A validated tenant name: 1 to [`NAME_MAX_LEN`] of `a-z 0-9 _`, starting with a letter or
/// digit (a Kubernetes label value and a Lustre nodemap name at once).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantName(String);

impl TenantName {
    pub fn new(name: &str) -> Result<Self> {
        let bad = |why: &str| ShareError::invalid(format!("tenant name {name:?}: {why}"));
        if name.is_empty() || name.len() > NAME_MAX_LEN {
            return Err(bad(&format!("must be 1 to {NAME_MAX_LEN} characters")));
        }
        if !name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        {
            return Err(bad("only a-z, 0-9 and _ are allowed"));
        }
        if name.starts_with('_') {
            return Err(bad("must start with a letter or digit"));
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `lkt_<name>`.
    pub fn nodemap(&self) -> Result<NodemapName> {
        Ok(NodemapName::new(&format!("{NODEMAP_PREFIX}{}", self.0))?)
    }
}

impl TryFrom<String> for TenantName {
    type Error = ShareError;
    fn try_from(value: String) -> Result<Self> {
        Self::new(&value)
    }
}

impl From<TenantName> for String {
    fn from(value: TenantName) -> Self {
        value.0
    }
}

impl std::fmt::Display for TenantName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One tenant, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub name: TenantName,
    /// Relative to the share prefix: the tenant's shares are `<prefix>/<root>/<share>`.
    pub root: RelPath,
    /// Its nodes, as NID ranges on the configured network (from CIDRs or lctl expressions).
    pub ranges: Vec<NidRange>,
    pub squash_uid: u32,
    pub squash_gid: u32,
    pub deny_unknown: bool,
    /// Root on its nodes stays root (`admin=1`); squashed otherwise.
    pub admin: bool,
    /// Client IDs are used as they are (`trusted=1`); mapped through `idmaps` otherwise.
    pub trusted: bool,
    pub idmaps: Vec<IdMap>,
    /// The rbac roles, applied where the servers have rbac (2.16+).
    pub rbac: Vec<String>,
    /// Cap of the sum of the tenant's shares (and of what is written in its root itself).
    pub quota_bytes: Option<u64>,
    /// Kubernetes namespaces whose volumes belong to this tenant.
    pub namespaces: Vec<String>,
}

/// Parses one node range: an IP or CIDR on `net`, or an lctl NID range expression
/// (`192.168.0.[1-10]@tcp`).
pub fn parse_range(text: &str, net: LNet) -> Result<NidRange> {
    let text = text.trim();
    let range = if text.contains('@') {
        text.parse::<NidRange>()?
    } else {
        NidRange::from_cidr(&crate::sizes::normalize_cidr(text)?, net)?
    };
    // Refused now rather than at the first reconcile.
    range.to_lctl_expr()?;
    Ok(range)
}

/// Parses `uid:CLIENT:FS` (or `gid:`, `projid:`).
pub fn parse_idmap(text: &str) -> Result<IdMap> {
    let bad = || ShareError::invalid(format!("idmap {text:?}: expected uid|gid|projid:CLIENT:FS"));
    let mut parts = text.trim().split(':');
    let idtype = match parts.next() {
        Some("uid") => IdType::Uid,
        Some("gid") => IdType::Gid,
        Some("projid") => IdType::Projid,
        _ => return Err(bad()),
    };
    let mut id = || -> Result<u32> { parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad) };
    let (client_id, fs_id) = (id()?, id()?);
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(IdMap {
        idtype,
        client_id,
        fs_id,
    })
}

/// Checks rbac roles: known to Lustre, and none that reaches past the tenant.
pub fn check_rbac(tenant: &TenantName, roles: &[String]) -> Result<()> {
    lustre_model::rbac_value(roles)
        .map_err(|e| ShareError::Config(format!("tenant {tenant}: {e}")))?;
    if let Some(role) = roles.iter().find(|r| FORBIDDEN_RBAC.contains(&r.as_str())) {
        return Err(ShareError::Config(format!(
            "tenant {tenant}: rbac role {role:?} would let the tenant reach past its root or quota"
        )));
    }
    Ok(())
}

/// Checks tenants against each other: distinct names, roots that neither equal nor contain
/// one another (a fileset inside another tenant's would see its shares), and ranges that do
/// not overlap (a node is in one nodemap only), each namespace in one tenant.
pub fn check_all(tenants: &[Tenant]) -> Result<()> {
    let conflict = |what: String| Err(ShareError::Config(format!("tenants: {what}")));
    let mut namespaces: BTreeMap<&str, &TenantName> = BTreeMap::new();
    for (i, a) in tenants.iter().enumerate() {
        if a.root.as_str().split('/').next() == Some(crate::META_DIR) {
            return conflict(format!(
                "tenant {} root {} is reserved",
                a.name,
                a.root.as_str()
            ));
        }
        for ns in &a.namespaces {
            if let Some(other) = namespaces.insert(ns, &a.name) {
                return conflict(format!(
                    "namespace {ns:?} is in tenants {other} and {}",
                    a.name
                ));
            }
        }
        for b in tenants.iter().skip(i + 1) {
            if a.name == b.name {
                return conflict(format!("tenant {} is declared twice", a.name));
            }
            if nested(&a.root, &b.root) {
                return conflict(format!(
                    "tenants {} and {} have roots {} and {}: roots must be distinct and not nested",
                    a.name,
                    b.name,
                    a.root.as_str(),
                    b.root.as_str()
                ));
            }
            if let Some(r) = a
                .ranges
                .iter()
                .find(|r| b.ranges.iter().any(|s| s.overlaps(r)))
            {
                return conflict(format!(
                    "tenants {} and {} both claim nodes of {r}: a node belongs to one tenant",
                    a.name, b.name
                ));
            }
        }
    }
    Ok(())
}

fn nested(a: &RelPath, b: &RelPath) -> bool {
    let within = |inner: &str, outer: &str| {
        inner == outer
            || inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    within(a.as_str(), b.as_str()) || within(b.as_str(), a.as_str())
}

/// The tenant's root relative to the filesystem root: `<prefix>/<root>`.
pub fn root_dir(prefix: &RelPath, tenant: &Tenant) -> Result<RelPath> {
    Ok(RelPath::parse(&format!(
        "{}/{}",
        prefix.as_str(),
        tenant.root.as_str()
    ))?)
}

/// Whether the live state shows the servers have nodemap rbac (2.16+ prints `rbac` for
/// every nodemap, `default` included).
pub fn servers_have_rbac(live: &NodemapState) -> bool {
    live.nodemaps.iter().any(|m| m.rbac.is_some())
}

/// The nodemap a tenant calls for.
pub fn desired(prefix: &RelPath, tenant: &Tenant, rbac: bool) -> Result<NodemapSpec> {
    let flag = |b: bool| if b { "1" } else { "0" }.to_string();
    let mut properties = vec![
        ("deny_unknown", flag(tenant.deny_unknown)),
        ("admin", flag(tenant.admin)),
        ("trusted", flag(tenant.trusted)),
        ("squash_uid", tenant.squash_uid.to_string()),
        ("squash_gid", tenant.squash_gid.to_string()),
    ];
    if rbac {
        let value = lustre_model::rbac_value(&tenant.rbac)
            .map_err(|e| ShareError::Config(format!("tenant {}: {e}", tenant.name)))?;
        properties.push(("rbac", value));
    }
    Ok(NodemapSpec {
        name: tenant.name.nodemap()?,
        fileset: format!("/{}", root_dir(prefix, tenant)?.as_str()),
        properties,
        ranges: tenant.ranges.clone(),
        idmaps: tenant.idmaps.clone(),
    })
}

/// The live nodemaps that are tenants' (so a tenant dropped from the configuration loses
/// its map).
pub fn owned(live: &NodemapState) -> Vec<NodemapName> {
    live.nodemaps
        .iter()
        .filter(|m| m.name.starts_with(NODEMAP_PREFIX))
        .filter_map(|m| NodemapName::new(&m.name).ok())
        .collect()
}

/// The ordered changes that make the live tenant nodemaps match `tenants`, after checking
/// that no tenant range is in a nodemap that is not a tenant's.
pub fn plan(
    live: &NodemapState,
    prefix: &RelPath,
    tenants: &[Tenant],
    activate: bool,
) -> Result<Vec<backend::NodemapChange>> {
    let rbac = servers_have_rbac(live);
    let desired = tenants
        .iter()
        .map(|t| desired(prefix, t, rbac))
        .collect::<Result<Vec<_>>>()?;
    let mut own = owned(live);
    for spec in &desired {
        if !own.contains(&spec.name) {
            own.push(spec.name.clone());
        }
    }
    access::check_conflicts(live, &own, &desired)?;
    Ok(access::plan(live, &own, &desired, activate))
}

/// The tenant whose ranges hold one of `addrs` (on `net`), if any; loopback is never a
/// node's identity and is skipped.
pub fn tenant_of_addresses<'a>(
    tenants: &'a [Tenant],
    addrs: &[std::net::IpAddr],
    net: LNet,
) -> Option<&'a Tenant> {
    addrs.iter().filter(|a| !a.is_loopback()).find_map(|addr| {
        let nid = lustre_model::Nid { addr: *addr, net };
        tenants
            .iter()
            .find(|t| t.ranges.iter().any(|r| r.contains(&nid)))
    })
}

/// A default squash ID (`nobody`, Lustre 2.16+).
pub fn default_squash() -> u32 {
    SQUASH_ID
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend::NodemapChange;
    use lustre_model::Nodemap;
    use proptest::prelude::*;

    pub(crate) fn tenant(name: &str, cidr: &str) -> Tenant {
        Tenant {
            name: TenantName::new(name).unwrap(),
            root: RelPath::parse(name).unwrap(),
            ranges: vec![parse_range(cidr, LNet::TCP).unwrap()],
            squash_uid: SQUASH_ID,
            squash_gid: SQUASH_ID,
            deny_unknown: true,
            admin: false,
            trusted: true,
            idmaps: vec![parse_idmap("uid:1000:21000").unwrap()],
            rbac: DEFAULT_RBAC.iter().map(|s| s.to_string()).collect(),
            quota_bytes: Some(10 << 30),
            namespaces: vec![],
        }
    }

    fn live(rbac: bool) -> NodemapState {
        NodemapState {
            active: true,
            nodemaps: vec![Nodemap {
                name: "default".into(),
                rbac: rbac.then(|| "file_perms".into()),
                ..Nodemap::default()
            }],
        }
    }

    #[test]
    fn a_tenant_map_gets_fileset_restrictions_and_idmaps_before_its_ranges() {
        let prefix = RelPath::parse("shares").unwrap();
        let changes = plan(
            &live(true),
            &prefix,
            &[tenant("alpha", "10.1.0.0/24")],
            true,
        )
        .unwrap();
        assert!(
            matches!(&changes[0], NodemapChange::Create { name } if name.as_str() == "lkt_alpha")
        );
        assert!(changes.iter().any(|c| matches!(c, NodemapChange::SetFileset { fileset: Some(f), .. } if f == "/shares/alpha")));
        assert!(changes.iter().any(|c| matches!(c, NodemapChange::SetProperty { property, value, .. } if property == "rbac" && value == "file_perms,fscrypt_admin")));
        let idmap = changes
            .iter()
            .position(|c| matches!(c, NodemapChange::AddIdmap { .. }))
            .unwrap();
        let range = changes
            .iter()
            .position(|c| matches!(c, NodemapChange::AddRange { .. }))
            .unwrap();
        assert!(idmap < range, "{changes:?}");
        // Without rbac on the servers (≤2.15, or the local backend) none is set.
        let old = plan(
            &live(false),
            &prefix,
            &[tenant("alpha", "10.1.0.0/24")],
            false,
        )
        .unwrap();
        assert!(!old.iter().any(
            |c| matches!(c, NodemapChange::SetProperty { property, .. } if property == "rbac")
        ));
    }

    #[test]
    fn a_dropped_tenant_loses_its_map_and_foreign_maps_conflict() {
        let prefix = RelPath::parse("shares").unwrap();
        let mut state = live(false);
        state.nodemaps.push(Nodemap {
            name: "lkt_gone".into(),
            ranges: vec![parse_range("10.9.0.1", LNet::TCP).unwrap()],
            ..Nodemap::default()
        });
        let changes = plan(&state, &prefix, &[], false).unwrap();
        assert!(
            matches!(
                changes.as_slice(),
                [NodemapChange::DelRange { .. }, NodemapChange::Delete { .. }]
            ),
            "{changes:?}"
        );
        state.nodemaps.push(Nodemap {
            name: "site".into(),
            ranges: vec![parse_range("10.1.0.0/16", LNet::TCP).unwrap()],
            ..Nodemap::default()
        });
        assert!(matches!(
            plan(&state, &prefix, &[tenant("alpha", "10.1.0.0/24")], false),
            Err(ShareError::AccessConflict { .. })
        ));
    }

    #[test]
    fn tenants_must_not_overlap_or_nest() {
        let a = tenant("alpha", "10.1.0.0/24");
        let b = tenant("beta", "10.2.0.0/24");
        check_all(&[a.clone(), b.clone()]).unwrap();
        let overlapping = tenant("beta", "10.1.0.128/25");
        assert!(
            check_all(&[a.clone(), overlapping])
                .unwrap_err()
                .to_string()
                .contains("10.1.0")
        );
        let mut nested_root = b.clone();
        nested_root.root = RelPath::parse("alpha/inner").unwrap();
        assert!(check_all(&[a.clone(), nested_root]).is_err());
        let mut same = b.clone();
        same.name = a.name.clone();
        assert!(check_all(&[a.clone(), same]).is_err());
        let mut sibling = b;
        sibling.root = RelPath::parse("alphabet").unwrap();
        check_all(&[a, sibling]).unwrap();
    }

    #[test]
    fn a_node_belongs_to_the_tenant_whose_ranges_hold_an_address() {
        let tenants = [tenant("alpha", "10.1.0.0/24"), tenant("beta", "10.2.0.7")];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let of = |a: &[&str]| {
            tenant_of_addresses(
                &tenants,
                &a.iter().map(|s| ip(s)).collect::<Vec<_>>(),
                LNet::TCP,
            )
            .map(|t| t.name.as_str().to_string())
        };
        assert_eq!(of(&["127.0.0.1", "10.2.0.7"]).as_deref(), Some("beta"));
        assert_eq!(of(&["10.1.0.200"]).as_deref(), Some("alpha"));
        assert_eq!(of(&["10.2.0.8", "::1"]), None);
    }

    #[test]
    fn rbac_roles_that_escape_are_refused() {
        let n = TenantName::new("alpha").unwrap();
        check_rbac(&n, &["file_perms".to_string()]).unwrap();
        assert!(check_rbac(&n, &["quota_ops".to_string()]).is_err());
        assert!(check_rbac(&n, &["flying".to_string()]).is_err());
    }

    proptest! {
        #[test]
        fn tenant_names_are_nodemap_names(s in "\\PC{0,20}") {
            if let Ok(name) = TenantName::new(&s) {
                prop_assert!(name.nodemap().is_ok());
                prop_assert!(lustre_model::ShareName::new(name.as_str()).is_ok());
            }
        }

        #[test]
        fn idmaps_roundtrip(t in 0u8..3, c in any::<u32>(), f in any::<u32>(), junk in "\\PC{0,12}") {
            let kind = ["uid", "gid", "projid"][t as usize];
            let m = parse_idmap(&format!("{kind}:{c}:{f}")).unwrap();
            prop_assert_eq!((m.idtype.as_str(), m.client_id, m.fs_id), (kind, c, f));
            let _ = parse_idmap(&junk);
        }

        #[test]
        fn ranges_parse_or_fail_cleanly(s in "\\PC{0,24}", a in any::<u8>(), b in any::<u8>(), p in 8u8..=32) {
            let _ = parse_range(&s, LNet::TCP);
            let r = parse_range(&format!("10.{a}.{b}.0/{p}"), LNet::TCP).unwrap();
            let again = parse_range(&r.to_lctl_expr().unwrap(), LNet::TCP).unwrap();
            prop_assert_eq!(r, again);
        }
    }
}
