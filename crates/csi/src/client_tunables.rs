//! Client tunables held on this node while volumes that set them are published
//! (`clientTunables`): the first publish of a tunable saves each client device's value and
//! sets the class's; later publishes that agree only count themselves in; a publish that
//! disagrees with what is in force is refused (FAILED_PRECONDITION), so two StorageClasses
//! never race for one node silently; the last unpublish puts the saved values back.
//!
//! The count lives in a small JSON file on the node (written atomically, the saved values
//! before any `set_param`), so a restarted node plugin still restores, and a crash between
//! steps leaves the old values on record. Holders are `volume ID + target path`: one volume
//! published to two pods on a node holds twice.
//!
//! The same count serves other things a publish puts on the node and the last unpublish
//! takes away, by name ([`NodeTunables::hold_resource`]): an encrypted volume's key added to
//! the filesystem (see [`crate::encryption`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use backend::ClientParams;
use lustre_model::{ClientTunable, ClientTunables, ParamValue};
use serde::{Deserialize, Serialize};

use crate::error::{CsiError, Result};

/// One tunable in force on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Held {
    tunable: ClientTunable,
    /// Who holds it (`<volume ID> <target>`).
    holders: BTreeSet<String>,
    /// Each device's value before we set it, to put back at the last release.
    saved: Vec<ParamValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// By tunable key (`llite.max_read_ahead_mb`).
    held: BTreeMap<String, Held>,
    /// Other things held on the node, by name: who holds each.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    resources: BTreeMap<String, BTreeSet<String>>,
}

/// The node's record of held tunables; see the module doc.
pub struct NodeTunables {
    /// Where the record is kept; `None` keeps it in memory only (tests).
    file: Option<PathBuf>,
    /// Serializes holds and releases; held across bounded `lctl` calls only (each has the
    /// runner's timeout).
    state: tokio::sync::Mutex<Option<State>>,
}

/// The name of the record file in the node state directory.
pub const FILE_NAME: &str = "client-tunables.json";

