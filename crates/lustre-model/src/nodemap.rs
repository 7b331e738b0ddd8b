//! Live nodemap state from `lctl get_param nodemap.active nodemap.*.*`, and the list of
//! nodemap names from `lctl nodemap_info list` (≤2.16) / `--list` (2.17+).
//!
//! Formats follow `nodemap_lproc.c` for ≤2.16 and 2.17+: `idmap`/`ranges` as `[ { ... } ]`
//! blocks (entries possibly on one line without separators, `[]` when empty), `fileset` as
//! a raw path (≤2.16) or a `{ primary: ... }` list (2.17+). Unknown parameters are ignored.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;
use crate::nid::{Nid, NidRange};

const WHAT: &str = "lctl get_param nodemap";
const WHAT_INFO: &str = "lctl nodemap_info";

/// Kind of ID an idmap translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdType {
    /// User ID.
    Uid,
    /// Group ID.
    Gid,
    /// Project ID (2.15+).
    Projid,
}

impl IdType {
    /// `uid`, `gid` or `projid` (the `--idtype` argument).
    pub fn as_str(self) -> &'static str {
        match self {
            IdType::Uid => "uid",
            IdType::Gid => "gid",
            IdType::Projid => "projid",
        }
    }
}

/// One idmap entry (`client_id:fs_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdMap {
    /// uid / gid / projid.
    pub idtype: IdType,
    /// ID on the client.
    pub client_id: u32,
    /// ID on the filesystem.
    pub fs_id: u32,
}

/// A range line whose NIDs are not IP NIDs on tcp/o2ib (e.g. `0@lo`, `kfi`), kept raw.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RawNidRange {
    /// Range id.
    pub id: u32,
    /// `start_nid` as printed.
    pub start: String,
    /// `end_nid` as printed.
    pub end: String,
}

/// One 2.17+ fileset entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FilesetEntry {
    /// The sub-directory, e.g. `/dir0`.
    pub path: String,
    /// Primary (true) or alternate fileset.
    pub primary: bool,
    /// `mode: ro`.
    pub read_only: bool,
}

/// One nodemap as read from `nodemap.<name>.*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Nodemap {
    /// Nodemap name.
    pub name: String,
    /// `id` (0 for `default`).
    pub id: u32,
    /// NID ranges (IP NIDs on tcp/o2ib).
    pub ranges: Vec<NidRange>,
    /// Ranges that could not be typed (other LNDs), kept raw.
    pub raw_ranges: Vec<RawNidRange>,
    /// The primary fileset (≤2.16 `fileset`, 2.17+ `primary:` entry); `None` if unset.
    pub fileset: Option<String>,
    /// All 2.17+ fileset entries (for ≤2.16 the single fileset as primary, read-write).
    pub filesets: Vec<FilesetEntry>,
    /// `admin_nodemap`.
    pub admin: bool,
    /// `trusted_nodemap`.
    pub trusted: bool,
    /// `deny_unknown`.
    pub deny_unknown: bool,
    /// `squash_uid`.
    pub squash_uid: Option<u32>,
    /// `squash_gid`.
    pub squash_gid: Option<u32>,
    /// `squash_projid` (2.15+).
    pub squash_projid: Option<u32>,
    /// `readonly_mount` (2.16+).
    pub readonly_mount: Option<bool>,
    /// `map_mode` (`all`, `uid,gid`, ...).
    pub map_mode: Option<String>,
    /// `idmap` entries.
    pub idmaps: Vec<IdMap>,
    /// `rbac` (2.16+): `all`, `none` or a comma list of roles.
    pub rbac: Option<String>,
    /// `audit_mode`.
    pub audit_mode: Option<bool>,
    /// `forbid_encryption` (2.14+).
    pub forbid_encryption: Option<bool>,
    /// `deny_mount` (2.17+).
    pub deny_mount: Option<bool>,
    /// `parent` (2.17+ dynamic nodemaps).
    pub parent: Option<String>,
    /// `sepol`.
    pub sepol: Option<String>,
}

/// Global nodemap state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct NodemapState {
    /// `nodemap.active` (false when absent).
    pub active: bool,
    /// Nodemaps in the order they first appear.
    pub nodemaps: Vec<Nodemap>,
}

