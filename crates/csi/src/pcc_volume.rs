//! What the node plugin does for a volume with a Persistent Client Cache (`hotNodes`): at
//! the volume's first publish on the node, [`register`] its cache on the client mount and
//! start [`purge_task`]; at its last unpublish, stop the task and [`unregister`].
//!
//! Each volume has its own cache directory, `<pccCache>/<project ID>`, registered with its
//! own id (`pccId`, else the project ID) and its rule scoped to its project, so volumes
//! sharing a client mount (`bind` mode) or a cache filesystem never take each other's files
//! or collide in `lctl pcc add`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backend::Filesystem;
use hsm::pcc::{PccMetrics, PurgePolicy, PurgeTask};
use lustre_model::{PccAddParam, ProjectId};

use crate::error::{CsiError, Result};
use crate::params::{PccParams, keys};

/// The volume's cache directory on the node: `<pccCache>/<project ID>`.
pub fn cache_dir(pcc: &PccParams, project: ProjectId) -> PathBuf {
    pcc.cache.join(project.get().to_string())
}

fn unsupported(fs: &dyn Filesystem) -> CsiError {
    CsiError::Unsupported(format!(
        "{}=\"true\": the {} backend has no Persistent Client Cache",
        keys::HOT_NODES,
        fs.kind_name()
    ))
}

/// Registers the volume's cache on the client mount `mount` (`lctl pcc add`), making its
/// directory first; idempotent. A rule or mode this node's client cannot take (a 2.16 rule,
/// or read-only, on a 2.15 client) is INVALID_ARGUMENT naming it. Returns the cache
/// directory.
pub async fn register(
    fs: &dyn Filesystem,
    mount: &Path,
    pcc: &PccParams,
    project: ProjectId,
) -> Result<PathBuf> {
    if !fs.capabilities().pcc {
        return Err(unsupported(fs));
    }
    let dialect = fs.pcc_dialect().await?;
    let param = PccAddParam::for_volume(
        pcc.autocache.as_ref(),
        project.get(),
        pcc.mode,
        u64::from(pcc.id_for(project)),
        dialect,
    )
    .map_err(|e| CsiError::Unsupported(format!("this node's Lustre client: {e}")))?;
    let dir = cache_dir(pcc, project);
    let made = dir.clone();
    // Local storage, not Lustre: no hung-mount pool needed, only off the async threads.
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&made)
            .map_err(|e| CsiError::io(&made, e))
    })
    .await
    .map_err(|e| CsiError::Internal(format!("making the PCC cache directory: {e}")))??;
    fs.pcc_add(mount, &dir, &param).await?;
    Ok(dir)
}

/// Unregisters the volume's cache from `mount` (`lctl pcc del`). False when it was not
/// registered (a repeated unpublish), which is not an error. The directory is left: the
/// next publish registers it again, and the purge keeps it small.
pub async fn unregister(
    fs: &dyn Filesystem,
    mount: &Path,
    pcc: &PccParams,
    project: ProjectId,
) -> Result<bool> {
    if !fs.capabilities().pcc {
        return Err(unsupported(fs));
    }
    Ok(fs.pcc_del(mount, &cache_dir(pcc, project)).await?)
}

/// The purge of the volume's cache, by the class's watermarks and interval; run it with
/// [`PurgeTask::run`] until the last unpublish. `metrics` is shared by every volume of the
/// node (register it once in the node's registry with [`PccMetrics::register`]).
pub fn purge_task(
    fs: Arc<dyn Filesystem>,
    mount: PathBuf,
    pcc: &PccParams,
    project: ProjectId,
    metrics: Arc<PccMetrics>,
) -> Result<PurgeTask> {
    let policy = PurgePolicy::new(pcc.purge.high_percent, pcc.purge.low_percent)
        .map_err(|e| CsiError::invalid(e.to_string()))?;
    Ok(PurgeTask::for_backend(
        fs,
        mount,
        cache_dir(pcc, project),
        policy,
        Duration::from_secs(pcc.purge.interval_secs),
        metrics,
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use backend::lustre::{FakeRunner, LustreBackend, LustreConfig};
    use lustre_model::FsName;

    use super::*;

    fn pcc(cache: &Path, extra: &[(&str, &str)]) -> PccParams {
        let mut map: HashMap<String, String> = HashMap::from([
            (keys::HOT_NODES.into(), "true".into()),
            (keys::PCC_CACHE.into(), cache.display().to_string()),
        ]);
        map.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        PccParams::parse(&map).unwrap().unwrap()
    }

    fn lustre(fake: &Arc<FakeRunner>) -> Arc<dyn Filesystem> {
        let config = LustreConfig::new(
            FsName::new("testfs").unwrap(),
            vec!["10.0.0.1@tcp".into()],
            "/mnt/testfs",
        );
        Arc::new(LustreBackend::with_runner(config, fake.clone()).unwrap())
    }

    #[tokio::test]
    async fn first_publish_registers_and_last_unpublish_removes_the_volumes_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let p = pcc(tmp.path(), &[(keys::PCC_AUTOCACHE, "fname={*.h5}")]);
        let project = ProjectId::new(1001).unwrap();
        let dir = tmp.path().join("1001");
        let dir_text = dir.display().to_string();
        let mnt = "/var/lib/lustrekit/mnt/testfs";
        let fake = Arc::new(
            FakeRunner::new()
                .expect(["lctl", "get_param", "version"], "version=2.16.0\n", "", 0)
                .expect(
                    [
                        "lctl",
                        "pcc",
                        "add",
                        mnt,
                        dir_text.as_str(),
                        "--param",
                        "projid={1001}&fname={*.h5} roid=1001 pccro=1",
                    ],
                    "",
                    "",
                    0,
                )
                .expect(["lctl", "pcc", "del", mnt, dir_text.as_str()], "", "", 0),
        );
        let fs = lustre(&fake);
        let made = register(fs.as_ref(), Path::new(mnt), &p, project)
            .await
            .unwrap();
        assert_eq!(made, dir);
        assert!(dir.is_dir());
        let task = purge_task(
            fs.clone(),
            mnt.into(),
            &p,
            project,
            Arc::new(PccMetrics::new()),
        )
        .unwrap();
        assert_eq!(task.cache, dir);
        assert_eq!(task.interval, Duration::from_secs(30));
        assert!(
            unregister(fs.as_ref(), Path::new(mnt), &p, project)
                .await
                .unwrap()
        );
        fake.assert_done();
    }

    #[tokio::test]
    async fn a_215_node_refuses_read_only_as_invalid_argument() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeRunner::new().expect(
            ["lctl", "get_param", "version"],
            "version=2.15.4\n",
            "",
            0,
        ));
        let err = register(
            lustre(&fake).as_ref(),
            Path::new("/mnt/testfs"),
            &pcc(tmp.path(), &[]),
            ProjectId::new(7).unwrap(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.to_string().contains("read-only PCC"), "{err}");
        fake.assert_done();
    }

    #[tokio::test]
    async fn the_local_backend_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let local = backend::local::LocalBackend::open(tmp.path())
            .await
            .unwrap();
        let err = register(
            &local,
            Path::new("/mnt"),
            &pcc(tmp.path(), &[]),
            ProjectId::new(7).unwrap(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    }
}
