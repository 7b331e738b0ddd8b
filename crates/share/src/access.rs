//! Access rules become nodemaps: a desired state per share, diffed against the live one.
//!
//! Each share has at most two nodemaps, `lk<project>rw` and `lk<project>ro` (names stay within
//! Lustre's 16 characters and are unique because project IDs are). Every one of them locks
//! clients to the share's fileset and sets `deny_unknown`; read-only maps also squash every
//! user (`trusted=0`) and force read-only mounts. Changes are ordered so a client never gains
//! access before its restrictions are in place: create, fileset, properties, then ranges;
//! removal takes ranges out before the map goes.

use backend::NodemapChange;
use lustre_model::{IdMap, NidRange, Nodemap, NodemapName, NodemapState, ProjectId, RelPath};

use crate::model::{AccessLevel, AccessRule};
use crate::{Result, ShareError};

/// The squash ID of Lustre 2.16+ (`nobody`).
pub const SQUASH_ID: u32 = 65534;

/// One nodemap as the share service wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodemapSpec {
    pub name: NodemapName,
    pub fileset: String,
    pub properties: Vec<(&'static str, String)>,
    pub ranges: Vec<NidRange>,
    /// Client-to-filesystem ID maps (tenants'; share maps have none).
    pub idmaps: Vec<IdMap>,
}

pub fn nodemap_name(project: ProjectId, level: AccessLevel) -> Result<NodemapName> {
    Ok(NodemapName::new(&format!(
        "lk{}{}",
        project.get(),
        level.as_str()
    ))?)
}

/// The nodemaps a share's rules call for (none when it has no rules).
pub fn desired(
    project: ProjectId,
    share_path: &RelPath,
    rules: &[AccessRule],
    root_squash: bool,
) -> Result<Vec<NodemapSpec>> {
    let mut specs = Vec::new();
    for level in [AccessLevel::Rw, AccessLevel::Ro] {
        let ranges: Vec<NidRange> = rules
            .iter()
            .filter(|r| r.level == level)
            .map(|r| r.nid_range)
            .collect();
        if ranges.is_empty() {
            continue;
        }
        let (admin, trusted, readonly) = match level {
            AccessLevel::Rw => (!root_squash, true, false),
            AccessLevel::Ro => (false, false, true),
        };
        let flag = |b: bool| if b { "1" } else { "0" }.to_string();
        let mut properties = vec![
            ("deny_unknown", flag(true)),
            ("admin", flag(admin)),
            ("trusted", flag(trusted)),
            ("squash_uid", SQUASH_ID.to_string()),
            ("squash_gid", SQUASH_ID.to_string()),
        ];
        if readonly {
            properties.push(("readonly_mount", flag(true)));
        }
        specs.push(NodemapSpec {
            name: nodemap_name(project, level)?,
            fileset: format!("/{}", share_path.as_str()),
            properties,
            ranges,
            idmaps: Vec::new(),
        });
    }
    Ok(specs)
}

fn live_property(map: &Nodemap, property: &str) -> Option<String> {
    let flag = |b: bool| if b { "1" } else { "0" }.to_string();
    match property {
        "deny_unknown" => Some(flag(map.deny_unknown)),
        "admin" => Some(flag(map.admin)),
        "trusted" => Some(flag(map.trusted)),
        "squash_uid" => map.squash_uid.map(|v| v.to_string()),
        "squash_gid" => map.squash_gid.map(|v| v.to_string()),
        "readonly_mount" => map.readonly_mount.map(flag),
        "rbac" => map.rbac.clone(),
        _ => None,
    }
}