/// The nodemap rbac roles of 2.16.0/2.16.1, in the order the kernel prints them
/// (`nodemap_rbac_names[]`, lctl-nodemap.md).
pub const RBAC_ROLES_216: &[&str] = &[
    "file_perms",
    "dne_ops",
    "quota_ops",
    "byfid_ops",
    "chlg_ops",
    "fscrypt_admin",
];

/// The rbac roles of master (2.18-dev), in kernel order; 2.16 and 2.17 know a subset, printed
/// in the same relative order.
pub const RBAC_ROLES_MASTER: &[&str] = &[
    "file_perms",
    "dne_ops",
    "quota_ops",
    "byfid_ops",
    "chlg_ops",
    "fscrypt_admin",
    "server_upcall",
    "ignore_root_prjquota",
    "hsm_ops",
    "immutable_flags",
    "local_admin",
    "pool_quota_ops",
    "lqa_quota_ops",
    "projid_set",
    "foreign_ops",
];

/// The `rbac` value for `roles`: the kernel's spelling (`none`, or the roles in kernel
/// order, each once), so it compares equal to what `nodemap.NAME.rbac` reads back. An
/// unknown role is an error naming it.
pub fn rbac_value(roles: &[String]) -> Result<String, String> {
    if let Some(unknown) = roles
        .iter()
        .find(|r| !RBAC_ROLES_MASTER.contains(&r.as_str()))
    {
        return Err(format!(
            "unknown nodemap rbac role {unknown:?}; known: {}",
            RBAC_ROLES_MASTER.join(",")
        ));
    }
    let ordered: Vec<&str> = RBAC_ROLES_MASTER
        .iter()
        .copied()
        .filter(|known| roles.iter().any(|r| r == known))
        .collect();
    Ok(if ordered.is_empty() {
        "none".to_string()
    } else {
        ordered.join(",")
    })
}

/// Is this line the start of a `nodemap.X[.Y]=...` parameter?
fn param_start(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once('=')?;
    if !name.starts_with("nodemap.") || name.contains(char::is_whitespace) {
        return None;
    }
    Some((name, value))
}

