//! End-to-end tests on a real one-node Kubernetes cluster: the Helm chart installed for real
//! (`local` backend on a btrfs loop mount), the kubelet calling `lustrekit csi`, pods writing
//! into quota'd volumes. Run them with scripts/cluster-test.sh, which brings the cluster up,
//! installs the chart and sets the environment `tests/kube/mod.rs` documents; or by hand:
//!
//! ```text
//! scripts/kube-up.sh && scripts/cluster-test.sh --keep       # once
//! KUBECONFIG=/var/lib/lustrekit-kube/admin.kubeconfig \
//!   cargo test -p lustrekit --test cluster -- --include-ignored
//! ```
//!
//! Each test works in a namespace of its own and checks the outcome where it lands: in the
//! pod (what a write returns), on the host (the share directory and its btrfs qgroup), in the
//! driver's share records, and in the kubelet's own reports.

mod kube;

use std::path::Path;
use std::time::{Duration, Instant};

use kube::{
    Cluster, DRIVER, MIB, Namespace, bound_pvc, create_in, delete_pod, pod, pvc, pvc_metric,
    qgroup, running_pod, share_path, storage_class, subvolume_id,
};
use serde_json::json;

/// A StorageClass with the given driver parameters, made once per test binary.
fn class(name: &str, parameters: serde_json::Value) -> String {
    Cluster::get().apply(&storage_class(name, parameters));
    name.to_string()
}

/// `reclaimPolicy: delete`: DeleteVolume removes the share.
fn delete_class() -> String {
    class("lk-test-delete", json!({"reclaimPolicy": "delete"}))
}

fn pv_name(pv: &serde_json::Value) -> String {
    pv["metadata"]["name"]
        .as_str()
        .expect("PV name")
        .to_string()
}

fn share_dir(pv: &serde_json::Value) -> std::path::PathBuf {
    Cluster::get().local_root.join(share_path(pv))
}

