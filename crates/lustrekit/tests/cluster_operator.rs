//! `lustrekit operator run` against the real API server: the CRD installs, PV/PVC pairs
//! appear and bind, a namespace created later turns Ready, CEL refuses a changed fsName, and
//! deletion waits for a foreign finalizer, then removes the pairs; with `--leader-elect` only
//! the Lease's holder reconciles, and a successor takes over.

mod kube;

use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use kube::{Cluster, Namespace};
use serde_json::{Value, json};

const CRD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/crds/lustrefilesystems.lustrekit.io.yaml"
);
const WAIT: Duration = Duration::from_secs(90);

/// An operator process, killed when the test ends however it ends.
struct Operator(Child);

/// One test's operators at a time: the tests' processes are not all candidates for one Lease,
/// so two tests' operators would both reconcile every resource.
static ONE_OPERATOR: Mutex<()> = Mutex::new(());

/// While held, the test's own operator is the only one: no other test's runs, and the chart's
/// Deployment is scaled to 0 (and back when dropped).
struct Alone {
    _one: MutexGuard<'static, ()>,
    cluster: &'static Cluster,
    chart_replicas: Option<String>,
}

fn chart_operator(cluster: &Cluster) -> (String, String) {
    (
        format!("deployment/{}-operator", cluster.release),
        format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component=operator",
            cluster.release
        ),
    )
}