/// The `{ ... }` groups of a block value, each as `key: value` pairs.
fn brace_groups(value: &str) -> Vec<Vec<(&str, &str)>> {
    let mut groups = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('{') {
        let after = rest.get(open + 1..).unwrap_or("");
        let Some(close) = after.find('}') else { break };
        let inner = after.get(..close).unwrap_or("");
        let pairs = inner
            .split(',')
            .filter_map(|kv| kv.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        groups.push(pairs);
        rest = after.get(close + 1..).unwrap_or("");
    }
    groups
}

fn get<'a>(pairs: &[(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

fn parse_u32(v: &str, line: usize, param: &str) -> Result<u32, ParseError> {
    v.trim().parse().map_err(|_| {
        ParseError::new(
            WHAT,
            line,
            format!("{param}: {:?} is not a 32-bit number", v.trim()),
        )
    })
}

fn parse_bool(v: &str, line: usize, param: &str) -> Result<bool, ParseError> {
    match v.trim() {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(ParseError::new(
            WHAT,
            line,
            format!("{param}: {other:?} is not 0 or 1"),
        )),
    }
}

fn parse_idmaps(value: &str, line: usize) -> Result<Vec<IdMap>, ParseError> {
    brace_groups(value)
        .into_iter()
        .map(|g| {
            let idtype = match get(&g, "idtype") {
                Some("uid") => IdType::Uid,
                Some("gid") => IdType::Gid,
                Some("projid") => IdType::Projid,
                other => {
                    return Err(ParseError::new(
                        WHAT,
                        line,
                        format!("idmap: unknown idtype {other:?}"),
                    ));
                }
            };
            let field = |k: &str| -> Result<u32, ParseError> {
                let v = get(&g, k).ok_or_else(|| {
                    ParseError::new(WHAT, line, format!("idmap entry without {k}"))
                })?;
                parse_u32(v, line, "idmap")
            };
            Ok(IdMap {
                idtype,
                client_id: field("client_id")?,
                fs_id: field("fs_id")?,
            })
        })
        .collect()
}

fn parse_ranges(value: &str, line: usize, nm: &mut Nodemap) -> Result<(), ParseError> {
    nm.ranges.clear();
    nm.raw_ranges.clear();
    for g in brace_groups(value) {
        let (Some(start), Some(end)) = (get(&g, "start_nid"), get(&g, "end_nid")) else {
            return Err(ParseError::new(
                WHAT,
                line,
                "ranges: entry without start_nid/end_nid",
            ));
        };
        let id = get(&g, "id").map_or(Ok(0), |v| parse_u32(v, line, "ranges"))?;
        let typed = start
            .parse::<Nid>()
            .ok()
            .zip(end.parse::<Nid>().ok())
            .and_then(|(s, e)| NidRange::new(s, e).ok());
        match typed {
            Some(r) => nm.ranges.push(r),
            None => nm.raw_ranges.push(RawNidRange {
                id,
                start: start.to_owned(),
                end: end.to_owned(),
            }),
        }
    }
    Ok(())
}

fn parse_fileset(value: &str, nm: &mut Nodemap) {
    let v = value.trim();
    nm.filesets.clear();
    if v.starts_with('[') {
        for g in brace_groups(v) {
            let read_only = get(&g, "mode") == Some("ro");
            if let Some(p) = get(&g, "primary") {
                nm.filesets.push(FilesetEntry {
                    path: p.to_owned(),
                    primary: true,
                    read_only,
                });
            } else if let Some(p) = get(&g, "alternate") {
                nm.filesets.push(FilesetEntry {
                    path: p.to_owned(),
                    primary: false,
                    read_only,
                });
            }
        }
    } else if !v.is_empty() {
        nm.filesets.push(FilesetEntry {
            path: v.to_owned(),
            primary: true,
            read_only: false,
        });
    }
    nm.fileset = nm
        .filesets
        .iter()
        .find(|f| f.primary)
        .map(|f| f.path.clone());
}

fn non_empty(v: &str) -> Option<String> {
    let t = v.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

fn apply_param(nm: &mut Nodemap, param: &str, value: &str, line: usize) -> Result<(), ParseError> {
    match param {
        "id" => nm.id = parse_u32(value, line, param)?,
        "admin_nodemap" => nm.admin = parse_bool(value, line, param)?,
        "trusted_nodemap" => nm.trusted = parse_bool(value, line, param)?,
        "deny_unknown" => nm.deny_unknown = parse_bool(value, line, param)?,
        "squash_uid" => nm.squash_uid = Some(parse_u32(value, line, param)?),
        "squash_gid" => nm.squash_gid = Some(parse_u32(value, line, param)?),
        "squash_projid" => nm.squash_projid = Some(parse_u32(value, line, param)?),
        "readonly_mount" => nm.readonly_mount = Some(parse_bool(value, line, param)?),
        "audit_mode" => nm.audit_mode = Some(parse_bool(value, line, param)?),
        "forbid_encryption" => nm.forbid_encryption = Some(parse_bool(value, line, param)?),
        "deny_mount" => nm.deny_mount = Some(parse_bool(value, line, param)?),
        "map_mode" => nm.map_mode = non_empty(value),
        "rbac" => nm.rbac = non_empty(value),
        "parent" => nm.parent = non_empty(value),
        "sepol" => nm.sepol = non_empty(value),
        "idmap" => nm.idmaps = parse_idmaps(value, line)?,
        "ranges" => parse_ranges(value, line, nm)?,
        "fileset" => parse_fileset(value, nm),
        _ => {}
    }
    Ok(())
}

/// Parses the concatenated output of `lctl get_param nodemap.active nodemap.*.*`
/// (any order; multi-line values follow a `name=` line).
pub fn parse_nodemap_params(text: &str) -> Result<NodemapState, ParseError> {
    let mut state = NodemapState::default();
    let mut index: HashMap<&str, usize> = HashMap::new();
    // (name, line, value) of each parameter, collected first so multi-line values are whole.
    let mut params: Vec<(&str, usize, String)> = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if let Some((name, value)) = param_start(line) {
            params.push((name, idx + 1, value.to_owned()));
        } else if let Some(last) = params.last_mut() {
            last.2.push('\n');
            last.2.push_str(line);
        } else if !line.trim().is_empty() {
            return Err(ParseError::new(
                WHAT,
                idx + 1,
                format!("expected `nodemap.<name>.<param>=<value>`, got {line:?}"),
            ));
        }
    }
    for (name, line, value) in params {
        let mut parts = name.splitn(3, '.').skip(1);
        let (first, second) = (parts.next().unwrap_or(""), parts.next());
        match second {
            None if first == "active" => state.active = parse_bool(&value, line, name)?,
            None => {} // 2.12 write-only entries such as nodemap.add_nodemap
            Some(param) => {
                if first.is_empty() {
                    return Err(ParseError::new(
                        WHAT,
                        line,
                        format!("empty nodemap name in {name:?}"),
                    ));
                }
                let pos = *index.entry(first).or_insert_with(|| {
                    state.nodemaps.push(Nodemap {
                        name: first.to_owned(),
                        ..Nodemap::default()
                    });
                    state.nodemaps.len() - 1
                });
                if let Some(nm) = state.nodemaps.get_mut(pos) {
                    apply_param(nm, param, &value, line)?;
                }
            }
        }
    }
    Ok(state)
}

/// Parses `lctl nodemap_info [list]` (≤2.16: `nodemap.<name>` lines) or
/// `lctl nodemap_info --list` (2.17+: the `Defined nodemaps:` section) into names.
pub fn parse_nodemap_info_list(text: &str) -> Result<Vec<String>, ParseError> {
    let mut names = Vec::new();
    let mut in_defined = false;
    let mut saw_217 = false;
    for (idx, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let t = line.trim();
        if t.is_empty() {
            in_defined = false;
            continue;
        }
        if t.ends_with(':') && !line.starts_with(char::is_whitespace) {
            saw_217 = true;
            in_defined = t == "Defined nodemaps:";
            continue;
        }
        if saw_217 {
            if in_defined {
                names.push(t.to_owned());
            }
            continue;
        }
        let name = t
            .strip_prefix("nodemap.")
            .map(|n| n.trim_end_matches('/'))
            .filter(|n| !n.is_empty() && !n.contains('.') && !n.contains(char::is_whitespace))
            .ok_or_else(|| {
                ParseError::new(
                    WHAT_INFO,
                    idx + 1,
                    format!("expected `nodemap.<name>`, got {t:?}"),
                )
            })?;
        if name != "active" {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nid::LNet;
    use proptest::prelude::*;

    // Rendered ≤2.16 get_param output (formats from lctl-nodemap.md (b); the range and
    // idmap entries are the Lustre manual's BirdResearchSite sample, (c)).
    const V216: &str = "\
nodemap.active=1
nodemap.BirdResearchSite.admin_nodemap=0
nodemap.BirdResearchSite.audit_mode=1
nodemap.BirdResearchSite.deny_unknown=1
nodemap.BirdResearchSite.exports=
[
 { nid: 192.168.0.100@tcp, uuid: 1a2b-c3d4 }, { nid: 192.168.0.101@tcp, uuid: 5e6f },
]
nodemap.BirdResearchSite.fileset=/dir1
nodemap.BirdResearchSite.forbid_encryption=0
nodemap.BirdResearchSite.id=1
nodemap.BirdResearchSite.idmap=
[
 { idtype: uid, client_id: 530, fs_id: 11000 },
 { idtype: uid, client_id: 531, fs_id: 11001 },
 { idtype: gid, client_id: 600, fs_id: 11000 }
]
nodemap.BirdResearchSite.map_mode=all
nodemap.BirdResearchSite.ranges=
[
 { id: 11, start_nid: 192.168.0.100@tcp, end_nid: 192.168.0.100@tcp }
]
nodemap.BirdResearchSite.rbac=file_perms,dne_ops,quota_ops,byfid_ops,chlg_ops,fscrypt_admin
nodemap.BirdResearchSite.readonly_mount=0
nodemap.BirdResearchSite.sepol=
nodemap.BirdResearchSite.squash_gid=65534
nodemap.BirdResearchSite.squash_projid=65534
nodemap.BirdResearchSite.squash_uid=65534
nodemap.BirdResearchSite.trusted_nodemap=0
nodemap.default.admin_nodemap=0
nodemap.default.fileset=

nodemap.default.id=0
nodemap.default.idmap=
[

]
nodemap.default.ranges=
[

]
nodemap.default.squash_uid=99
nodemap.default.trusted_nodemap=0
";

    // ≤2.16 idmap quirk: no uid maps, so gid/projid entries are glued without separators.
    const QUIRK: &str = "\
nodemap.t1.idmap=
[
 { idtype: gid, client_id: 600, fs_id: 11000 } { idtype: gid, client_id: 601, fs_id: 11001 } { idtype: projid, client_id: 33, fs_id: 1 }
]
";

    // Rendered 2.17+ output: `[]` empties, per-line exports with dev, fileset list.
    const V217: &str = "\
nodemap.active=0
nodemap.c0.admin_nodemap=1
nodemap.c0.child_raise_privileges=none
nodemap.c0.deny_mount=0
nodemap.c0.exports=
[
 { nid: 192.168.0.100@tcp, uuid: 1a2b-c3d4, dev: lustre-MDT0000 },
 { nid: 192.168.0.100@tcp, uuid: 1a2b-c3d4, dev: lustre-OST0000 }
]
nodemap.c0.fileset=
[
 { primary:     /dir0 },
 { alternate:   /dir2 },
 { alternate:   /dir3, mode: ro }
]
nodemap.c0.id=3
nodemap.c0.idmap=[]
nodemap.c0.offset=
{
 start_uid: 0,
 limit_uid: 0,
 start_gid: 0,
 limit_gid: 0,
 start_projid: 0,
 limit_projid: 0
}
nodemap.c0.parent=default
nodemap.c0.ranges=
[
 { id: 1, start_nid: 10.0.0.0@o2ib3, end_nid: 10.0.255.255@o2ib3 },
 { id: 2, start_nid: 0@lo, end_nid: 0@lo }
]
nodemap.c0.rbac=all
nodemap.c0.banlist=[]
nodemap.c0.some_future_param=whatever
nodemap.c0.trusted_nodemap=1
";

    #[test]
    fn v216() {
        let s = parse_nodemap_params(V216).unwrap();
        assert!(s.active);
        assert_eq!(s.nodemaps.len(), 2);
        let b = s.nodemaps.first().unwrap();
        assert_eq!(b.name, "BirdResearchSite");
        assert_eq!(b.id, 1);
        assert!(b.deny_unknown && !b.admin && !b.trusted);
        assert_eq!(b.fileset.as_deref(), Some("/dir1"));
        assert_eq!(b.idmaps.len(), 3);
        assert_eq!(
            b.idmaps.get(2),
            Some(&IdMap {
                idtype: IdType::Gid,
                client_id: 600,
                fs_id: 11000
            })
        );
        assert_eq!(
            b.ranges,
            vec![NidRange::single("192.168.0.100@tcp".parse().unwrap())]
        );
        assert_eq!(b.squash_uid, Some(65534));
        assert_eq!(b.readonly_mount, Some(false));
        assert_eq!(b.rbac.as_deref().map(|r| r.split(',').count()), Some(6));
        assert_eq!(b.sepol, None);
        let d = s.nodemaps.get(1).unwrap();
        assert_eq!(d.name, "default");
        assert_eq!(d.fileset, None);
        assert!(d.idmaps.is_empty() && d.ranges.is_empty());
        assert_eq!(d.squash_uid, Some(99));
        assert_eq!(d.readonly_mount, None);
    }

    #[test]
    fn idmap_quirk() {
        let s = parse_nodemap_params(QUIRK).unwrap();
        let m = &s.nodemaps.first().unwrap().idmaps;
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(2).unwrap().idtype, IdType::Projid);
        assert!(!s.active);
    }

    #[test]
    fn v217() {
        let s = parse_nodemap_params(V217).unwrap();
        assert!(!s.active);
        let c = s.nodemaps.first().unwrap();
        assert_eq!(c.fileset.as_deref(), Some("/dir0"));
        assert_eq!(c.filesets.len(), 3);
        assert!(c.filesets.get(2).unwrap().read_only);
        assert!(!c.filesets.get(1).unwrap().primary);
        assert!(c.idmaps.is_empty());
        assert_eq!(c.parent.as_deref(), Some("default"));
        assert_eq!(c.ranges.len(), 1);
        assert_eq!(
            c.ranges.first().unwrap().to_lctl_expr().unwrap(),
            "10.0.[0-255].[0-255]@o2ib3"
        );
        assert_eq!(
            c.ranges.first().unwrap().start.net,
            "o2ib3".parse::<LNet>().unwrap()
        );
        assert_eq!(c.raw_ranges.len(), 1);
        assert_eq!(c.raw_ranges.first().unwrap().start, "0@lo");
        assert_eq!(c.deny_mount, Some(false));
        assert!(c.admin && c.trusted);
    }

    #[test]
    fn errors() {
        assert!(parse_nodemap_params("garbage\n").is_err());
        let e = parse_nodemap_params("nodemap.x.admin_nodemap=yes\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.to_string().contains("yes"));
        assert!(
            parse_nodemap_params("nodemap.x.idmap=[ { idtype: foo, client_id: 1, fs_id: 2 } ]\n")
                .is_err()
        );
        assert_eq!(parse_nodemap_params("").unwrap(), NodemapState::default());
    }

    #[test]
    fn info_list() {
        // ≤2.16 `lctl nodemap_info list`
        let v = parse_nodemap_info_list("nodemap.BirdResearchSite\nnodemap.default\n").unwrap();
        assert_eq!(v, ["BirdResearchSite", "default"]);
        // 2.17 `--list` (lctl-nodemap.md (b))
        let t = "Global nodemap state:\n\tactive\n\nDefined nodemaps:\n\tdefault\n\tc0\n\nAvailable nodemap parameters:\n\tadmin_nodemap        root is not squashed on policy group\n\taudit_mode           client can record FS access events to the Changelogs\n";
        assert_eq!(parse_nodemap_info_list(t).unwrap(), ["default", "c0"]);
        assert!(parse_nodemap_info_list("error: nodemap_info: cannot find nodemap x\n").is_err());
    }

    #[test]
    fn rbac_values_follow_kernel_order() {
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(rbac_value(&[]).unwrap(), "none");
        assert_eq!(
            rbac_value(&roles(&["fscrypt_admin", "file_perms", "file_perms"])).unwrap(),
            "file_perms,fscrypt_admin"
        );
        assert!(rbac_value(&roles(&["root"])).unwrap_err().contains("root"));
        assert_eq!(
            rbac_value(&roles(RBAC_ROLES_216)).unwrap(),
            RBAC_ROLES_216.join(",")
        );
    }

    proptest! {
        #[test]
        fn rbac_value_is_ordered_and_reparses(picks in proptest::collection::vec(0usize..15, 0..10)) {
            let roles: Vec<String> = picks.iter().filter_map(|i| RBAC_ROLES_MASTER.get(*i)).map(|s| s.to_string()).collect();
            let value = rbac_value(&roles).unwrap();
            let text = format!("nodemap.t.rbac={value}\n");
            let parsed = parse_nodemap_params(&text).unwrap();
            prop_assert_eq!(parsed.nodemaps.first().and_then(|m| m.rbac.clone()), Some(value.clone()));
            if value != "none" {
                let again: Vec<String> = value.split(',').map(str::to_string).collect();
                prop_assert_eq!(rbac_value(&again).unwrap(), value);
            }
        }

        #[test]
        fn never_panic(s in any::<String>()) {
            let _ = parse_nodemap_params(&s);
            let _ = parse_nodemap_info_list(&s);
        }

        #[test]
        fn never_panic_structured(lines in proptest::collection::vec(
            "(nodemap\\.[a-z]{1,3}\\.(idmap|ranges|fileset|id|squash_uid)=)?[\\[\\]{}:, a-z0-9@./]{0,40}", 0..10)) {
            let _ = parse_nodemap_params(&lines.join("\n"));
        }

        #[test]
        fn idmap_roundtrip(maps in proptest::collection::vec((0u8..3, any::<u32>(), any::<u32>()), 0..6)) {
            let entries: Vec<IdMap> = maps.iter().map(|(t, c, f)| IdMap {
                idtype: match t { 0 => IdType::Uid, 1 => IdType::Gid, _ => IdType::Projid },
                client_id: *c, fs_id: *f }).collect();
            let body: Vec<String> = entries.iter().map(|m| format!(" {{ idtype: {}, client_id: {}, fs_id: {} }}", m.idtype.as_str(), m.client_id, m.fs_id)).collect();
            let text = format!("nodemap.n.idmap=\n[\n{}\n]\n", body.join(",\n"));
            let s = parse_nodemap_params(&text).unwrap();
            prop_assert_eq!(&s.nodemaps.first().unwrap().idmaps, &entries);
        }
    }
}
