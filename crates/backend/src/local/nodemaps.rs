//! Nodemaps on the local backend: the same desired-state model as Lustre, kept in a state file
//! under the root. Nothing in the kernel enforces them; the node plugin checks a client's
//! address against them at publish time, and the capabilities say so.

use async_trait::async_trait;
use std::io::Read;

use lustre_model::{Nodemap, NodemapState, RelPath};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};

use super::{LocalBackend, beneath};
use std::os::fd::AsFd;

use crate::{BackendError, NodemapChange, Result};

const STATE_DIR: &str = ".lustrekit";
const STATE_FILE: &str = ".lustrekit/nodemaps.json";
const LOCK_FILE: &str = ".lustrekit/nodemaps.lock";

fn rel(s: &str) -> RelPath {
    // These are fixed, valid paths.
    RelPath::parse(s).unwrap_or_else(|_| unreachable!("{s} is a valid relative path"))
}

fn errno(path: &str, e: Errno) -> BackendError {
    BackendError::io(path, std::io::Error::from(e))
}

fn default_nodemap() -> Nodemap {
    Nodemap {
        name: "default".to_string(),
        id: 0,
        ..Nodemap::default()
    }
}

fn empty_state() -> NodemapState {
    NodemapState {
        active: false,
        nodemaps: vec![default_nodemap()],
    }
}

/// Reads the state; a missing file is the state of a fresh Lustre (inactive, `default` only).
pub fn load(root: std::os::fd::BorrowedFd<'_>) -> Result<NodemapState> {
    let fd = match beneath::open_file(root, &rel(STATE_FILE), OFlag::O_RDONLY) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(empty_state()),
        Err(e) => return Err(errno(STATE_FILE, e)),
    };
    let mut text = String::new();
    std::fs::File::from(fd)
        .read_to_string(&mut text)
        .map_err(|e| BackendError::io(STATE_FILE, e))?;
    serde_json::from_str(&text).map_err(|e| {
        BackendError::InvalidState(format!("{STATE_FILE} is not a valid nodemap state: {e}"))
    })
}

/// Applies `changes` in order under an exclusive lock, all or nothing: the new state is
/// written only if every change applied.
pub fn apply(root: std::os::fd::BorrowedFd<'_>, changes: &[NodemapChange]) -> Result<()> {
    beneath::mkdir_all(root, &rel(STATE_DIR)).map_err(|e| errno(STATE_DIR, e))?;
    let lock_fd = beneath::open_file(root, &rel(LOCK_FILE), OFlag::O_RDWR | OFlag::O_CREAT)
        .map_err(|e| errno(LOCK_FILE, e))?;
    let _lock = Flock::lock(std::fs::File::from(lock_fd), FlockArg::LockExclusive)
        .map_err(|(_, e)| errno(LOCK_FILE, e))?;
    let mut state = load(root)?;
    for change in changes {
        apply_one(&mut state, change)?;
    }
    let text = serde_json::to_vec_pretty(&state)
        .map_err(|e| BackendError::InvalidState(format!("serialising nodemaps: {e}")))?;
    beneath::write_atomic(root, &rel(STATE_FILE), &text)
        .map_err(|e| BackendError::io(STATE_FILE, e))
}

fn find<'a>(state: &'a mut NodemapState, name: &str) -> Result<&'a mut Nodemap> {
    state
        .nodemaps
        .iter_mut()
        .find(|n| n.name == name)
        .ok_or_else(|| BackendError::NotFound {
            path: format!("nodemap {name}"),
        })
}

fn flag(value: &str) -> Result<bool> {
    match value {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(BackendError::InvalidState(format!(
            "nodemap flag value {other:?} is not 0 or 1"
        ))),
    }
}

fn id(value: &str) -> Result<u32> {
    value.parse().map_err(|_| {
        BackendError::InvalidState(format!("nodemap id value {value:?} is not a number"))
    })
}

fn apply_one(state: &mut NodemapState, change: &NodemapChange) -> Result<()> {
    match change {
        NodemapChange::Create { name } => {
            if !state.nodemaps.iter().any(|n| n.name == name.as_str()) {
                let next_id = state.nodemaps.iter().map(|n| n.id).max().unwrap_or(0) + 1;
                state.nodemaps.push(Nodemap {
                    name: name.as_str().to_string(),
                    id: next_id,
                    squash_uid: Some(65534),
                    squash_gid: Some(65534),
                    ..Nodemap::default()
                });
            }
        }
        NodemapChange::Delete { name } => {
            if name.as_str() == "default" {
                return Err(BackendError::InvalidState(
                    "the default nodemap cannot be deleted".into(),
                ));
            }
            state.nodemaps.retain(|n| n.name != name.as_str());
        }
        NodemapChange::AddRange { name, range } => {
            // As on Lustre, a NID belongs to one nodemap only.
            if let Some(other) = state
                .nodemaps
                .iter()
                .find(|n| n.name != name.as_str() && n.ranges.iter().any(|r| r.overlaps(range)))
            {
                return Err(BackendError::AlreadyExists {
                    path: format!("NID range {range} (in nodemap {})", other.name),
                });
            }
            let map = find(state, name.as_str())?;
            if !map.ranges.contains(range) {
                map.ranges.push(*range);
            }
        }
        NodemapChange::DelRange { name, range } => {
            find(state, name.as_str())?.ranges.retain(|r| r != range);
        }
        NodemapChange::AddIdmap { name, idmap } => {
            let map = find(state, name.as_str())?;
            if !map.idmaps.contains(idmap) {
                map.idmaps.push(*idmap);
            }
        }
        NodemapChange::DelIdmap { name, idmap } => {
            find(state, name.as_str())?.idmaps.retain(|m| m != idmap);
        }
        NodemapChange::SetFileset { name, fileset } => {
            find(state, name.as_str())?.fileset = fileset.clone();
        }
        NodemapChange::SetProperty {
            name,
            property,
            value,
        } => {
            let map = find(state, name.as_str())?;
            match property.as_str() {
                "admin" => map.admin = flag(value)?,
                "trusted" => map.trusted = flag(value)?,
                "deny_unknown" => map.deny_unknown = flag(value)?,
                "readonly_mount" => map.readonly_mount = Some(flag(value)?),
                "squash_uid" => map.squash_uid = Some(id(value)?),
                "squash_gid" => map.squash_gid = Some(id(value)?),
                "squash_projid" => map.squash_projid = Some(id(value)?),
                "map_mode" => map.map_mode = Some(value.clone()),
                "rbac" => map.rbac = Some(value.clone()),
                other => {
                    return Err(BackendError::unsupported(
                        "nodemap property",
                        format!("{other:?} is not a nodemap property the local backend keeps"),
                    ));
                }
            }
        }
        NodemapChange::Activate { active } => state.active = *active,
    }
    Ok(())
}

#[async_trait]
impl crate::Nodemaps for LocalBackend {
    async fn nodemaps(&self) -> Result<NodemapState> {
        self.run(|inner| load(inner.root_fd.as_fd())).await
    }

    async fn apply_nodemap_changes(&self, changes: &[NodemapChange]) -> Result<()> {
        let changes = changes.to_vec();
        self.run(move |inner| apply(inner.root_fd.as_fd(), &changes))
            .await
    }
}
