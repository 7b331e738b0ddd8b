//! An HSM volume's status, as its last policy pass left it: files and bytes by HSM state,
//! when the pass ended, how it went and whether the store answered. The node that runs the
//! volume's policy ([`crate::hsm_node`]) writes it to `<prefix>/.lustrekit/hsm-status/<share>`
//! (outside the share, so no tenant can forge it); `NodeGetVolumeStats` quotes it and the
//! controller copies it onto the PVC's annotations (see the `lustrekit` binary's
//! `pvc_annotations`). DeleteVolume removes it.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hsm::policy::{PassReport, StateSummary};
use lustre_model::{RelPath, ShareName};
use serde::{Deserialize, Serialize};
use share::ShareService;

use crate::error::Result;

/// The status of one HSM volume (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HsmStatus {
    pub volume_id: String,
    /// The node whose plugin ran the pass.
    pub node: String,
    /// When the pass ended (Unix seconds).
    pub pass_at: u64,
    /// `start`, `change` or `interval`.
    pub trigger: String,
    pub states: StateSummary,
    /// Files the pass archived and released.
    pub archived_now: u64,
    pub released_now: u64,
    /// Errors of the pass (files it could not archive or release).
    pub errors: u64,
    /// Whether the store answered its last check.
    pub store_reachable: bool,
}

impl HsmStatus {
    /// The status a pass left.
    pub fn of_pass(
        volume_id: &str,
        node: &str,
        report: &PassReport,
        store_reachable: bool,
        pass_at: u64,
    ) -> Self {
        let done = |op: &str| {
            report
                .actions
                .iter()
                .filter(|a| a.op == op && a.done)
                .count() as u64
        };
        Self {
            volume_id: volume_id.to_string(),
            node: node.to_string(),
            pass_at,
            trigger: report.trigger.clone(),
            states: report.states,
            archived_now: done("archive"),
            released_now: done("release"),
            errors: report.errors.len() as u64,
            store_reachable,
        }
    }

    /// One line for `NodeGetVolumeStats`'s message.
    pub fn summary(&self) -> String {
        let s = &self.states;
        format!(
            "HSM: {} files released ({} bytes), {} archived ({} bytes), {} dirty, {} not archived; last policy pass {} s ago{}{}",
            s.released.files,
            s.released.bytes,
            s.archived.files,
            s.archived.bytes,
            s.dirty.files,
            s.unarchived.files,
            now_secs().saturating_sub(self.pass_at),
            if self.errors > 0 {
                format!(", {} errors", self.errors)
            } else {
                String::new()
            },
            if self.store_reachable {
                ""
            } else {
                ", store unreachable"
            },
        )
    }

    /// The PVC annotations that carry it (`lustrekit.io/hsm-*`).
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let s = &self.states;
        let pass_at = chrono_free_rfc3339(self.pass_at);
        [
            ("released-files", s.released.files.to_string()),
            ("released-bytes", s.released.bytes.to_string()),
            ("archived-files", s.archived.files.to_string()),
            ("archived-bytes", s.archived.bytes.to_string()),
            ("dirty-files", s.dirty.files.to_string()),
            ("dirty-bytes", s.dirty.bytes.to_string()),
            ("unarchived-files", s.unarchived.files.to_string()),
            ("last-policy-pass", pass_at),
            ("policy-errors", self.errors.to_string()),
            ("store-reachable", self.store_reachable.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{ANNOTATION_PREFIX}{k}"), v))
        .collect()
    }
}

/// Now, in Unix seconds (the share service's clock function).
pub use share::now_secs;

/// The prefix of the PVC annotations.
pub const ANNOTATION_PREFIX: &str = "lustrekit.io/hsm-";

/// `secs` since the epoch as RFC 3339 UTC (`2026-12-03T23:59:07Z`).
fn chrono_free_rfc3339(secs: u64) -> String {
    // Civil from days (Howard Hinnant's algorithm): no date crate for one format.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn dir(service: &ShareService) -> Result<RelPath> {
    Ok(service
        .settings()
        .prefix
        .join(&ShareName::new(share::META_DIR)?)
        .join(&ShareName::new("hsm-status")?))
}

/// Writes `share`'s status.
pub async fn write(service: &ShareService, share: &ShareName, status: &HsmStatus) -> Result<()> {
    let dir = dir(service)?;
    let backend = service.backend();
    backend.ensure_dir(&dir).await?;
    let text = serde_json::to_vec(status)
        .map_err(|e| crate::error::CsiError::Internal(format!("HSM status: {e}")))?;
    backend.write_file(&dir.join(share), &text).await?;
    Ok(())
}

/// `share`'s status, `None` when no pass wrote one (or it is unreadable: logged).
pub async fn read(service: &ShareService, share: &ShareName) -> Result<Option<HsmStatus>> {
    let file = dir(service)?.join(share);
    let Some(text) = service.backend().read_file(&file).await? else {
        return Ok(None);
    };
    match serde_json::from_slice(&text) {
        Ok(status) => Ok(Some(status)),
        Err(e) => {
            tracing::warn!(file = %file, error = %e, "unreadable HSM status; ignored");
            Ok(None)
        }
    }
}

/// Every HSM volume's status, by share.
pub async fn read_all(service: &ShareService) -> Result<Vec<(ShareName, HsmStatus)>> {
    let dir = dir(service)?;
    let mut out = Vec::new();
    for name in service.backend().list_dir(&dir).await? {
        // Temporaries of an atomic write and anything else not a share name are skipped.
        let Ok(share) = ShareName::new(&name) else {
            continue;
        };
        if let Some(status) = read(service, &share).await? {
            out.push((share, status));
        }
    }
    Ok(out)
}

/// Removes `share`'s status (its volume is deleted); an absent one is fine.
pub async fn remove(service: &ShareService, share: &ShareName) -> Result<()> {
    let file = dir(service)?.join(share);
    service.backend().remove_file(&file).await?;
    Ok(())
}

/// How often the controller copies the statuses onto the PVCs (each PVC at most once per
/// round, and only when its status changed).
pub const ANNOTATE_EVERY: Duration = Duration::from_secs(30);
/// How long one PVC's annotation may take.
const ANNOTATE_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`PvcAnnotator::annotate`] returns.
pub type AnnotateFuture<'a> =
    Pin<Box<dyn Future<Output = std::result::Result<(), String>> + Send + 'a>>;