/// Refuses desired ranges that overlap a nodemap not in `own` (a NID is in one nodemap only).
pub fn check_conflicts(
    live: &NodemapState,
    own: &[NodemapName],
    desired: &[NodemapSpec],
) -> Result<()> {
    for spec in desired {
        for range in &spec.ranges {
            if let Some(other) = live.nodemaps.iter().find(|m| {
                !own.iter().any(|o| o.as_str() == m.name)
                    && m.ranges.iter().any(|r| r.overlaps(range))
            }) {
                return Err(ShareError::AccessConflict {
                    rule: range.to_string(),
                    nodemap: other.name.clone(),
                });
            }
        }
    }
    // Two levels of one share may not claim the same clients either.
    for (i, a) in desired.iter().enumerate() {
        for b in desired.iter().skip(i + 1) {
            if let Some(range) = a
                .ranges
                .iter()
                .find(|r| b.ranges.iter().any(|s| s.overlaps(r)))
            {
                return Err(ShareError::AccessConflict {
                    rule: range.to_string(),
                    nodemap: b.name.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The ordered changes that turn the live nodemaps named in `own` into `desired`:
/// maps and their restrictions first, then every range removal, then every range addition (a
/// client moving between a share's maps leaves one before it joins the other), then the
/// removal of maps no longer wanted.
pub fn plan(
    live: &NodemapState,
    own: &[NodemapName],
    desired: &[NodemapSpec],
    activate: bool,
) -> Vec<NodemapChange> {
    let find = |name: &NodemapName| live.nodemaps.iter().find(|m| m.name == name.as_str());
    let mut setup = Vec::new();
    let mut removals = Vec::new();
    let mut additions = Vec::new();
    let mut deletions = Vec::new();
    for spec in desired {
        let name = spec.name.clone();
        let current = find(&name);
        if current.is_none() {
            setup.push(NodemapChange::Create { name: name.clone() });
        }
        if current.and_then(|m| m.fileset.as_deref()) != Some(spec.fileset.as_str()) {
            setup.push(NodemapChange::SetFileset {
                name: name.clone(),
                fileset: Some(spec.fileset.clone()),
            });
        }
        for (property, value) in &spec.properties {
            if current.and_then(|m| live_property(m, property)).as_deref() != Some(value.as_str()) {
                setup.push(NodemapChange::SetProperty {
                    name: name.clone(),
                    property: (*property).to_string(),
                    value: value.clone(),
                });
            }
        }
        // ID maps are restrictions too: in place before any client joins.
        let live_idmaps: &[IdMap] = current.map(|m| m.idmaps.as_slice()).unwrap_or(&[]);
        for idmap in live_idmaps.iter().filter(|m| !spec.idmaps.contains(m)) {
            setup.push(NodemapChange::DelIdmap {
                name: name.clone(),
                idmap: *idmap,
            });
        }
        for idmap in spec.idmaps.iter().filter(|m| !live_idmaps.contains(m)) {
            setup.push(NodemapChange::AddIdmap {
                name: name.clone(),
                idmap: *idmap,
            });
        }
        let live_ranges: &[NidRange] = current.map(|m| m.ranges.as_slice()).unwrap_or(&[]);
        for range in live_ranges.iter().filter(|r| !spec.ranges.contains(r)) {
            removals.push(NodemapChange::DelRange {
                name: name.clone(),
                range: *range,
            });
        }
        for range in spec.ranges.iter().filter(|r| !live_ranges.contains(r)) {
            additions.push(NodemapChange::AddRange {
                name: name.clone(),
                range: *range,
            });
        }
    }
    for name in own
        .iter()
        .filter(|n| !desired.iter().any(|s| &s.name == *n))
    {
        if let Some(map) = find(name) {
            for range in &map.ranges {
                removals.push(NodemapChange::DelRange {
                    name: name.clone(),
                    range: *range,
                });
            }
            deletions.push(NodemapChange::Delete { name: name.clone() });
        }
    }
    let mut changes = setup;
    changes.extend(removals);
    changes.extend(additions);
    changes.extend(deletions);
    if activate && !desired.is_empty() && !live.active {
        changes.push(NodemapChange::Activate { active: true });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use lustre_model::LNet;

    fn rule(to: &str, level: AccessLevel) -> AccessRule {
        AccessRule {
            to: to.to_string(),
            level,
            nid_range: NidRange::from_cidr(to, LNet::TCP).unwrap(),
        }
    }

    fn project() -> ProjectId {
        ProjectId::new(42).unwrap()
    }

    fn own() -> Vec<NodemapName> {
        vec![
            nodemap_name(project(), AccessLevel::Rw).unwrap(),
            nodemap_name(project(), AccessLevel::Ro).unwrap(),
        ]
    }

    fn empty() -> NodemapState {
        NodemapState {
            active: false,
            nodemaps: vec![Nodemap {
                name: "default".into(),
                ..Nodemap::default()
            }],
        }
    }

    #[test]
    fn a_new_map_is_restricted_before_any_client_joins_it() {
        let path = RelPath::parse("shares/web").unwrap();
        let desired = desired(
            project(),
            &path,
            &[rule("10.0.0.0/24", AccessLevel::Ro)],
            true,
        )
        .unwrap();
        let changes = plan(&empty(), &own(), &desired, true);
        let first_range = changes
            .iter()
            .position(|c| matches!(c, NodemapChange::AddRange { .. }))
            .unwrap();
        let last_setup = changes
            .iter()
            .rposition(|c| {
                matches!(
                    c,
                    NodemapChange::SetFileset { .. } | NodemapChange::SetProperty { .. }
                )
            })
            .unwrap();
        assert!(last_setup < first_range, "{changes:?}");
        assert!(matches!(changes[0], NodemapChange::Create { .. }));
        assert!(matches!(
            changes.last(),
            Some(NodemapChange::Activate { active: true })
        ));
        assert!(changes.iter().any(
            |c| matches!(c, NodemapChange::SetProperty { property, value, .. }
            if property == "readonly_mount" && value == "1")
        ));
        assert!(changes.iter().any(
            |c| matches!(c, NodemapChange::SetFileset { fileset: Some(f), .. }
            if f == "/shares/web")
        ));
    }

    #[test]
    fn no_rules_removes_ranges_then_the_maps_and_an_unchanged_state_plans_nothing() {
        let path = RelPath::parse("shares/web").unwrap();
        let want = desired(project(), &path, &[rule("10.0.0.1", AccessLevel::Rw)], true).unwrap();
        // Apply the plan to a model of the live state, as a backend would.
        let mut live = empty();
        live.nodemaps.push(Nodemap {
            name: "lk42rw".into(),
            fileset: Some("/shares/web".into()),
            deny_unknown: true,
            trusted: true,
            squash_uid: Some(SQUASH_ID),
            squash_gid: Some(SQUASH_ID),
            ranges: vec![NidRange::from_cidr("10.0.0.1", LNet::TCP).unwrap()],
            ..Nodemap::default()
        });
        assert!(plan(&live, &own(), &want, false).is_empty());
        let changes = plan(&live, &own(), &[], false);
        assert!(
            matches!(
                changes.as_slice(),
                [NodemapChange::DelRange { .. }, NodemapChange::Delete { .. }]
            ),
            "{changes:?}"
        );
    }

    #[test]
    fn conflicts_with_foreign_maps_and_between_levels_are_found() {
        let path = RelPath::parse("shares/web").unwrap();
        let mut live = empty();
        live.nodemaps.push(Nodemap {
            name: "site".into(),
            ranges: vec![NidRange::from_cidr("10.9.0.0/16", LNet::TCP).unwrap()],
            ..Nodemap::default()
        });
        let want = desired(project(), &path, &[rule("10.9.1.1", AccessLevel::Rw)], true).unwrap();
        assert!(matches!(
            check_conflicts(&live, &own(), &want),
            Err(ShareError::AccessConflict { .. })
        ));
        let both = desired(
            project(),
            &path,
            &[
                rule("10.1.0.0/24", AccessLevel::Rw),
                rule("10.1.0.7", AccessLevel::Ro),
            ],
            true,
        )
        .unwrap();
        assert!(check_conflicts(&empty(), &own(), &both).is_err());
    }
}
