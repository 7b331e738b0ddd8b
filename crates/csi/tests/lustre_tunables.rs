//! Client tunables held on a node (`clientTunables`) on the `lustre` backend: every `lctl`
//! call goes to the fake runner, which asserts the exact argv and replays `get_param`'s
//! `<name>=<value>` lines (`shared/lustre-formats/INDEX.md`, rule 3; device names as
//! `lctl-stats-lnet.md` and `lfs-df.md` print them). Agreeing volumes share a value, a
//! disagreeing one is refused with nothing run, the last release puts each device's old value
//! back, and the record survives a restart of the node plugin.

use std::sync::Arc;

use backend::lustre::{FakeRunner, LustreBackend, LustreConfig, ToolsFaked};
use csi::client_tunables::NodeTunables;
use lustre_model::{ClientTunables, FsName};
use tonic::Code;

const LLITE: &str = "llite.testfs-ffff8e4b9a3c2800.max_read_ahead_mb";
const OSC0: &str = "osc.testfs-OST0000-osc-ffff8e4b9a3c2800.max_rpcs_in_flight";
const OSC1: &str = "osc.testfs-OST0001-osc-ffff8e4b9a3c2800.max_rpcs_in_flight";

fn backend(fake: &Arc<FakeRunner>) -> LustreBackend {
    let config = LustreConfig::new(
        FsName::new("testfs").unwrap(),
        vec!["10.0.0.1@tcp".into()],
        "/mnt/testfs",
    );
    LustreBackend::with_runner(config, Arc::new(ToolsFaked::new(fake.clone()))).unwrap()
}

fn t(text: &str) -> ClientTunables {
    ClientTunables::parse(text).unwrap()
}

#[tokio::test]
async fn agreeing_volumes_share_a_value_and_the_last_one_out_restores_it() {
    let state = tempfile::tempdir().unwrap();
    let fake = Arc::new(
        FakeRunner::new()
            // volume a: both tunables, first on the node
            .expect(
                ["lctl", "get_param", "llite.testfs-*.max_read_ahead_mb"],
                format!("{LLITE}=64\n"),
                "",
                0,
            )
            .expect(
                ["lctl", "set_param", "llite.testfs-*.max_read_ahead_mb=1024"],
                "",
                "",
                0,
            )
            .expect(
                ["lctl", "get_param", "osc.testfs-OST*.max_rpcs_in_flight"],
                format!("{OSC0}=8\n{OSC1}=8\n"),
                "",
                0,
            )
            .expect(
                ["lctl", "set_param", "osc.testfs-OST*.max_rpcs_in_flight=16"],
                "",
                "",
                0,
            )
            // volume b agrees on read-ahead: set again (a mount made since gets it too)
            .expect(
                ["lctl", "get_param", "llite.testfs-*.max_read_ahead_mb"],
                format!("{LLITE}=1024\n"),
                "",
                0,
            )
            .expect(
                ["lctl", "set_param", "llite.testfs-*.max_read_ahead_mb=1024"],
                "",
                "",
                0,
            )
            // a released: osc is nobody's now, each device gets its old value
            .expect(["lctl", "set_param", &format!("{OSC0}=8")], "", "", 0)
            .expect(["lctl", "set_param", &format!("{OSC1}=8")], "", "", 0)
            // b released: read-ahead back to 64, not to the 1024 b found
            .expect(["lctl", "set_param", &format!("{LLITE}=64")], "", "", 0),
    );
    let lustre = backend(&fake);
    let node = NodeTunables::new(Some(state.path().to_path_buf()));
    let a = "vol-a /var/lib/kubelet/pods/p1/volumes/x/mount";
    let b = "vol-b /var/lib/kubelet/pods/p2/volumes/x/mount";
    node.hold(
        &lustre,
        a,
        &t("llite.max_read_ahead_mb=1024 osc.max_rpcs_in_flight=16"),
    )
    .await
    .unwrap();
    node.hold(&lustre, b, &t("llite.*.max_read_ahead_mb=1024"))
        .await
        .unwrap();
    // kubelet republishes a mounted volume now and then: nothing to run.
    node.hold(
        &lustre,
        a,
        &t("osc.max_rpcs_in_flight=16 llite.max_read_ahead_mb=1024"),
    )
    .await
    .unwrap();

    // Another class wants less read-ahead on this node: refused, nothing run.
    let err = node
        .hold(&lustre, "vol-c /t", &t("llite.max_read_ahead_mb=256"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("llite.max_read_ahead_mb") && msg.contains("vol-a") && msg.contains("1024"),
        "{msg}"
    );

    // The node plugin restarts: the record is read back from its state directory.
    drop(node);
    let node = NodeTunables::new(Some(state.path().to_path_buf()));
    let held = node.in_force().await.unwrap();
    assert_eq!(held["llite.max_read_ahead_mb"], ("1024".into(), 2));
    assert_eq!(held["osc.max_rpcs_in_flight"], ("16".into(), 1));
    node.release(&lustre, a).await.unwrap();
    node.release(&lustre, a).await.unwrap(); // again: nothing left to do
    node.release(&lustre, b).await.unwrap();
    assert!(node.in_force().await.unwrap().is_empty());
    fake.assert_done();
}

#[tokio::test]
async fn a_client_without_the_parameter_is_a_failed_precondition_and_holds_nothing() {
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                ["lctl", "get_param", "llite.testfs-*.max_read_ahead_mb"],
                format!("{LLITE}=64\n"),
                "",
                0,
            )
            .expect(
                ["lctl", "set_param", "llite.testfs-*.max_read_ahead_mb=512"],
                "",
                "",
                0,
            )
            .expect(
                ["lctl", "get_param", "llite.testfs-*.statahead_agl"],
                "",
                "error: get_param: param_path 'llite/testfs-*/statahead_agl': No such file or directory\n",
                2,
            )
            .expect(
                ["lctl", "set_param", "llite.testfs-*.statahead_agl=0"],
                "",
                "error: set_param: param_path 'llite/testfs-*/statahead_agl': No such file or directory\n",
                2,
            )
            // undone: read-ahead goes back
            .expect(["lctl", "set_param", &format!("{LLITE}=64")], "", "", 0),
    );
    let lustre = backend(&fake);
    let node = NodeTunables::new(None);
    let err = node
        .hold(
            &lustre,
            "vol-a /t",
            &t("llite.max_read_ahead_mb=512,llite.statahead_agl=0"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("statahead_agl"), "{err}");
    assert!(node.in_force().await.unwrap().is_empty());
    fake.assert_done();
}