/// Sets annotations on a PVC (the binary does it with the Kubernetes API: this crate has no
/// Kubernetes client).
pub trait PvcAnnotator: Send + Sync + std::fmt::Debug {
    /// Merges `annotations` into the PVC `namespace/name`'s.
    fn annotate<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        annotations: &'a BTreeMap<String, String>,
    ) -> AnnotateFuture<'a>;
}

/// The controller's loop: every `every`, [`annotate_once`] (see the module doc). Runs until
/// the process ends.
pub async fn annotate_pvcs(
    service: Arc<ShareService>,
    annotator: Arc<dyn PvcAnnotator>,
    every: Duration,
) {
    let mut sent = HashMap::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = annotate_once(&service, annotator.as_ref(), &mut sent).await {
            tracing::warn!(error = %e, "copying HSM statuses to PVCs failed; retrying later");
        }
    }
}

/// Copies each HSM volume's status onto its PVC (named by the share's `pvc` label, from
/// the provisioner's `--extra-create-metadata`) where it changed since `sent`; returns how
/// many PVCs it annotated. A PVC that cannot be annotated is logged and tried next round.
pub async fn annotate_once(
    service: &ShareService,
    annotator: &dyn PvcAnnotator,
    sent: &mut HashMap<String, BTreeMap<String, String>>,
) -> Result<usize> {
    let mut done = 0;
    let mut seen = std::collections::HashSet::new();
    for (name, status) in read_all(service).await? {
        let Some(share) = service.find(&name).await? else {
            continue;
        };
        // A status left by an earlier volume of the same name is not this one's.
        if share.volume_id.to_string() != status.volume_id {
            continue;
        }
        let Some((namespace, pvc)) = share
            .labels
            .get(crate::params::labels::PVC)
            .and_then(|l| l.split_once('/'))
        else {
            continue;
        };
        seen.insert(status.volume_id.clone());
        let annotations = status.annotations();
        if sent.get(&status.volume_id) == Some(&annotations) {
            continue;
        }
        match tokio::time::timeout(
            ANNOTATE_TIMEOUT,
            annotator.annotate(namespace, pvc, &annotations),
        )
        .await
        {
            Ok(Ok(())) => {
                done += 1;
                sent.insert(status.volume_id.clone(), annotations);
            }
            Ok(Err(e)) => {
                tracing::warn!(namespace, pvc, error = %e, "cannot annotate the PVC with its HSM status")
            }
            Err(_) => {
                tracing::warn!(
                    namespace,
                    pvc,
                    "annotating the PVC with its HSM status timed out"
                )
            }
        }
    }
    sent.retain(|volume, _| seen.contains(volume));
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(chrono_free_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(chrono_free_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(chrono_free_rfc3339(1_796_342_347), "2026-12-03T23:59:07Z");
    }

    #[test]
    fn annotations_and_summary_carry_the_counts() {
        let mut states = StateSummary::default();
        states.released.files = 3;
        states.released.bytes = 3 << 20;
        states.dirty.files = 1;
        let status = HsmStatus {
            volume_id: "v".into(),
            node: "n".into(),
            pass_at: 1_796_342_347,
            trigger: "interval".into(),
            states,
            archived_now: 0,
            released_now: 3,
            errors: 2,
            store_reachable: false,
        };
        let a = status.annotations();
        assert_eq!(a["lustrekit.io/hsm-released-files"], "3");
        assert_eq!(a["lustrekit.io/hsm-released-bytes"], "3145728");
        assert_eq!(a["lustrekit.io/hsm-dirty-files"], "1");
        assert_eq!(
            a["lustrekit.io/hsm-last-policy-pass"],
            "2026-12-03T23:59:07Z"
        );
        assert_eq!(a["lustrekit.io/hsm-store-reachable"], "false");
        let line = status.summary();
        assert!(
            line.starts_with("HSM: 3 files released (3145728 bytes)"),
            "{line}"
        );
        assert!(line.ends_with(", 2 errors, store unreachable"), "{line}");
    }
}
