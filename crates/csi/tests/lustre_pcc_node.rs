//! The node's Persistent Client Caches (`hotNodes`) on the `lustre` backend, every `lctl`
//! call asserted by the fake runner (syntax of `shared/lustre-formats/pcc.md`, 2.16+): each
//! publish registers the volume's cache on its own client mount (a `direct` target), each
//! unpublish removes it from that mount, the purge runs from the first publish to the last
//! unpublish, and the record outlives a restart of the node plugin.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use backend::Filesystem;
use backend::lustre::{FakeRunner, LustreBackend, LustreConfig, ToolsFaked};
use csi::params::{PccParams, keys};
use csi::pcc_node::NodePcc;
use lustre_model::{FsName, ProjectId};

fn lustre(fake: &Arc<FakeRunner>) -> Arc<dyn Filesystem> {
    let config = LustreConfig::new(
        FsName::new("testfs").unwrap(),
        vec!["10.0.0.1@tcp".into()],
        "/mnt/testfs",
    );
    Arc::new(LustreBackend::with_runner(config, Arc::new(ToolsFaked::new(fake.clone()))).unwrap())
}

#[tokio::test]
async fn each_target_has_the_cache_and_the_last_one_out_stops_the_purge() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("nvme");
    let state = tmp.path().join("state");
    let context: BTreeMap<String, String> = [
        (keys::HOT_NODES, "true"),
        (keys::PCC_CACHE, cache.to_str().unwrap()),
        (keys::PCC_AUTOCACHE, "fname={*.h5}"),
        (keys::PCC_PURGE_INTERVAL, "1h"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let params: HashMap<String, String> = context.clone().into_iter().collect();
    let pcc = PccParams::parse(&params).unwrap().unwrap();
    let project = ProjectId::new(1001).unwrap();
    let dir = cache.join("1001").display().to_string();
    let (t1, t2) = ("/var/lib/kubelet/pods/a/vol", "/var/lib/kubelet/pods/b/vol");
    let add = |mnt: &str| {
        vec![
            "lctl".to_string(),
            "pcc".into(),
            "add".into(),
            mnt.into(),
            dir.clone(),
            "--param".into(),
            "projid={1001}&fname={*.h5} roid=1001 pccro=1".into(),
        ]
    };
    let fake = Arc::new(
        FakeRunner::new()
            .expect(["lctl", "get_param", "version"], "version=2.16.0\n", "", 0)
            .expect(add(t1), "", "", 0)
            .expect(add(t2), "", "", 0)
            .expect(["lctl", "pcc", "del", t1, dir.as_str()], "", "", 0)
            .expect(["lctl", "pcc", "del", t2, dir.as_str()], "", "", 0),
    );
    let fs = lustre(&fake);
    let metrics = Arc::new(hsm::pcc::PccMetrics::new());
    let node = NodePcc::new(Some(state.clone()), metrics.clone());
    node.hold(&fs, "vol-1", Path::new(t1), &pcc, context.clone(), project)
        .await
        .unwrap();
    node.hold(&fs, "vol-1", Path::new(t2), &pcc, context.clone(), project)
        .await
        .unwrap();
    assert!(cache.join("1001").is_dir());
    assert_eq!(node.cached().await["vol-1"].len(), 2);

    // The plugin restarts: the purge starts again from the record.
    node.stop_all().await;
    drop(node);
    let node = NodePcc::new(Some(state), metrics);
    node.resume(&fs).await.unwrap();
    assert_eq!(node.cached().await["vol-1"].len(), 2);

    node.release(&fs, "vol-1", Path::new(t1), true)
        .await
        .unwrap();
    assert_eq!(node.cached().await["vol-1"].len(), 1);
    // A target already gone (its mount with it): nothing to run.
    node.release(&fs, "vol-1", Path::new(t1), true)
        .await
        .unwrap();
    node.release(&fs, "vol-1", Path::new(t2), true)
        .await
        .unwrap();
    assert!(node.cached().await.is_empty());
    node.stop_all().await;
    fake.assert_done();
}
