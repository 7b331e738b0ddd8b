//! The Controller service end to end over its unix socket, on the `local` backend.

mod common;

use common::*;
use csi::Mode;
use csi::grpc::*;
use tonic::Code;

const MIB: i64 = 1 << 20;

async fn share_dirs(root: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("shares"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.retain(|n| !n.starts_with('.'));
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_idempotent_and_conflicts_are_already_exists() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let d = Running::start(&root, &dir.path().join("csi.sock"), Mode::Controller, false).await;
    let mut c = d.controller();

    let params = [
        (
            "subdirTemplate",
            "${pvc.metadata.namespace}-${pvc.metadata.name}",
        ),
        ("csi.storage.k8s.io/pvc/namespace", "team-a"),
        ("csi.storage.k8s.io/pvc/name", "data"),
        ("csi.storage.k8s.io/pv/name", "pvc-1111"),
        ("inodeLimit", "5000"),
    ];
    let first = c
        .create_volume(create_req("pvc-1111", 10 * MIB + 1, &params))
        .await
        .unwrap()
        .into_inner();
    let vol = first.volume.unwrap();
    assert_eq!(vol.capacity_bytes, 11 * MIB, "rounded up to whole MiB");
    assert!(vol.volume_id.starts_with("v1/testfs/"), "{}", vol.volume_id);
    assert!(
        vol.volume_id.ends_with("/shares/team-a-data"),
        "{}",
        vol.volume_id
    );
    assert_eq!(vol.volume_context["sharePath"], "shares/team-a-data");
    assert_eq!(vol.volume_context["fsName"], "testfs");
    assert_eq!(share_dirs(&root).await, ["team-a-data"]);

    // The same request again: the same volume.
    let again = c
        .create_volume(create_req("pvc-1111", 10 * MIB + 1, &params))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.volume.unwrap().volume_id, vol.volume_id);

    // Same name, other size: ALREADY_EXISTS.
    let err = c
        .create_volume(create_req("pvc-1111", 100 * MIB, &params))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");
    // Same name, other inode limit.
    let mut other = params;
    other[4] = ("inodeLimit", "6000");
    let err = c
        .create_volume(create_req("pvc-1111", 10 * MIB + 1, &other))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");
    // Another request whose template expands to the same directory: refused, not shared.
    let mut clash = params;
    clash[3] = ("csi.storage.k8s.io/pv/name", "pvc-2222");
    let err = c
        .create_volume(create_req("pvc-2222", 10 * MIB + 1, &clash))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");
    assert_eq!(share_dirs(&root).await, ["team-a-data"]);

    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_invalid_argument_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let d = Running::start(&root, &dir.path().join("csi.sock"), Mode::Controller, false).await;
    let mut c = d.controller();

    let long = "x".repeat(300);
    let hostile: Vec<(String, Vec<(&str, String)>)> = vec![
        ("..".into(), vec![]),
        ("a/b".into(), vec![]),
        ("/etc".into(), vec![]),
        ("nul\0name".into(), vec![]),
        (long.clone(), vec![]),
        (".hidden".into(), vec![]),
        (
            "ok".into(),
            vec![("subdirTemplate", "../${pv.metadata.name}".into())],
        ),
        ("ok".into(), vec![("subdirTemplate", "/abs".into())]),
        (
            "ok".into(),
            vec![
                ("subdirTemplate", "${pvc.metadata.name}".into()),
                ("csi.storage.k8s.io/pvc/name", "..".into()),
            ],
        ),
        (
            "ok".into(),
            vec![
                ("subdirTemplate", "${pvc.metadata.name}".into()),
                ("csi.storage.k8s.io/pvc/name", "../../etc".into()),
            ],
        ),
        (
            "ok".into(),
            vec![
                ("subdirTemplate", "${pvc.metadata.namespace}".into()),
                ("csi.storage.k8s.io/pvc/namespace", long.clone()),
            ],
        ),
        ("ok".into(), vec![("subdirTemplate", "${nope}".into())]),
        ("ok".into(), vec![("noSuchParameter", "1".into())]),
        ("ok".into(), vec![("inodeLimit", "-1".into())]),
        ("ok".into(), vec![("reclaimPolicy", "shred".into())]),
    ];
    for (name, params) in &hostile {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let err = c
            .create_volume(create_req(name, MIB, &params))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{name:?} {params:?}: {err}"
        );
    }

    // Capacity ranges: negative, limit below required, overflow.
    for (required, limit, code) in [
        (-1, 0, Code::InvalidArgument),
        (0, -5, Code::InvalidArgument),
        (10 * MIB, MIB, Code::InvalidArgument),
        (i64::MAX, 0, Code::OutOfRange),
        (1000, 1001, Code::OutOfRange),
    ] {
        let mut req = create_req("ok", 0, &[]);
        req.capacity_range = Some(CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        });
        let err = c.create_volume(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{required} {limit}: {err}");
    }

    // A volume is a directory or a device, never both.
    let mut req = create_req("ok", MIB, &[]);
    req.volume_capabilities = vec![
        VolumeCapability {
            access_type: Some(volume_capability::AccessType::Block(
                volume_capability::BlockVolume {},
            )),
            access_mode: Some(volume_capability::AccessMode { mode: 1 }),
        },
        rwx(),
    ];
    assert_eq!(
        c.create_volume(req).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // Nor snapshots or clones.
    let mut req = create_req("ok", MIB, &[]);
    req.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: "v1/testfs/5000/shares/x".into(),
            },
        )),
    });
    assert_eq!(
        c.create_volume(req).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // A client cache: a bad rule is refused as such, a good one because `local` has none.
    let pcc = [("hotNodes", "true"), ("pccCache", "/csi-pcc")];
    let err = c
        .create_volume(create_req(
            "ok",
            MIB,
            &[pcc[0], pcc[1], ("pccAutocache", "fname={*.h5")],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("pccAutocache"), "{err}");
    let err = c
        .create_volume(create_req("ok", MIB, &pcc))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("Persistent Client Cache") && err.message().contains("local"),
        "{err}"
    );

    assert!(
        share_dirs(&root).await.is_empty(),
        "{:?}",
        share_dirs(&root).await
    );
    let listed = c
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.entries.is_empty());
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_follows_the_reclaim_policy() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let d = Running::start(&root, &dir.path().join("csi.sock"), Mode::Controller, false).await;
    let mut c = d.controller();

    let mut ids = Vec::new();
    for (name, policy) in [
        ("pvc-del", "delete"),
        ("pvc-keep", "retain"),
        ("pvc-bin", "trash"),
    ] {
        let mut params = vec![("reclaimPolicy", policy)];
        if policy == "trash" {
            params.push(("trashTTL", "2h"));
        }
        let v = c
            .create_volume(create_req(name, MIB, &params))
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        ids.push(v.volume_id);
    }
    assert_eq!(share_dirs(&root).await, ["pvc-bin", "pvc-del", "pvc-keep"]);
    for id in &ids {
        c.delete_volume(DeleteVolumeRequest {
            volume_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        // Deleting again (the CO retries) succeeds.
        c.delete_volume(DeleteVolumeRequest {
            volume_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    assert_eq!(
        share_dirs(&root).await,
        ["pvc-keep"],
        "delete purged, retain kept, trash moved"
    );
    let trash = d.driver.service().trash_list().await.unwrap();
    assert_eq!(trash.len(), 1);
    assert_eq!(trash[0].name.as_str(), "pvc-bin");
    assert_eq!(trash[0].expires_at - trash[0].deleted_at, 7200);

    // Unknown and foreign volume IDs: success, nothing touched.
    for id in [
        "no-such-volume",
        "v1/otherfs/5000/shares/pvc-keep",
        "v1/testfs/5999/shares/pvc-keep",
    ] {
        c.delete_volume(DeleteVolumeRequest {
            volume_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    assert_eq!(share_dirs(&root).await, ["pvc-keep"]);
    let err = c
        .delete_volume(DeleteVolumeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expand_validate_list_capacity_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let socket = dir.path().join("csi.sock");
    let d = Running::start(&root, &socket, Mode::Controller, false).await;
    let mut c = d.controller();

    let mut ids = Vec::new();
    for i in 0..5 {
        let v = c
            .create_volume(create_req(&format!("pvc-{i}"), MIB, &[]))
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        ids.push(v.volume_id);
    }

    // Expand raises the quota; asking for less changes nothing.
    let grown = c
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: ids[0].clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 3 * MIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grown.capacity_bytes, 3 * MIB);
    assert!(!grown.node_expansion_required);
    let same = c
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: ids[0].clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: MIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.capacity_bytes, 3 * MIB);
    let missing = c
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: "v1/testfs/5999/shares/nope".into(),
            capacity_range: Some(CapacityRange {
                required_bytes: MIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // Validate: confirmed for mounts, not for block (a directory volume); NOT_FOUND for
    // unknown volumes.
    let ok = c
        .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
            volume_id: ids[1].clone(),
            volume_capabilities: vec![rwx()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.confirmed.is_some());
    let block = c
        .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
            volume_id: ids[1].clone(),
            volume_capabilities: vec![VolumeCapability {
                access_type: Some(volume_capability::AccessType::Block(
                    volume_capability::BlockVolume {},
                )),
                access_mode: Some(volume_capability::AccessMode { mode: 1 }),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(block.confirmed.is_none() && !block.message.is_empty());
    let err = c
        .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
            volume_id: "nope".into(),
            volume_capabilities: vec![rwx()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Pagination: pages of 2, 2 and 1; a token survives a deletion of the last entry of a page.
    let page1 = c
        .list_volumes(ListVolumesRequest {
            max_entries: 2,
            starting_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page1.entries.len(), 2);
    assert!(!page1.next_token.is_empty());
    let last = page1.entries[1].volume.as_ref().unwrap().volume_id.clone();
    c.delete_volume(DeleteVolumeRequest {
        volume_id: last,
        ..Default::default()
    })
    .await
    .unwrap();
    let page2 = c
        .list_volumes(ListVolumesRequest {
            max_entries: 2,
            starting_token: page1.next_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page2.entries.len(), 2);
    let page3 = c
        .list_volumes(ListVolumesRequest {
            max_entries: 2,
            starting_token: page2.next_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page3.entries.len(), 1);
    assert!(page3.next_token.is_empty());
    let bad = c
        .list_volumes(ListVolumesRequest {
            max_entries: 0,
            starting_token: "garbage".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::Aborted);
    let neg = c
        .list_volumes(ListVolumesRequest {
            max_entries: -1,
            starting_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(neg.code(), Code::InvalidArgument);

    let cap = c
        .get_capacity(GetCapacityRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(cap.available_capacity > 0);

    // A restart (or a second replica) sees everything: the filesystem is the state.
    d.stop().await.unwrap();
    assert!(!socket.exists(), "socket removed on shutdown");
    let d2 = Running::start(&root, &socket, Mode::Controller, false).await;
    let all = d2
        .controller()
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.entries.len(), 4);
    let first = all
        .entries
        .iter()
        .find(|e| e.volume.as_ref().unwrap().volume_id == ids[0])
        .unwrap();
    assert_eq!(first.volume.as_ref().unwrap().capacity_bytes, 3 * MIB);
    // And the same create is still idempotent after the restart.
    let again = d2
        .controller()
        .create_volume(create_req("pvc-2", MIB, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.volume.unwrap().volume_id, ids[2]);
    d2.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_call_on_a_busy_volume_is_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let d = Running::start(&root, &dir.path().join("csi.sock"), Mode::Controller, false).await;
    let mut c = d.controller();
    let v = c
        .create_volume(create_req("pvc-busy", MIB, &[]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();

    let held = d
        .driver
        .in_flight()
        .claim([format!("volume:{}", v.volume_id)])
        .unwrap();
    let err = c
        .delete_volume(DeleteVolumeRequest {
            volume_id: v.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err}");
    let create_held = d.driver.in_flight().claim(["create:pvc-busy"]).unwrap();
    let err = c
        .create_volume(create_req("pvc-busy", MIB, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err}");
    drop((held, create_held));
    c.delete_volume(DeleteVolumeRequest {
        volume_id: v.volume_id,
        ..Default::default()
    })
    .await
    .unwrap();
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_and_capabilities_by_mode() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let d = Running::start(&root, &dir.path().join("csi.sock"), Mode::Node, true).await;
    let info = d
        .identity()
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "test.csi.lustrekit.io");
    assert!(!info.vendor_version.is_empty());
    let caps = d
        .identity()
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        caps.capabilities.is_empty(),
        "a node-only driver offers no controller service"
    );
    assert_eq!(
        d.identity()
            .probe(ProbeRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready,
        Some(true)
    );
    // The controller service is not served in node mode.
    let err = d
        .controller()
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let node_caps = d
        .node()
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let types: Vec<i32> = node_caps
        .capabilities
        .iter()
        .filter_map(|c| {
            c.r#type
                .as_ref()
                .map(|node_service_capability::Type::Rpc(r)| r.r#type)
        })
        .collect();
    assert!(!types.contains(&(node_service_capability::rpc::Type::StageUnstageVolume as i32)));
    assert!(types.contains(&(node_service_capability::rpc::Type::GetVolumeStats as i32)));
    assert_eq!(
        d.node()
            .node_get_info(NodeGetInfoRequest {})
            .await
            .unwrap()
            .into_inner()
            .node_id,
        "node-1"
    );

    // Metrics and health on their own port.
    let addr = d.metrics.unwrap();
    let metrics = http_get(addr, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("lustrekit_csi_requests_total{method=\"NodeGetInfo\",code=\"OK\"} 1"),
        "{metrics}"
    );
    assert!(http_get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(http_get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
    d.stop().await.unwrap();
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