impl NodeTunables {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            file: dir.map(|d| d.join(FILE_NAME)),
            state: tokio::sync::Mutex::new(None),
        }
    }

    /// The holder key of a publish.
    pub fn holder(volume_id: &str, target: &std::path::Path) -> String {
        format!("{volume_id} {}", target.display())
    }

    async fn load(&self) -> Result<State> {
        crate::node_record::read(self.file.clone(), "tunables record").await
    }

    async fn save(&self, state: &State) -> Result<()> {
        crate::node_record::write(self.file.clone(), state, "tunables record").await
    }

    /// Holds `tunables` for `holder`: nothing is set when any of them disagrees with a value
    /// another volume holds on this node. Holding again is a no-op.
    pub async fn hold(
        &self,
        client: &dyn ClientParams,
        holder: &str,
        tunables: &ClientTunables,
    ) -> Result<()> {
        if tunables.is_empty() {
            return Ok(());
        }
        let mut guard = self.state.lock().await;
        let mut state = match guard.take() {
            Some(state) => state,
            None => self.load().await?,
        };
        // A republish (kubelet's periodic one) of a holder that holds all of it already.
        let held_already = tunables.iter().all(|t| {
            state
                .held
                .get(&t.key())
                .is_some_and(|h| h.tunable.value == t.value && h.holders.contains(holder))
        });
        if held_already {
            *guard = Some(state);
            return Ok(());
        }
        if let Some(conflict) = conflict(&state, holder, tunables) {
            *guard = Some(state);
            return Err(conflict);
        }
        let res = self.set_all(client, holder, tunables, &mut state).await;
        if res.is_err() {
            // Undo what this hold did, so a failed publish holds nothing.
            let _ = self.release_in(client, holder, &mut state).await;
        }
        *guard = Some(state);
        res
    }

    async fn set_all(
        &self,
        client: &dyn ClientParams,
        holder: &str,
        tunables: &ClientTunables,
        state: &mut State,
    ) -> Result<()> {
        for t in tunables.iter() {
            // Devices new since the last set (a mount made since) get their value saved
            // too: every device we change is put back.
            let now = client.client_param_values(t).await?;
            let held = state.held.entry(t.key()).or_insert_with(|| Held {
                tunable: t.clone(),
                holders: BTreeSet::new(),
                saved: Vec::new(),
            });
            held.tunable = t.clone();
            for value in now {
                if !held.saved.iter().any(|s| s.name == value.name) {
                    held.saved.push(value);
                }
            }
            held.holders.insert(holder.to_string());
            // On record before the change: a crash after it still restores.
            self.save(state).await?;
            client.set_client_tunable(t).await?;
            tracing::info!(tunable = %t, holder, "client tunable set");
        }
        Ok(())
    }

    /// Lets go of everything `holder` holds; a tunable nobody holds any more gets each
    /// device's saved value back. Releasing what is not held is a no-op.
    pub async fn release(&self, client: &dyn ClientParams, holder: &str) -> Result<()> {
        let mut guard = self.state.lock().await;
        let mut state = match guard.take() {
            Some(state) => state,
            None => self.load().await?,
        };
        let res = self.release_in(client, holder, &mut state).await;
        *guard = Some(state);
        res
    }

    async fn release_in(
        &self,
        client: &dyn ClientParams,
        holder: &str,
        state: &mut State,
    ) -> Result<()> {
        let keys: Vec<String> = state
            .held
            .iter()
            .filter(|(_, h)| h.holders.contains(holder))
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        for key in keys {
            let Some(held) = state.held.get_mut(&key) else {
                continue;
            };
            held.holders.remove(holder);
            if held.holders.is_empty() {
                for value in &held.saved {
                    client.restore_client_param(value).await?;
                }
                tracing::info!(tunable = %held.tunable, "client tunable restored");
                state.held.remove(&key);
            }
            self.save(state).await?;
        }
        Ok(())
    }

    /// Holds resource `name` for `holder`: `acquire` runs under the record's lock (so a
    /// last release cannot undo it half-way) on every hold, since putting it in place again
    /// must be harmless and the node may have lost it (a reboot); then the holder counts in.
    pub async fn hold_resource<F, Fut>(&self, name: &str, holder: &str, acquire: F) -> Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let mut guard = self.state.lock().await;
        let mut state = match guard.take() {
            Some(state) => state,
            None => self.load().await?,
        };
        let res = async {
            acquire().await?;
            state
                .resources
                .entry(name.to_string())
                .or_default()
                .insert(holder.to_string());
            self.save(&state).await
        }
        .await;
        *guard = Some(state);
        res
    }

    /// Lets go of every resource `holder` holds; `release(name)` runs for each one nobody
    /// holds any more. When it fails, the holder stays on record, so a retry tries again.
    pub async fn release_resources<F, Fut>(&self, holder: &str, mut release: F) -> Result<()>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let mut guard = self.state.lock().await;
        let mut state = match guard.take() {
            Some(state) => state,
            None => self.load().await?,
        };
        let res = async {
            let names: Vec<String> = state
                .resources
                .iter()
                .filter(|(_, holders)| holders.contains(holder))
                .map(|(name, _)| name.clone())
                .collect();
            for name in names {
                let last = state
                    .resources
                    .get(&name)
                    .is_some_and(|holders| holders.len() == 1);
                if last {
                    release(name.clone()).await?;
                    state.resources.remove(&name);
                } else if let Some(holders) = state.resources.get_mut(&name) {
                    holders.remove(holder);
                }
                self.save(&state).await?;
            }
            Ok(())
        }
        .await;
        *guard = Some(state);
        res
    }

    /// How many hold resource `name` on this node.
    pub async fn resource_holders(&self, name: &str) -> Result<usize> {
        let mut guard = self.state.lock().await;
        let state = match guard.take() {
            Some(state) => state,
            None => self.load().await?,
        };
        let n = state.resources.get(name).map_or(0, BTreeSet::len);
        *guard = Some(state);
        Ok(n)
    }

    /// What is in force, for tests and diagnostics: `class.param=value` by key.
    pub async fn in_force(&self) -> Result<BTreeMap<String, (String, usize)>> {
        let mut guard = self.state.lock().await;
        let state = match guard.take() {
            Some(state) => state,
            None => self.load().await?,
        };
        let out = state
            .held
            .iter()
            .map(|(k, h)| (k.clone(), (h.tunable.value.clone(), h.holders.len())))
            .collect();
        *guard = Some(state);
        Ok(out)
    }
}

/// The refusal of `holder`'s `tunables` when one disagrees with a value another volume
/// holds on this node.
fn conflict(state: &State, holder: &str, tunables: &ClientTunables) -> Option<CsiError> {
    tunables.iter().find_map(|t| {
        let held = state.held.get(&t.key())?;
        let others: Vec<&str> = held
            .holders
            .iter()
            .filter(|h| *h != holder)
            .filter_map(|h| h.split(' ').next())
            .collect();
        (held.tunable.value != t.value && !others.is_empty()).then(|| {
            CsiError::FailedPrecondition(format!(
                "client tunable {}: this volume's StorageClass sets {}, but volume {} on this \
                 node holds it at {}; StorageClasses published on one node must agree",
                t.key(),
                t.value,
                others.join(", "),
                held.tunable.value,
            ))
        })
    })
}