/// The kubelet registered the driver through the plugin watcher (no node-driver-registrar):
/// the CSINode object lists it with this node's ID, and the registration socket is there.
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh"]
fn driver_registers_itself_with_the_kubelet() {
    let _g = kube::shared();
    let c = Cluster::get();
    let node = c.poll(
        "the driver in CSINode",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || {
            let csinode = c.try_get(None, "csinode", &c.node)?;
            csinode["spec"]["drivers"]
                .as_array()?
                .iter()
                .find(|d| d["name"] == DRIVER)
                .cloned()
        },
    );
    assert_eq!(node["nodeID"], c.node.as_str());
    let socket = Path::new("/var/lib/kubelet/plugins_registry").join(format!("{DRIVER}-reg.sock"));
    assert!(socket.exists(), "{} is missing", socket.display());
    // The node plugin's pod has no node-driver-registrar container.
    let pods = c.node_plugin_pods();
    assert!(!pods.is_empty(), "no node plugin pod");
    let spec = c.json(&["get", "pod", &pods[0], "-n", &c.namespace]);
    let containers: Vec<&str> = spec["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(containers, ["lustrekit"]);
}

/// The chart's StorageClass provisions a 10 MiB claim: Bound, a PV of 10Mi, and on the host
/// a subvolume whose qgroup limit is exactly 10 MiB.
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh"]
fn chart_storage_class_binds_a_10mib_claim_with_a_10mib_qgroup() {
    let _g = kube::shared();
    let ns = Namespace::new("bind");
    let pv = bound_pvc(&ns, "small", "lustrekit", "10Mi", "ReadWriteOnce");
    assert_eq!(pv["spec"]["csi"]["driver"], DRIVER);
    assert_eq!(pv["spec"]["capacity"]["storage"], "10Mi");
    // The chart's class names the directory after the claim.
    let path = share_path(&pv);
    assert!(
        path.ends_with(&format!("{}-small", ns.as_str())),
        "subdirTemplate not applied: {path}"
    );
    let dir = share_dir(&pv);
    assert!(dir.is_dir(), "{} is not on the host", dir.display());
    let (_, limit) = qgroup(subvolume_id(&dir)).expect("the share has a qgroup");
    assert_eq!(limit, Some(10 * MIB), "qgroup limit of {}", dir.display());
}

/// A pod's writes stop with EDQUOT at the 10 MiB quota; after the claim grows to 20 MiB the
/// same pod writes more.
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh"]
fn writes_stop_at_the_quota_and_resume_after_expansion() {
    let _g = kube::shared();
    let c = Cluster::get();
    let ns = Namespace::new("quota");
    let class = delete_class();
    let pv = bound_pvc(&ns, "data", &class, "10Mi", "ReadWriteOnce");
    let p = running_pod(&ns, pod("writer", "data", false, None));

    let out = c.exec(
        ns.as_str(),
        &p,
        "dd if=/dev/zero of=/data/fill bs=1M count=20 conv=fsync 2>&1; echo exit=$?",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Disk quota exceeded"),
        "20 MiB into a 10 MiB volume did not fail with EDQUOT: {text}"
    );
    assert!(!text.contains("exit=0"), "dd succeeded: {text}");
    let written: u64 = c
        .exec_ok(ns.as_str(), &p, "stat -c %s /data/fill")
        .trim()
        .parse()
        .expect("size");
    assert!(
        written > 5 * MIB && written <= 10 * MIB,
        "wrote {written} bytes into a 10 MiB volume"
    );

    // Grow the claim; the resizer calls ControllerExpandVolume.
    c.ok(&[
        "patch",
        "pvc",
        "data",
        "-n",
        ns.as_str(),
        "--type=merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"20Mi"}}}}"#,
    ]);
    c.wait_for(
        Some(ns.as_str()),
        "pvc/data",
        "jsonpath={.status.capacity.storage}=20Mi",
        Duration::from_secs(120),
    );
    let dir = share_dir(&pv);
    let (_, limit) = qgroup(subvolume_id(&dir)).expect("qgroup");
    assert_eq!(limit, Some(20 * MIB), "the qgroup did not grow");
    c.exec_ok(
        ns.as_str(),
        &p,
        "dd if=/dev/zero of=/data/more bs=1M count=8 conv=fsync",
    );
    let total: u64 = c
        .exec_ok(ns.as_str(), &p, "cat /data/fill /data/more | wc -c")
        .trim()
        .parse()
        .expect("total");
    assert!(total > 10 * MIB, "only {total} bytes after expansion");
}

/// The kubelet's volume stats (its /metrics and the summary API) report the quota as the
/// capacity, not the filesystem's size, and the bytes a pod wrote as used.
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh"]
fn kubelet_volume_stats_show_the_quota() {
    let _g = kube::shared();
    let c = Cluster::get();
    let ns = Namespace::new("stats");
    let class = delete_class();
    bound_pvc(&ns, "data", &class, "10Mi", "ReadWriteOnce");
    let p = running_pod(&ns, pod("writer", "data", false, None));
    c.exec_ok(
        ns.as_str(),
        &p,
        "dd if=/dev/zero of=/data/three bs=1M count=3 conv=fsync",
    );

    // The kubelet polls NodeGetVolumeStats every volumeStatsAggPeriod (10 s here).
    let (capacity, used) = c.poll(
        "kubelet volume stats with the pod's writes",
        Duration::from_secs(120),
        Duration::from_secs(3),
        || {
            let metrics = c.kubelet_metrics();
            let capacity = pvc_metric(
                &metrics,
                "kubelet_volume_stats_capacity_bytes",
                ns.as_str(),
                "data",
            )?;
            let used = pvc_metric(
                &metrics,
                "kubelet_volume_stats_used_bytes",
                ns.as_str(),
                "data",
            )?;
            (used >= (3 * MIB) as f64).then_some((capacity, used))
        },
    );
    assert_eq!(capacity, (10 * MIB) as f64, "capacity is not the quota");
    assert!(used < (10 * MIB) as f64, "used {used}");

    // No inode limit, and btrfs keeps no inode counts: the driver reports no INODES entry,
    // which the kubelet turns into zeros (never "all inodes used": free/total is 0/0, so the
    // usual inodes-filling-up alert cannot fire).
    let metrics = c.kubelet_metrics();
    let inode_metric = |name: &str| pvc_metric(&metrics, name, ns.as_str(), "data");
    let (inodes, free, inodes_used) = (
        inode_metric("kubelet_volume_stats_inodes"),
        inode_metric("kubelet_volume_stats_inodes_free"),
        inode_metric("kubelet_volume_stats_inodes_used"),
    );
    assert!(
        inodes.unwrap_or(0.0) == 0.0 && inodes_used.unwrap_or(0.0) == 0.0,
        "an inode figure without an inode limit: inodes {inodes:?}, used {inodes_used:?}, free {free:?}"
    );

    let summary = c.kubelet_summary();
    let volume = summary["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .filter(|p| p["podRef"]["namespace"] == ns.as_str())
        .flat_map(|p| p["volume"].as_array().cloned().unwrap_or_default())
        .find(|v| v["pvcRef"]["name"] == "data")
        .expect("the summary API lists the volume");
    assert_eq!(volume["capacityBytes"], 10 * MIB);
    assert!(volume["usedBytes"].as_u64().expect("usedBytes") >= 3 * MIB);
    assert_eq!(volume["inodesUsed"].as_u64().unwrap_or(0), 0, "{volume}");
}

/// With `inodeLimit`, the kubelet's inode metrics are the limit and the files in the volume.
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh"]
fn inode_limit_is_what_the_kubelet_reports() {
    let _g = kube::shared();
    let c = Cluster::get();
    let ns = Namespace::new("inodes");
    let class = class(
        "lk-test-inodes",
        json!({"reclaimPolicy": "delete", "inodeLimit": "50"}),
    );
    bound_pvc(&ns, "data", &class, "10Mi", "ReadWriteOnce");
    let p = running_pod(&ns, pod("writer", "data", false, None));
    c.exec_ok(
        ns.as_str(),
        &p,
        "mkdir /data/d && for i in 1 2 3 4 5 6 7 8 9; do echo $i > /data/d/f$i; done",
    );
    // The root, d and its nine files: 11 inodes.
    let (inodes, used, free) = c.poll(
        "kubelet inode metrics with the pod's files",
        Duration::from_secs(120),
        Duration::from_secs(3),
        || {
            let metrics = c.kubelet_metrics();
            let m = |name: &str| pvc_metric(&metrics, name, ns.as_str(), "data");
            let used = m("kubelet_volume_stats_inodes_used")?;
            (used >= 11.0).then_some((
                m("kubelet_volume_stats_inodes")?,
                used,
                m("kubelet_volume_stats_inodes_free")?,
            ))
        },
    );
    assert_eq!(inodes, 50.0, "inodes is not the limit");
    assert_eq!(used, 11.0, "used inodes");
    assert_eq!(free, 39.0, "free inodes");
}

/// Writing until EDQUOT turns the volume's condition abnormal (the kubelet's health metric
/// and a VolumeConditionAbnormal event on the pod, naming the quota); freeing the space
/// turns it back.
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh"]
fn condition_turns_abnormal_at_the_quota() {
    let _g = kube::shared();
    let c = Cluster::get();
    let ns = Namespace::new("full");
    let class = delete_class();
    bound_pvc(&ns, "data", &class, "10Mi", "ReadWriteOnce");
    let p = running_pod(&ns, pod("writer", "data", false, None));
    let health = || {
        pvc_metric(
            &c.kubelet_metrics(),
            "kubelet_volume_stats_health_status_abnormal",
            ns.as_str(),
            "data",
        )
    };
    c.poll(
        "a healthy volume reported healthy",
        Duration::from_secs(120),
        Duration::from_secs(3),
        || (health()? == 0.0).then_some(()),
    );

    let out = c.exec(
        ns.as_str(),
        &p,
        "dd if=/dev/zero of=/data/fill bs=1M count=20 conv=fsync 2>&1; echo exit=$?",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Disk quota exceeded"), "{text}");
    c.poll(
        "kubelet_volume_stats_health_status_abnormal at the quota",
        Duration::from_secs(120),
        Duration::from_secs(3),
        || (health()? == 1.0).then_some(()),
    );
    let message = c.poll(
        "a VolumeConditionAbnormal event on the pod",
        Duration::from_secs(60),
        Duration::from_secs(2),
        || {
            let events = c.json(&[
                "get",
                "events",
                "-n",
                ns.as_str(),
                "--field-selector",
                "reason=VolumeConditionAbnormal",
            ]);
            events["items"]
                .as_array()?
                .iter()
                .find_map(|e| e["message"].as_str().map(str::to_owned))
        },
    );
    assert!(
        message.contains("byte quota 10MiB is full") && message.contains("EDQUOT"),
        "{message}"
    );

    c.exec_ok(ns.as_str(), &p, "rm /data/fill && sync");
    c.poll(
        "the condition back to healthy once the space is free",
        Duration::from_secs(120),
        Duration::from_secs(3),
        || (health()? == 0.0).then_some(()),
    );
}

/// With fsGroup, the kubelet gives the volume to the pod's group (fsGroupPolicy: File): the
/// volume root is group-owned and setgid, and a non-root user of the group can write.
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh"]
fn fs_group_owns_the_volume() {
    let _g = kube::shared();
    let c = Cluster::get();
    let ns = Namespace::new("fsgroup");
    let class = delete_class();
    bound_pvc(&ns, "data", &class, "10Mi", "ReadWriteOnce");
    let security = json!({"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 4321});
    let p = running_pod(&ns, pod("grouped", "data", false, Some(security)));
    let groups = c.exec_ok(ns.as_str(), &p, "id -G");
    assert!(
        groups.split_whitespace().any(|g| g == "4321"),
        "the pod is not in its fsGroup: {groups}"
    );
    let root = c.exec_ok(ns.as_str(), &p, "stat -c '%g %A' /data");
    let (gid, mode) = root.trim().split_once(' ').expect("stat output");
    assert_eq!(gid, "4321", "volume root group");
    assert_eq!(&mode[6..7], "s", "volume root is not setgid: {mode}");
    let file = c.exec_ok(
        ns.as_str(),
        &p,
        "echo hi > /data/f && stat -c '%u %g' /data/f",
    );
    assert_eq!(file.trim(), "1000 4321");
}

/// A read-only volume refuses writes: a claim mounted `readOnly` by the pod, and a
/// ReadOnlyMany claim.
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh"]
fn read_only_volumes_refuse_writes() {
    let _g = kube::shared();
    let c = Cluster::get();
    let ns = Namespace::new("readonly");
    let class = delete_class();
    bound_pvc(&ns, "rw", &class, "10Mi", "ReadWriteOnce");
    bound_pvc(&ns, "rox", &class, "10Mi", "ReadOnlyMany");
    let a = running_pod(&ns, pod("ro-flag", "rw", true, None));
    let b = running_pod(&ns, pod("ro-mode", "rox", false, None));
    for p in [&a, &b] {
        let out = c.exec(ns.as_str(), p, "touch /data/f 2>&1; echo exit=$?");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Read-only file system") && !text.contains("exit=0"),
            "{p}: a write to a read-only volume: {text}"
        );
        let mounts = c.exec_ok(ns.as_str(), p, "grep ' /data ' /proc/mounts");
        let options = mounts.split_whitespace().nth(3).unwrap_or_default();
        assert!(
            options.split(',').any(|o| o == "ro"),
            "{p}: /data is not mounted ro: {mounts}"
        );
    }
}

/// Deleting the pod, then the claim (`reclaimPolicy: delete`) removes the share directory,
/// its btrfs qgroup, and its project ID from the driver's records.
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh"]
fn deleting_the_claim_removes_directory_qgroup_and_project() {
    let _g = kube::shared();
    let c = Cluster::get();
    let ns = Namespace::new("delete");
    let class = delete_class();
    let pv = bound_pvc(&ns, "data", &class, "10Mi", "ReadWriteOnce");
    let p = running_pod(&ns, pod("writer", "data", false, None));
    c.exec_ok(
        ns.as_str(),
        &p,
        "dd if=/dev/zero of=/data/x bs=1M count=2 conv=fsync",
    );

    let dir = share_dir(&pv);
    let subvol = subvolume_id(&dir);
    assert!(qgroup(subvol).is_some(), "no qgroup before deletion");
    let project = pv["spec"]["csi"]["volumeAttributes"]["projectId"]
        .as_str()
        .expect("projectId")
        .parse::<u64>()
        .expect("numeric project");
    let name = pv_name(&pv);

    delete_pod(&ns, &p);
    c.ok(&[
        "delete",
        "pvc",
        "data",
        "-n",
        ns.as_str(),
        "--wait=true",
        "--timeout=60s",
    ]);
    c.poll(
        "the PV to be deleted",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || c.try_get(None, "pv", &name).is_none().then_some(()),
    );

    assert!(!dir.exists(), "{} is still there", dir.display());
    // btrfs drops a deleted subvolume's qgroup once the cleaner has freed it.
    let root = c.local_root.to_string_lossy().into_owned();
    kube::host("btrfs", &["subvolume", "sync", &root]);
    c.poll(
        &format!("qgroup 0/{subvol} to go"),
        Duration::from_secs(60),
        Duration::from_secs(2),
        || qgroup(subvol).is_none().then_some(()),
    );
    // The share's record is gone, so its project ID is free. (Another test may already have
    // been given the same ID since: only the deleted share must not hold it.)
    let share = dir.file_name().unwrap().to_string_lossy().into_owned();
    let shares = c.lustrekit_json(&["share", "list"]);
    let holders: Vec<&serde_json::Value> = shares
        .as_array()
        .expect("share list")
        .iter()
        .filter(|s| s["name"] == share.as_str() || s["path"] == share_path(&pv).as_str())
        .collect();
    assert!(
        holders.is_empty(),
        "the deleted share (project {project}) is still recorded: {holders:?}"
    );
    let out = c.lustrekit(&["share", "show", &share]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stdout).contains("not_found"),
        "share show {share} after delete: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let trash = c.lustrekit_json(&["share", "trash", "list"]);
    assert!(
        !trash.to_string().contains(&format!(
            "\"{}\"",
            dir.file_name().unwrap().to_string_lossy()
        )),
        "a delete-policy volume went to the trash: {trash}"
    );
}

/// With `reclaimPolicy: trash`, deleting the claim moves the share to the trash; `lustrekit
/// share restore` brings it back with its data, and a static PV mounts it again.
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh"]
fn trashed_volume_comes_back_by_restore() {
    let _g = kube::shared();
    let c = Cluster::get();
    let ns = Namespace::new("trash");
    let class = class(
        "lk-test-trash",
        json!({"reclaimPolicy": "trash", "trashTTL": "1h"}),
    );
    let pv = bound_pvc(&ns, "data", &class, "10Mi", "ReadWriteOnce");
    let p = running_pod(&ns, pod("writer", "data", false, None));
    let token = format!("kept-{}", ns.as_str());
    c.exec_ok(
        ns.as_str(),
        &p,
        &format!("echo {token} > /data/keep.txt && sync"),
    );

    let dir = share_dir(&pv);
    let share = dir.file_name().unwrap().to_string_lossy().into_owned();
    let name = pv_name(&pv);
    delete_pod(&ns, &p);
    c.ok(&[
        "delete",
        "pvc",
        "data",
        "-n",
        ns.as_str(),
        "--wait=true",
        "--timeout=60s",
    ]);
    c.poll(
        "the PV to be deleted",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || c.try_get(None, "pv", &name).is_none().then_some(()),
    );
    assert!(
        !dir.exists(),
        "a trashed share is still at {}",
        dir.display()
    );
    let trash = c.lustrekit_json(&["share", "trash", "list"]);
    assert!(
        trash.to_string().contains(&share),
        "{share} is not in the trash: {trash}"
    );

    let restored = c.lustrekit_json(&["share", "restore", &share]);
    assert!(dir.is_dir(), "restore did not bring back {}", dir.display());
    let volume_id = restored["volume_id"]
        .as_str()
        .expect("volume_id")
        .to_string();
    let path = restored["path"].as_str().expect("path").to_string();

    // Mount the restored share through a static PV.
    let static_pv = format!("{name}-restored");
    c.apply(&json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": static_pv, "labels": {"lustrekit.io/test": "true"}},
        "spec": {
            "capacity": {"storage": "10Mi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": ns.as_str(), "name": "restored"},
            "csi": {
                "driver": DRIVER,
                "volumeHandle": volume_id,
                "volumeAttributes": {"static": "true", "sharePath": path},
            },
        },
    }));
    let mut claim = pvc("restored", "", "10Mi", "ReadWriteOnce");
    claim["spec"]["volumeName"] = json!(static_pv);
    create_in(&ns, claim);
    c.wait_for(
        Some(ns.as_str()),
        "pvc/restored",
        "jsonpath={.status.phase}=Bound",
        Duration::from_secs(60),
    );
    let reader = running_pod(&ns, pod("reader", "restored", false, None));
    let back = c.exec_ok(ns.as_str(), &reader, "cat /data/keep.txt");
    assert_eq!(back.trim(), token);

    // Clean up what lives outside the namespace: the static PV and the share itself.
    delete_pod(&ns, &reader);
    c.ok(&[
        "delete",
        "pvc",
        "restored",
        "-n",
        ns.as_str(),
        "--wait=true",
        "--timeout=60s",
    ]);
    c.ok(&["delete", "pv", &static_pv, "--wait=true", "--timeout=60s"]);
    let out = c.lustrekit(&["share", "delete", &share]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The node plugin's pod is deleted while a volume is published: the pod using the volume
/// keeps reading and writing, the new plugin registers again, publishes the same claim to a
/// second pod, and unpublishes the first.
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh"]
fn node_plugin_restart_keeps_published_volumes_working() {
    let _g = kube::exclusive();
    let c = Cluster::get();
    let ns = Namespace::new("restart");
    let class = delete_class();
    bound_pvc(&ns, "data", &class, "10Mi", "ReadWriteOnce");
    let a = running_pod(&ns, pod("first", "data", false, None));
    c.exec_ok(ns.as_str(), &a, "echo before > /data/before");

    let old = c.node_plugin_pods();
    assert_eq!(old.len(), 1, "one node plugin pod expected: {old:?}");
    c.ok(&[
        "delete",
        "pod",
        &old[0],
        "-n",
        &c.namespace,
        "--wait=true",
        "--timeout=90s",
    ]);
    let new = c.poll(
        "a new node plugin pod",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || {
            let pods = c.node_plugin_pods();
            pods.into_iter().find(|p| *p != old[0])
        },
    );
    c.wait_for(
        Some(&c.namespace),
        &format!("pod/{new}"),
        "condition=Ready",
        Duration::from_secs(120),
    );
    c.poll(
        "the driver registered again",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || {
            let csinode = c.try_get(None, "csinode", &c.node)?;
            csinode["spec"]["drivers"]
                .as_array()?
                .iter()
                .any(|d| d["name"] == DRIVER)
                .then_some(())
        },
    );

    // The published volume still works in the running pod.
    assert_eq!(
        c.exec_ok(ns.as_str(), &a, "cat /data/before").trim(),
        "before"
    );
    c.exec_ok(ns.as_str(), &a, "echo after > /data/after && sync");
    // The new plugin publishes the claim to another pod on the node...
    let b = running_pod(&ns, pod("second", "data", false, None));
    assert_eq!(
        c.exec_ok(ns.as_str(), &b, "cat /data/after").trim(),
        "after"
    );
    // ...and unpublishes the first.
    delete_pod(&ns, &a);
    assert_eq!(
        c.exec_ok(ns.as_str(), &b, "cat /data/before").trim(),
        "before"
    );
}

/// Two pods on the node share one ReadWriteMany volume: each sees the other's writes.
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh"]
fn two_pods_share_one_rwx_volume() {
    let _g = kube::shared();
    let c = Cluster::get();
    let ns = Namespace::new("rwx");
    let class = delete_class();
    bound_pvc(&ns, "shared", &class, "10Mi", "ReadWriteMany");
    let a = running_pod(&ns, pod("a", "shared", false, None));
    let b = running_pod(&ns, pod("b", "shared", false, None));
    c.exec_ok(ns.as_str(), &a, "echo from-a > /data/a");
    assert_eq!(c.exec_ok(ns.as_str(), &b, "cat /data/a").trim(), "from-a");
    c.exec_ok(ns.as_str(), &b, "echo from-b > /data/b");
    assert_eq!(c.exec_ok(ns.as_str(), &a, "cat /data/b").trim(), "from-b");
    // One quota for both: the volume's usage counts both pods' files.
    c.exec_ok(
        ns.as_str(),
        &a,
        "dd if=/dev/zero of=/data/big-a bs=1M count=6 conv=fsync",
    );
    let out = c.exec(
        ns.as_str(),
        &b,
        "dd if=/dev/zero of=/data/big-b bs=1M count=6 conv=fsync 2>&1; echo exit=$?",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Disk quota exceeded"),
        "two pods wrote 12 MiB into one 10 MiB volume: {text}"
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The figures for the README: claim creation to Bound and to a Running pod, against a pod
/// with a hostPath volume on the same node. Prints them (`--nocapture`); the checks are only
/// that every pod ran with its volume mounted.
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh"]
fn measure_claim_to_running_against_host_path() {
    let _g = kube::shared();
    let c = Cluster::get();
    let ns = Namespace::new("measure");
    let class = delete_class();
    let rounds: usize = std::env::var("MEASURE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let (mut bound, mut running, mut host_path) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        let claim = format!("m{i}");
        let start = Instant::now();
        create_in(&ns, pvc(&claim, &class, "10Mi", "ReadWriteOnce"));
        create_in(&ns, pod(&format!("p{i}"), &claim, false, None));
        c.wait_for(
            Some(ns.as_str()),
            &format!("pvc/{claim}"),
            "jsonpath={.status.phase}=Bound",
            Duration::from_secs(120),
        );
        bound.push(start.elapsed());
        c.wait_for(
            Some(ns.as_str()),
            &format!("pod/p{i}"),
            "jsonpath={.status.phase}=Running",
            Duration::from_secs(180),
        );
        running.push(start.elapsed());
        c.exec_ok(
            ns.as_str(),
            &format!("p{i}"),
            "grep -q ' /data ' /proc/mounts",
        );

        let mut h = pod(&format!("h{i}"), "unused", false, None);
        h["spec"]["volumes"] = json!([{
            "name": "data",
            "hostPath": {"path": format!("/var/lib/lustrekit-kube/hostpath/{}-{i}", ns.as_str()), "type": "DirectoryOrCreate"},
        }]);
        let start = Instant::now();
        create_in(&ns, h);
        c.wait_for(
            Some(ns.as_str()),
            &format!("pod/h{i}"),
            "jsonpath={.status.phase}=Running",
            Duration::from_secs(180),
        );
        host_path.push(start.elapsed());
        c.exec_ok(
            ns.as_str(),
            &format!("h{i}"),
            "grep -q ' /data ' /proc/mounts",
        );
    }
    let (b, r, h) = (median(bound), median(running), median(host_path));
    eprintln!(
        "MEASURE rounds={rounds} pvc_to_bound={:.2}s pvc_to_running={:.2}s hostpath_to_running={:.2}s ratio={:.2}",
        b.as_secs_f64(),
        r.as_secs_f64(),
        h.as_secs_f64(),
        r.as_secs_f64() / h.as_secs_f64()
    );
}