fn alone(cluster: &'static Cluster) -> Alone {
    let one = ONE_OPERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let (deployment, selector) = chart_operator(cluster);
    let ns = cluster.namespace.as_str();
    let out = cluster.run(&[
        "get",
        &deployment,
        "-n",
        ns,
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    let replicas = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let chart_replicas =
        (out.status.success() && !replicas.is_empty() && replicas != "0").then_some(replicas);
    if chart_replicas.is_some() {
        cluster.ok(&["scale", &deployment, "-n", ns, "--replicas=0"]);
        cluster.ok(&[
            "wait",
            "--for=delete",
            "pod",
            "-n",
            ns,
            "-l",
            &selector,
            "--timeout=90s",
        ]);
    }
    Alone {
        _one: one,
        cluster,
        chart_replicas,
    }
}

impl Drop for Alone {
    fn drop(&mut self) {
        if let Some(replicas) = &self.chart_replicas {
            let (deployment, _) = chart_operator(self.cluster);
            self.cluster.run(&[
                "scale",
                &deployment,
                "-n",
                &self.cluster.namespace,
                &format!("--replicas={replicas}"),
            ]);
        }
    }
}

impl Operator {
    fn start(cluster: &Cluster, log: &std::path::Path) -> Operator {
        Operator::spawn(cluster, log, &[], None)
    }

    /// `pod`: the POD_NAME its Lease identity starts with.
    fn spawn(
        cluster: &Cluster,
        log: &std::path::Path,
        args: &[&str],
        pod: Option<&str>,
    ) -> Operator {
        let log = std::fs::File::create(log).expect("operator log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_lustrekit"));
        command
            .args(["--log", "info,operator=debug", "operator", "run"])
            .args(args)
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(pod) = pod {
            command.env("POD_NAME", pod);
        }
        Operator(command.spawn().expect("spawn lustrekit operator run"))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Installs the committed CRD. `--force-conflicts`: another tool (the chart, the benchmark)
/// may have applied it under its own field manager.
fn install_crd(cluster: &Cluster) {
    cluster.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=lustrekit-test",
        "-f",
        CRD,
    ]);
    cluster.ok(&[
        "wait",
        "crd/lustrefilesystems.lustrekit.io",
        "--for=condition=Established",
        "--timeout=60s",
    ]);
}

fn state(lfs: &Value, ns: &str, mode: &str) -> Option<String> {
    lfs["status"]["namespaces"][ns]["modes"][mode]["state"]
        .as_str()
        .map(str::to_string)
}

/// `kubectl wait` fails at once on an object that does not exist yet: poll for it first.
fn wait_bound(cluster: &Cluster, ns: &str, pvc: &str) {
    cluster.poll(
        &format!("PVC {ns}/{pvc}"),
        WAIT,
        Duration::from_millis(500),
        || cluster.try_get(Some(ns), "pvc", pvc),
    );
    cluster.wait_for(
        Some(ns),
        &format!("pvc/{pvc}"),
        "jsonpath={.status.phase}=Bound",
        WAIT,
    );
}

fn owned(cluster: &Cluster, kind: &str, name: &str) -> String {
    cluster.ok(&[
        "get",
        kind,
        "-A",
        "-l",
        &format!("lustrekit.io/filesystem={name}"),
        "-o",
        "name",
    ])
}

#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh"]
fn operator_makes_binds_and_removes_pairs() {
    let _guard = kube::shared();
    let cluster = Cluster::get();
    install_crd(cluster);
    let _alone = alone(cluster);
    let log = std::env::temp_dir().join(format!("lustrekit-operator-{}.log", std::process::id()));
    let _operator = Operator::start(cluster, &log);

    let early = Namespace::new("op-early");
    let late_name = format!("{}-late", early.as_str());
    let name = format!("{}-fs", early.as_str());
    let rwx = "ReadWriteMany";
    let rox = "ReadOnlyMany";
    cluster.apply(&json!({
        "apiVersion": "lustrekit.io/v1alpha1",
        "kind": "LustreFileSystem",
        "metadata": {"name": name},
        "spec": {
            "fsName": "lfs1",
            "mgsNodes": [{"nids": ["10.0.0.1@tcp"]}, {"nids": ["10.0.0.2@tcp"]}],
            "mountRoot": "/lus/lfs1",
            "subDirectory": "datasets",
            "storageClassName": "lustre-static",
            "namespaces": {
                early.as_str(): {"modes": [rwx, rox]},
                &late_name: {"modes": [rwx]},
            },
        },
    }));
    let pvc = |ns: &str, mode: &str| format!("{name}-{ns}-{mode}-pvc");
    for mode in ["readwritemany", "readonlymany"] {
        wait_bound(cluster, early.as_str(), &pvc(early.as_str(), mode));
    }
    let pv = cluster
        .try_get(
            None,
            "pv",
            &format!("{name}-{}-readonlymany-pv", early.as_str()),
        )
        .expect("the PV");
    assert_eq!(pv["spec"]["csi"]["driver"], kube::DRIVER);
    assert_eq!(pv["spec"]["csi"]["volumeAttributes"]["static"], "true");
    assert_eq!(
        pv["spec"]["csi"]["volumeAttributes"]["sharePath"],
        "datasets"
    );
    assert_eq!(pv["spec"]["csi"]["readOnly"], true);
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    let lfs = cluster.poll(
        "the early namespace Ready in status",
        WAIT,
        Duration::from_millis(500),
        || {
            let lfs = cluster.try_get(None, "lustrefilesystem", &name)?;
            (state(&lfs, early.as_str(), rwx).as_deref() == Some("Ready")
                && state(&lfs, early.as_str(), rox).as_deref() == Some("Ready"))
            .then_some(lfs)
        },
    );
    assert_eq!(state(&lfs, &late_name, rwx).as_deref(), Some("Pending"));
    assert_eq!(lfs["status"]["readyNamespaces"], "1/2");
    assert!(
        lfs["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "lustrekit.io/cleanup"))
    );

    // The namespace appears: its pair is made and binds, and the whole resource turns Ready.
    cluster.ok(&["create", "namespace", &late_name]);
    let late = Namespace { name: late_name };
    wait_bound(cluster, late.as_str(), &pvc(late.as_str(), "readwritemany"));
    cluster.wait_for(
        None,
        &format!("lustrefilesystem/{name}"),
        "condition=Ready",
        WAIT,
    );

    // CEL: fsName is immutable.
    let out = cluster.run(&[
        "patch",
        "lustrefilesystem",
        &name,
        "--type=merge",
        "-p",
        r#"{"spec":{"fsName":"other"}}"#,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("fsName is immutable"),
        "{stderr}"
    );

    // The schema refuses a relative mount root and a too-long fs name.
    for (field, value) in [("mountRoot", "lus/x"), ("fsName", "ninechars")] {
        let out = cluster.run(&[
            "patch",
            "lustrefilesystem",
            &name,
            "--type=merge",
            "-p",
            &json!({"spec": {field: value}}).to_string(),
        ]);
        assert!(!out.status.success(), "{field}={value} accepted");
    }

    // A deleted PVC is made again, and its Released PV re-bound to it.
    let rwx_pvc = pvc(early.as_str(), "readwritemany");
    let old_uid = cluster
        .try_get(Some(early.as_str()), "pvc", &rwx_pvc)
        .expect("the PVC")["metadata"]["uid"]
        .clone();
    cluster.ok(&[
        "delete",
        "pvc",
        "-n",
        early.as_str(),
        &rwx_pvc,
        "--timeout=60s",
    ]);
    cluster.poll(
        "the PVC made again",
        WAIT,
        Duration::from_millis(500),
        || {
            cluster
                .try_get(Some(early.as_str()), "pvc", &rwx_pvc)
                .filter(|p| p["metadata"]["uid"] != old_uid)
        },
    );
    wait_bound(cluster, early.as_str(), &rwx_pvc);

    // Removing a namespace from the spec deletes its pair (PVC and PV).
    cluster.ok(&[
        "patch",
        "lustrefilesystem",
        &name,
        "--type=json",
        "-p",
        &json!([{"op": "remove", "path": format!("/spec/namespaces/{}", late.as_str())}])
            .to_string(),
    ]);
    let late_pv = format!("{name}-{}-readwritemany-pv", late.as_str());
    cluster.poll(
        "the removed namespace's pair gone",
        WAIT,
        Duration::from_millis(500),
        || {
            (cluster.try_get(None, "pv", &late_pv).is_none()
                && cluster
                    .try_get(
                        Some(late.as_str()),
                        "pvc",
                        &pvc(late.as_str(), "readwritemany"),
                    )
                    .is_none())
            .then_some(())
        },
    );

    // Deletion waits for a foreign finalizer, then removes every pair.
    cluster.ok(&[
        "patch",
        "lustrefilesystem",
        &name,
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/finalizers/-","value":"example.com/hold"}]"#,
    ]);
    cluster.ok(&["delete", "lustrefilesystem", &name, "--wait=false"]);
    std::thread::sleep(Duration::from_secs(5));
    assert!(cluster.try_get(None, "lustrefilesystem", &name).is_some());
    assert_eq!(
        owned(cluster, "pv", &name).lines().count(),
        2,
        "pairs kept while held"
    );
    let held = cluster
        .try_get(None, "lustrefilesystem", &name)
        .expect("still there");
    let others: Vec<&Value> = held["metadata"]["finalizers"]
        .as_array()
        .expect("finalizers")
        .iter()
        .filter(|f| *f != "example.com/hold")
        .collect();
    cluster.ok(&[
        "patch",
        "lustrefilesystem",
        &name,
        "--type=merge",
        "-p",
        &json!({"metadata": {"finalizers": others}}).to_string(),
    ]);
    cluster.poll(
        "the resource and its pairs gone",
        WAIT,
        Duration::from_millis(500),
        || {
            (cluster.try_get(None, "lustrefilesystem", &name).is_none()
                && owned(cluster, "pv", &name).trim().is_empty()
                && owned(cluster, "pvc", &name).trim().is_empty())
            .then_some(())
        },
    );
    let _ = std::fs::remove_file(&log);
}

/// A spec the schema lets through but that cannot be served (a NID with no network) gets a
/// failed condition that names the field, and nothing is made.
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh"]
fn operator_reports_an_invalid_spec_and_makes_nothing() {
    let _guard = kube::shared();
    let cluster = Cluster::get();
    install_crd(cluster);
    let _alone = alone(cluster);
    let log =
        std::env::temp_dir().join(format!("lustrekit-operator-bad-{}.log", std::process::id()));
    let _operator = Operator::start(cluster, &log);
    let ns = Namespace::new("op-bad");
    let name = format!("{}-fs", ns.as_str());
    cluster.apply(&json!({
        "apiVersion": "lustrekit.io/v1alpha1",
        "kind": "LustreFileSystem",
        "metadata": {"name": name},
        "spec": {
            "fsName": "lfs1",
            "mgsNodes": [{"nids": ["10.0.0.1"]}],
            "mountRoot": "/lus/lfs1",
            "subDirectory": "datasets",
            "storageClassName": "lustre-static",
            "namespaces": {ns.as_str(): {"modes": ["ReadWriteMany"]}},
        },
    }));
    cluster.wait_for(
        None,
        &format!("lustrefilesystem/{name}"),
        "condition=SpecValid=False",
        WAIT,
    );
    let lfs = cluster
        .try_get(None, "lustrefilesystem", &name)
        .expect("the resource");
    let conditions = lfs["status"]["conditions"].as_array().expect("conditions");
    let spec_valid = conditions
        .iter()
        .find(|c| c["type"] == "SpecValid")
        .expect("SpecValid");
    let message = spec_valid["message"].as_str().unwrap_or_default();
    assert!(message.contains("spec.mgsNodes[0].nids[0]"), "{message}");
    let selector = format!("reason=InvalidSpec,involvedObject.name={name}");
    cluster.poll(
        "an InvalidSpec event",
        WAIT,
        Duration::from_millis(500),
        || {
            let events = cluster.ok(&[
                "get",
                "events",
                "-A",
                "--field-selector",
                &selector,
                "-o",
                "name",
            ]);
            (!events.trim().is_empty()).then_some(())
        },
    );
    assert!(owned(cluster, "pv", &name).trim().is_empty());
    assert!(owned(cluster, "pvc", &name).trim().is_empty());
    cluster.ok(&["delete", "lustrefilesystem", &name, "--timeout=60s"]);
    let _ = std::fs::remove_file(&log);
}

/// The Lease's holder, if any.
fn lease_holder(cluster: &Cluster, ns: &str, lease: &str) -> Option<String> {
    cluster.try_get(Some(ns), "lease", lease)?["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

fn log_text(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Of two `--leader-elect` operators only the Lease's holder reconciles; killed, the other
/// takes over once the claim runs out; stopped gracefully, the successor starts at once; and a
/// holder whose Lease is taken from it steps down with a failure.
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh"]
fn one_elected_operator_reconciles_and_a_successor_takes_over() {
    const LEASE: &str = "lustrekit-operator-test";
    const DURATION: Duration = Duration::from_secs(6);
    let _guard = kube::shared();
    let cluster = Cluster::get();
    install_crd(cluster);
    let _alone = alone(cluster);
    let ns = Namespace::new("op-lease");
    let log = |pod: &str| {
        std::env::temp_dir().join(format!("lustrekit-{pod}-{}.log", std::process::id()))
    };
    let duration = format!("{}s", DURATION.as_secs());
    let start = |pod: &str| {
        Operator::spawn(
            cluster,
            &log(pod),
            &[
                "--leader-elect",
                "--lease-name",
                LEASE,
                "--lease-namespace",
                ns.as_str(),
                "--lease-duration",
                &duration,
            ],
            Some(pod),
        )
    };
    let mut candidates = vec![("op-a", start("op-a")), ("op-b", start("op-b"))];
    let holder = cluster.poll("a Lease holder", WAIT, Duration::from_millis(200), || {
        lease_holder(cluster, ns.as_str(), LEASE)
    });
    let leader = candidates
        .iter()
        .position(|(pod, _)| holder.starts_with(&format!("{pod}-")))
        .unwrap_or_else(|| panic!("holder {holder} is none of the candidates"));
    let (leader_pod, leader_process) = candidates.remove(leader);
    let (follower_pod, _follower_process) = &candidates[0];

    let name = format!("{}-fs", ns.as_str());
    let second = format!("{}-two", ns.as_str());
    let mut spec = json!({
        "apiVersion": "lustrekit.io/v1alpha1",
        "kind": "LustreFileSystem",
        "metadata": {"name": name},
        "spec": {
            "fsName": "lfs1",
            "mgsNodes": [{"nids": ["10.0.0.1@tcp"]}],
            "mountRoot": "/lus/lfs1",
            "subDirectory": "datasets",
            "storageClassName": "lustre-static",
            "namespaces": {ns.as_str(): {"modes": ["ReadWriteMany"]}},
        },
    });
    cluster.apply(&spec);
    let pvc = |ns: &str| format!("{name}-{ns}-readwritemany-pvc");
    wait_bound(cluster, ns.as_str(), &pvc(ns.as_str()));
    let leader_log = log_text(&log(leader_pod));
    let follower_log = log_text(&log(follower_pod));
    assert!(leader_log.contains("reconciled"), "{leader_log}");
    assert!(
        follower_log.contains("waiting for the lease") && !follower_log.contains("reconciled"),
        "the follower reconciled: {follower_log}"
    );

    // Killed, it cannot release: the follower waits for the claim to run out, no longer than
    // the duration after the last renewal plus its poll (an eighth) twice over.
    let killed = std::time::Instant::now();
    drop(leader_process);
    let successor = cluster.poll(
        "the follower holding the Lease",
        WAIT,
        Duration::from_millis(100),
        || lease_holder(cluster, ns.as_str(), LEASE).filter(|h| h != &holder),
    );
    let takeover = killed.elapsed();
    eprintln!("takeover after SIGKILL: {takeover:?} (lease {DURATION:?})");
    assert!(
        successor.starts_with(&format!("{follower_pod}-")),
        "{successor}"
    );
    assert!(
        takeover <= DURATION + DURATION / 4 + Duration::from_secs(1),
        "{takeover:?}"
    );
    // The successor reconciles: a namespace added to the spec gets its pair.
    cluster.ok(&["create", "namespace", &second]);
    let second_ns = Namespace { name: second };
    spec["spec"]["namespaces"][second_ns.as_str()] = json!({"modes": ["ReadWriteMany"]});
    cluster.apply(&spec);
    wait_bound(cluster, second_ns.as_str(), &pvc(second_ns.as_str()));

    // A graceful stop (SIGTERM, as from the kubelet) releases the Lease: a new candidate takes
    // it on its next poll, long before the claim would run out.
    let (follower_pod, mut follower) = candidates.remove(0);
    let mut third_process = start("op-c");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        lease_holder(cluster, ns.as_str(), LEASE).as_deref(),
        Some(successor.as_str())
    );
    let stopped = std::time::Instant::now();
    let pid = nix::unistd::Pid::from_raw(follower.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let third = cluster.poll(
        "op-c holding the Lease",
        WAIT,
        Duration::from_millis(100),
        || lease_holder(cluster, ns.as_str(), LEASE).filter(|h| h.starts_with("op-c-")),
    );
    let handover = stopped.elapsed();
    eprintln!("handover after SIGTERM: {handover:?}");
    assert!(handover < DURATION / 2, "{handover:?}");
    let status = follower.0.wait().expect("wait for the stopped operator");
    assert!(status.success(), "a graceful stop exits 0: {status}");
    let stopped_log = log_text(&log(follower_pod));
    assert!(stopped_log.contains("released the lease"), "{stopped_log}");

    // The new leader deletes the resource (its finalizer), then loses its Lease to an intruder
    // and steps down with a failure.
    // The full name: another group's LustreFileSystem may share the short one.
    cluster.ok(&[
        "delete",
        "lustrefilesystems.lustrekit.io",
        &name,
        "--timeout=60s",
    ]);
    cluster.ok(&[
        "patch",
        "lease",
        LEASE,
        "-n",
        ns.as_str(),
        "--type=merge",
        "-p",
        r#"{"spec":{"holderIdentity":"intruder"}}"#,
    ]);
    let exited = cluster.poll(
        "op-c stepping down",
        WAIT,
        Duration::from_millis(200),
        || third_process.0.try_wait().ok().flatten(),
    );
    assert!(!exited.success(), "stepping down exits non-zero: {exited}");
    let third_log = log_text(&log("op-c"));
    assert!(third_log.contains("stepping down"), "{third_log}");
    eprintln!("{third} stepped down: {exited}");
    for pod in ["op-a", "op-b", "op-c"] {
        let _ = std::fs::remove_file(log(pod));
    }
}

/// The chart's operator (scripts/cluster-test.sh installs it, two replicas): one replica holds
/// its Lease, and with only the chart's account it makes, binds, reports and removes pairs;
/// the account can do no more than that.
#[test]
#[ignore = "needs a cluster: scripts/cluster-test.sh"]
fn the_charts_operator_leads_and_its_account_suffices() {
    let _guard = kube::shared();
    let cluster = Cluster::get();
    let _one = ONE_OPERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let (deployment, selector) = chart_operator(cluster);
    let release_ns = cluster.namespace.as_str();
    let lease = format!("{}-operator", cluster.release);
    // Another test may have just scaled it back up.
    cluster.ok(&[
        "rollout",
        "status",
        &deployment,
        "-n",
        release_ns,
        "--timeout=120s",
    ]);
    let holder = cluster.poll(
        "a replica of the chart's operator holding its Lease",
        WAIT,
        Duration::from_millis(500),
        || {
            let holder = lease_holder(cluster, release_ns, &lease)?;
            let pods = cluster.ok(&[
                "get",
                "pods",
                "-n",
                release_ns,
                "-l",
                &selector,
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ]);
            pods.split_whitespace()
                .any(|pod| holder.starts_with(&format!("{pod}-")))
                .then_some(holder)
        },
    );
    eprintln!("the chart's operator leader: {holder}");

    // Least privilege: what it needs, and not a verb more.
    let account = format!(
        "--as=system:serviceaccount:{release_ns}:{}-operator",
        cluster.release
    );
    let can = |args: &[&str]| {
        let mut all = vec!["auth", "can-i", account.as_str()];
        all.extend(args);
        cluster.run(&all).status.success()
    };
    let lease_ref = format!("leases.coordination.k8s.io/{lease}");
    for allowed in [
        &["patch", "lustrefilesystems.lustrekit.io"][..],
        &[
            "update",
            "lustrefilesystems.lustrekit.io",
            "--subresource=status",
        ],
        &["create", "persistentvolumes"],
        &["delete", "persistentvolumeclaims", "-n", "default"],
        &["create", "events.events.k8s.io", "-n", "default"],
        &["update", &lease_ref, "-n", release_ns],
        &["create", "leases.coordination.k8s.io", "-n", release_ns],
    ] {
        assert!(can(allowed), "the operator may not {allowed:?}");
    }
    for refused in [
        &["delete", "lustrefilesystems.lustrekit.io"][..],
        &["delete", "namespaces"],
        &["update", "persistentvolumes"],
        &["list", "secrets", "-n", "default"],
        &[
            "update",
            "leases.coordination.k8s.io/other",
            "-n",
            release_ns,
        ],
        &["update", &lease_ref, "-n", "default"],
        &["create", "pods", "-n", "default"],
    ] {
        assert!(!can(refused), "the operator may {refused:?}");
    }

    let ns = Namespace::new("op-chart");
    let name = format!("{}-fs", ns.as_str());
    cluster.apply(&json!({
        "apiVersion": "lustrekit.io/v1alpha1",
        "kind": "LustreFileSystem",
        "metadata": {"name": name},
        "spec": {
            "fsName": "lfs1",
            "mgsNodes": [{"nids": ["10.0.0.1@tcp"]}],
            "mountRoot": "/lus/lfs1",
            "subDirectory": "datasets",
            "storageClassName": "lustre-static",
            "namespaces": {ns.as_str(): {"modes": ["ReadWriteMany", "ReadOnlyMany"]}},
        },
    }));
    for mode in ["readwritemany", "readonlymany"] {
        wait_bound(
            cluster,
            ns.as_str(),
            &format!("{name}-{}-{mode}-pvc", ns.as_str()),
        );
    }
    // The full name: another group's LustreFileSystem may share the short one.
    let resource = format!("lustrefilesystems.lustrekit.io/{name}");
    cluster.wait_for(None, &resource, "condition=Ready", WAIT);
    cluster.ok(&["delete", &resource, "--timeout=60s"]);
    cluster.poll("the pairs gone", WAIT, Duration::from_millis(500), || {
        (owned(cluster, "pv", &name).trim().is_empty()
            && owned(cluster, "pvc", &name).trim().is_empty())
        .then_some(())
    });
    let logs = cluster.ok(&[
        "logs",
        "-n",
        release_ns,
        "-l",
        &selector,
        "--tail=-1",
        "--prefix",
    ]);
    assert!(
        !logs.to_lowercase().contains("forbidden"),
        "the operator was refused something:\n{logs}"
    );
}
