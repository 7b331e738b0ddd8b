//! `lustrekit operator run` against the real API server: the CRD installs, PV/PVC pairs
//! appear and bind, a namespace created later turns Ready, CEL refuses a changed fsName, and
//! deletion waits for a foreign finalizer, then removes the pairs. HPE's `lus.cray.hpe.com`
//! kind, written as HPE's own sample writes it, gets its pairs too; with `--leader-elect` only
//! the Lease's holder reconciles, and a successor takes over. DataMovements copy trees to
//! Azurite and back, in the operator or in a Job, and survive restarts and cancels.

mod kube;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use kube::{Cluster, Namespace};
use serde_json::{Value, json};

const CRD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/crds/lustrefilesystems.lustrekit.io.yaml"
);
const MOVEMENT_CRD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/crds/datamovements.lustrekit.io.yaml"
);
const HPE_CRD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/crds/lustrefilesystems.lus.cray.hpe.com.yaml"
);
/// Both kinds are `lustrefilesystems`: with both CRDs installed, kubectl resolves the bare
/// name to one of them (HPE's, by group order), so every call names the group.
const LFS: &str = "lustrefilesystems.lustrekit.io";
const HPE_LFS: &str = "lustrefilesystems.lus.cray.hpe.com";
const WAIT: Duration = Duration::from_secs(90);

/// An operator process, killed when the test ends however it ends. A test holds
/// [`alone`] while its operators run.
struct Operator {
    child: Child,
    /// Where it serves /metrics.
    metrics: SocketAddr,
}

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
        Self::spawn(cluster, log, &[], None)
    }

    /// [`start`](Self::start) with more `operator run` arguments.
    fn start_with(cluster: &Cluster, log: &std::path::Path, extra: &[&str]) -> Operator {
        Self::spawn(cluster, log, extra, None)
    }

    /// Kills the operator (as a crash would: no graceful stop).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the operator and starts another in its place.
    fn restart(&mut self, cluster: &Cluster, log: &std::path::Path) {
        self.kill();
        *self = Self::spawn(cluster, log, &[], None);
    }

    /// `pod`: the POD_NAME its Lease identity starts with.
    fn spawn(
        cluster: &Cluster,
        log: &std::path::Path,
        args: &[&str],
        pod: Option<&str>,
    ) -> Operator {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("operator log file");
        // A free port: bound, read, released; the operator binds it right after.
        let metrics = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let mut command = Command::new(env!("CARGO_BIN_EXE_lustrekit"));
        command
            .args(["--log", "info,operator=debug", "operator", "run"])
            .args(["--metrics-addr", &metrics.to_string()])
            .args(["--hpe-sub-directory", "datasets"])
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
        let child = command.spawn().expect("spawn lustrekit operator run");
        Operator { child, metrics }
    }

    /// `GET path`: the whole response; empty while the operator is not listening yet.
    fn get(&self, path: &str) -> String {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(5))
        else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut text = String::new();
        let request = format!("GET {path} HTTP/1.1\r\nHost: operator\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err()
            || stream.read_to_string(&mut text).is_err()
        {
            return String::new();
        }
        text
    }

    /// `GET /metrics`, the body.
    fn scrape(&self) -> String {
        self.get("/metrics")
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default()
    }

    /// The value of the sample that starts with `prefix` (name and labels), if exposed.
    fn sample(&self, prefix: &str) -> Option<f64> {
        self.scrape().lines().find_map(|line| {
            line.strip_prefix(prefix)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Installs a committed CRD. `--force-conflicts`: another tool (the chart, the benchmark)
/// may have applied it under its own field manager.
fn install(cluster: &Cluster, file: &str, crd: &str) {
    cluster.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=lustrekit-test",
        "-f",
        file,
    ]);
    cluster.ok(&[
        "wait",
        &format!("crd/{crd}"),
        "--for=condition=Established",
        "--timeout=60s",
    ]);
}

/// Installs our CRDs.
fn install_crd(cluster: &Cluster) {
    install(cluster, CRD, LFS);
    install(cluster, MOVEMENT_CRD, "datamovements.lustrekit.io");
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
    let operator = Operator::start(cluster, &log);

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
            let lfs = cluster.try_get(None, LFS, &name)?;
            (state(&lfs, early.as_str(), rwx).as_deref() == Some("Ready")
                && state(&lfs, early.as_str(), rox).as_deref() == Some("Ready"))
            .then_some(lfs)
        },
    );
    assert_eq!(state(&lfs, &late_name, rwx).as_deref(), Some("Pending"));
    let reconciles = operator
        .sample(
            r#"lustrekit_operator_reconciles_total{resource="lustrefilesystems.lustrekit.io"} "#,
        )
        .expect("the operator's /metrics counts reconciles");
    assert!(reconciles > 0.0, "{reconciles}");
    let ready = operator.get("/readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
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
    cluster.wait_for(None, &format!("{LFS}/{name}"), "condition=Ready", WAIT);

    // CEL: fsName is immutable.
    let out = cluster.run(&[
        "patch",
        LFS,
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
            LFS,
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
        LFS,
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
        LFS,
        &name,
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/finalizers/-","value":"example.com/hold"}]"#,
    ]);
    cluster.ok(&["delete", LFS, &name, "--wait=false"]);
    std::thread::sleep(Duration::from_secs(5));
    assert!(cluster.try_get(None, LFS, &name).is_some());
    assert_eq!(
        owned(cluster, "pv", &name).lines().count(),
        2,
        "pairs kept while held"
    );
    let held = cluster.try_get(None, LFS, &name).expect("still there");
    let others: Vec<&Value> = held["metadata"]["finalizers"]
        .as_array()
        .expect("finalizers")
        .iter()
        .filter(|f| *f != "example.com/hold")
        .collect();
    cluster.ok(&[
        "patch",
        LFS,
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
            (cluster.try_get(None, LFS, &name).is_none()
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
        &format!("{LFS}/{name}"),
        "condition=SpecValid=False",
        WAIT,
    );
    let lfs = cluster.try_get(None, LFS, &name).expect("the resource");
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
    cluster.ok(&["delete", LFS, &name, "--timeout=60s"]);
    let _ = std::fs::remove_file(&log);
}

/// HPE's `LustreFileSystem`, as HPE's sample (config/samples/lus_v1beta1_lustrefilesystem.yaml)
/// writes it: namespaced, no storage class (HPE's default applies), the MGS NIDs as one
/// string. Its pair is made with HPE's names and binds, its status has HPE's shape, and
/// deleting it removes the pair through the finalizer (no ownerReferences: a namespaced
/// owner cannot own a PV).
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh"]
fn operator_serves_hpes_lustrefilesystem() {
    let _guard = kube::shared();
    let cluster = Cluster::get();
    let _alone = alone(cluster);
    install_crd(cluster);
    // Before the operator starts: it serves HPE's kind only if it is installed then.
    install(cluster, HPE_CRD, HPE_LFS);
    let log =
        std::env::temp_dir().join(format!("lustrekit-operator-hpe-{}.log", std::process::id()));
    let _operator = Operator::start(cluster, &log);
    // The resource lives in one namespace and exposes the filesystem in another.
    let home = Namespace::new("op-hpe");
    let user = Namespace::new("op-hpe-user");
    let name = "kauai";
    cluster.apply_text(&format!(
        r#"
apiVersion: lus.cray.hpe.com/v1beta1
kind: LustreFileSystem
metadata:
  labels:
    app.kubernetes.io/name: lustrefilesystem
    app.kubernetes.io/instance: kauai
  name: {name}
  namespace: {home}
spec:
  name: lfs1
  mgsNids: 10.0.0.1@tcp,10.1.0.1@o2ib:10.0.0.2@tcp
  mountRoot: /lus/kauai
  namespaces:
    {user}:
      modes:
        - ReadWriteMany
"#,
        home = home.as_str(),
        user = user.as_str(),
    ));
    let pvc = format!("{name}-{}-readwritemany-pvc", user.as_str());
    let pv = format!("{name}-{}-readwritemany-pv", user.as_str());
    wait_bound(cluster, user.as_str(), &pvc);
    let made = cluster.try_get(None, "pv", &pv).expect("the PV");
    assert_eq!(made["spec"]["csi"]["driver"], kube::DRIVER);
    assert_eq!(made["spec"]["csi"]["volumeHandle"], pv.as_str());
    assert_eq!(made["spec"]["csi"]["volumeAttributes"]["fsName"], "lfs1");
    assert_eq!(made["spec"]["storageClassName"], "nnf-lustre-fs");
    assert!(made["metadata"]["ownerReferences"].is_null());
    let lfs = cluster.poll(
        "HPE's status shape with the mode Ready",
        WAIT,
        Duration::from_millis(500),
        || {
            let lfs = cluster.try_get(Some(home.as_str()), HPE_LFS, name)?;
            (state(&lfs, user.as_str(), "ReadWriteMany").as_deref() == Some("Ready")).then_some(lfs)
        },
    );
    let access = &lfs["status"]["namespaces"][user.as_str()]["modes"]["ReadWriteMany"];
    assert_eq!(access["persistentVolumeRef"]["name"], pv.as_str());
    assert_eq!(access["persistentVolumeClaimRef"]["name"], pvc.as_str());
    assert!(
        lfs["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "lus.cray.hpe.com/lustre_fs"))
    );
    // HPE's webhook rule, as CEL: mgsNids is immutable.
    let out = cluster.run(&[
        "patch",
        HPE_LFS,
        name,
        "-n",
        home.as_str(),
        "--type=merge",
        "-p",
        r#"{"spec":{"mgsNids":"10.0.0.9@tcp"}}"#,
    ]);
    assert!(!out.status.success(), "mgsNids changed");

    cluster.ok(&[
        "delete",
        HPE_LFS,
        name,
        "-n",
        home.as_str(),
        "--timeout=60s",
    ]);
    cluster.poll(
        "the HPE resource's pair gone",
        WAIT,
        Duration::from_millis(500),
        || {
            (cluster.try_get(None, "pv", &pv).is_none()
                && cluster.try_get(Some(user.as_str()), "pvc", &pvc).is_none())
            .then_some(())
        },
    );
    // Others share the cluster, and kubectl resolves a bare `lustrefilesystem` to HPE's kind
    // while it is installed.
    cluster.ok(&["delete", "crd", HPE_LFS, "--wait=false"]);
    let _ = std::fs::remove_file(&log);
}

// ---- DataMovement ----

/// Azurite's well-known development account key (public: Azurite's documented default).
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A tree of `n` files of `size` pseudo-random bytes (plus a nested one and a symlink)
/// under `dir`; returns the files' contents by relative path.
fn make_tree(dir: &std::path::Path, n: usize, size: usize) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for i in 0..n {
        let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let data: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        files.push((format!("f{i:03}"), data));
    }
    files.push(("nested/deeper/small".into(), b"small".to_vec()));
    for (rel, data) in &files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, data).expect("write");
    }
    std::os::unix::fs::symlink("f000", dir.join("link")).expect("symlink");
    files
}

/// The filesystem resource the movements use: a host directory as its mount root (the
/// operator runs on the host, as the `local` case has it in its pod).
fn movement_filesystem(cluster: &Cluster, name: &str, root: &std::path::Path, ns: &str) {
    cluster.apply(&json!({
        "apiVersion": "lustrekit.io/v1alpha1",
        "kind": "LustreFileSystem",
        "metadata": {"name": name},
        "spec": {
            "fsName": "lfs1",
            "mgsNodes": [{"nids": ["10.0.0.1@tcp"]}],
            "mountRoot": root.display().to_string(),
            "subDirectory": "exposed",
            "storageClassName": "lustre-static",
            "namespaces": {ns: {"modes": ["ReadWriteMany"]}},
        },
    }));
}

fn azurite_secret(cluster: &Cluster, ns: &str, key: &str) {
    cluster.apply(&json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "store", "namespace": ns},
        "stringData": {
            "azure_storage_account_name": "devstoreaccount1",
            "azure_storage_account_key": key,
        },
    }));
}

fn movement(cluster: &Cluster, ns: &str, name: &str, spec: Value) {
    cluster.apply(&json!({
        "apiVersion": "lustrekit.io/v1alpha1",
        "kind": "DataMovement",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }));
}

fn movement_status(cluster: &Cluster, ns: &str, name: &str) -> Value {
    cluster
        .try_get(Some(ns), "datamovements.lustrekit.io", name)
        .map(|m| m["status"].clone())
        .unwrap_or(Value::Null)
}

/// Polls until the movement is Finished; returns its status and whether a progress between
/// none and all was seen on the way.
fn wait_finished(cluster: &Cluster, ns: &str, name: &str, within: Duration) -> (Value, bool) {
    let mut partial = false;
    let status = cluster.poll(
        &format!("DataMovement {ns}/{name} finished"),
        within,
        Duration::from_millis(250),
        || {
            let s = movement_status(cluster, ns, name);
            let (done, total) = (
                s["progress"]["filesDone"].as_u64().unwrap_or(0),
                s["progress"]["filesTotal"].as_u64().unwrap_or(0),
            );
            partial |= done > 0 && done < total;
            (s["phase"] == "Finished").then_some(s)
        },
    );
    (status, partial)
}

fn assert_same_tree(files: &[(String, Vec<u8>)], dir: &std::path::Path) {
    for (rel, data) in files {
        let got = std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(got == *data, "{rel}: different bytes");
    }
    assert_eq!(
        std::fs::read_link(dir.join("link")).expect("the symlink"),
        std::path::PathBuf::from("f000")
    );
}

/// After a cancelled copy into `dir`: each file there is whole and exact, some are missing
/// (it was cut short), and no temporary is left.
fn assert_cut_short(files: &[(String, Vec<u8>)], dir: &std::path::Path) {
    let mut whole = 0;
    for (rel, data) in files {
        match std::fs::read(dir.join(rel)) {
            Ok(got) => {
                assert!(got == *data, "{rel}: a partial or wrong file after cancel");
                whole += 1;
            }
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{rel}: {e}"),
        }
    }
    assert!(
        whole < files.len(),
        "cancelled before the end ({whole} files whole)"
    );
    for entry in std::fs::read_dir(dir).expect("ls").filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().to_string();
        assert!(
            !name.starts_with(".lustrekit"),
            "a temporary left behind: {name}"
        );
    }
}

/// Out to Azurite and back in, with progress; and the refusals: a path out of the
/// filesystem, a namespace the filesystem is not exposed to, a wrong key.
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh (and Azurite: scripts/start-azurite.sh)"]
fn data_movement_copies_a_tree_to_azurite_and_back() {
    let _guard = kube::shared();
    let cluster = Cluster::get();
    let _alone = alone(cluster);
    install_crd(cluster);
    let log =
        std::env::temp_dir().join(format!("lustrekit-operator-dm-{}.log", std::process::id()));
    let operator = Operator::start(cluster, &log);
    let ns = Namespace::new("dm");
    let root = tempfile::tempdir().expect("mount root");
    let fs_name = format!("{}-fs", ns.as_str());
    let files = make_tree(&root.path().join("exposed/data"), 24, 96 << 10);
    movement_filesystem(cluster, &fs_name, root.path(), ns.as_str());
    azurite_secret(cluster, ns.as_str(), AZURITE_KEY);
    let url = format!("az://lustrekit-test/{}?use_emulator=true", ns.as_str());

    movement(
        cluster,
        ns.as_str(),
        "out",
        json!({
            "fileSystem": fs_name, "path": "data", "direction": "Out", "url": url,
            "secretRef": {"name": "store"}, "maxBytesPerSecond": 48 << 10,
        }),
    );
    let (status, partial) = wait_finished(cluster, ns.as_str(), "out", WAIT);
    assert_eq!(status["result"], "Success", "{status}");
    assert!(partial, "progress was reported on the way: {status}");
    let p = &status["progress"];
    assert_eq!(p["filesDone"], p["filesTotal"], "{status}");
    assert_eq!(p["bytesDone"], p["bytesTotal"], "{status}");
    let bytes: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(p["bytesTotal"].as_u64(), Some(bytes), "{status}");

    movement(
        cluster,
        ns.as_str(),
        "in",
        json!({
            "fileSystem": fs_name, "path": "back", "direction": "In", "url": url,
            "secretRef": {"name": "store"},
        }),
    );
    let (status, _) = wait_finished(cluster, ns.as_str(), "in", WAIT);
    assert_eq!(status["result"], "Success", "{status}");
    assert_same_tree(&files, &root.path().join("exposed/back"));
    for direction in ["out", "in"] {
        let done = operator.sample(&format!(
            "lustrekit_operator_datamovements_total{{direction=\"{direction}\",result=\"success\"}}"
        ));
        assert_eq!(done, Some(1.0), "{direction}: {}", operator.scrape());
    }

    // Refusals, each a Failed result that says why, and nothing written.
    movement(
        cluster,
        ns.as_str(),
        "escape",
        json!({
            "fileSystem": fs_name, "path": "data/../../..", "direction": "In", "url": url,
            "secretRef": {"name": "store"},
        }),
    );
    let other = Namespace::new("dm-other");
    movement(
        cluster,
        other.as_str(),
        "foreign",
        json!({
            "fileSystem": fs_name, "path": "data", "direction": "Out", "url": url,
        }),
    );
    let (status, _) = wait_finished(cluster, ns.as_str(), "escape", WAIT);
    assert_eq!(status["result"], "Failed", "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("must stay below"),
        "{status}"
    );
    let (status, _) = wait_finished(cluster, other.as_str(), "foreign", WAIT);
    assert_eq!(status["result"], "Failed", "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not exposed to namespace"),
        "{status}"
    );

    // A wrong key: the store refuses, the movement fails clearly, and the key is nowhere.
    let wrong = "d3JvbmcgYnV0IGJhc2U2NA==";
    azurite_secret(cluster, ns.as_str(), wrong);
    movement(
        cluster,
        ns.as_str(),
        "badkey",
        json!({
            "fileSystem": fs_name, "path": "data", "direction": "Out",
            "url": format!("az://lustrekit-test/{}-bad?use_emulator=true", ns.as_str()),
            "secretRef": {"name": "store"},
        }),
    );
    let (status, _) = wait_finished(cluster, ns.as_str(), "badkey", Duration::from_secs(180));
    assert_eq!(status["result"], "Failed", "{status}");
    assert!(!status.to_string().contains(wrong), "{status}");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !logged.contains(wrong) && !logged.contains(AZURITE_KEY),
        "a key reached the log"
    );
    cluster.ok(&[
        "delete",
        "lustrefilesystems.lustrekit.io",
        &fs_name,
        "--timeout=60s",
    ]);
    let _ = std::fs::remove_file(&log);
}

/// A copy survives an operator restart (resumed, skipping what was done), and a cancelled
/// one stops with whole files only; only spec.cancel may change, and only to true.
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh (and Azurite: scripts/start-azurite.sh)"]
fn data_movement_resumes_after_a_restart_and_stops_on_cancel() {
    let _guard = kube::shared();
    let cluster = Cluster::get();
    let _alone = alone(cluster);
    install_crd(cluster);
    let log =
        std::env::temp_dir().join(format!("lustrekit-operator-dm2-{}.log", std::process::id()));
    let mut operator = Operator::start(cluster, &log);
    let ns = Namespace::new("dm-restart");
    let root = tempfile::tempdir().expect("mount root");
    let fs_name = format!("{}-fs", ns.as_str());
    let files = make_tree(&root.path().join("exposed/data"), 32, 192 << 10);
    movement_filesystem(cluster, &fs_name, root.path(), ns.as_str());
    azurite_secret(cluster, ns.as_str(), AZURITE_KEY);
    let url = format!("az://lustrekit-test/{}?use_emulator=true", ns.as_str());
    let slow = 64 << 10;

    movement(
        cluster,
        ns.as_str(),
        "out",
        json!({
            "fileSystem": fs_name, "path": "data", "direction": "Out", "url": url,
            "secretRef": {"name": "store"}, "maxBytesPerSecond": slow,
        }),
    );
    cluster.poll(
        "some files copied",
        WAIT,
        Duration::from_millis(250),
        || {
            let s = movement_status(cluster, ns.as_str(), "out");
            (s["phase"] == "Running" && s["progress"]["filesDone"].as_u64().unwrap_or(0) > 0)
                .then_some(())
        },
    );
    operator.kill();
    let s = movement_status(cluster, ns.as_str(), "out");
    assert_eq!(
        s["phase"], "Running",
        "left Running by the stopped operator: {s}"
    );
    assert_eq!(s["attempts"], 1, "{s}");
    operator.restart(cluster, &log);
    let (status, _) = wait_finished(cluster, ns.as_str(), "out", Duration::from_secs(180));
    assert_eq!(status["result"], "Success", "{status}");
    assert_eq!(status["attempts"], 2, "resumed once: {status}");

    // CEL: the copy's ends are fixed, and a cancel cannot be taken back.
    let patch = |body: &str| {
        cluster.run(&[
            "patch",
            "datamovements.lustrekit.io",
            "-n",
            ns.as_str(),
            "out",
            "--type=merge",
            "-p",
            body,
        ])
    };
    let out = patch(r#"{"spec":{"url":"az://elsewhere/x"}}"#);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("only spec.cancel can change")
    );

    // Back in, slowly, and cancelled midway: what is there is whole, nothing else is.
    movement(
        cluster,
        ns.as_str(),
        "in",
        json!({
            "fileSystem": fs_name, "path": "back", "direction": "In", "url": url,
            "secretRef": {"name": "store"}, "maxBytesPerSecond": slow,
        }),
    );
    cluster.poll(
        "some files copied back",
        WAIT,
        Duration::from_millis(250),
        || {
            let s = movement_status(cluster, ns.as_str(), "in");
            (s["phase"] == "Running" && s["progress"]["filesDone"].as_u64().unwrap_or(0) > 0)
                .then_some(())
        },
    );
    cluster.ok(&[
        "patch",
        "datamovements.lustrekit.io",
        "-n",
        ns.as_str(),
        "in",
        "--type=merge",
        "-p",
        r#"{"spec":{"cancel":true}}"#,
    ]);
    let (status, _) = wait_finished(cluster, ns.as_str(), "in", WAIT);
    assert_eq!(status["result"], "Cancelled", "{status}");
    let out = cluster.run(&[
        "patch",
        "datamovements.lustrekit.io",
        "-n",
        ns.as_str(),
        "in",
        "--type=merge",
        "-p",
        r#"{"spec":{"cancel":false}}"#,
    ]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("stays cancelled")
    );
    std::thread::sleep(Duration::from_millis(500));
    let back = root.path().join("exposed/back");
    assert_cut_short(&files, &back);
    cluster.ok(&[
        "delete",
        "lustrefilesystems.lustrekit.io",
        &fs_name,
        "--timeout=60s",
    ]);
    // The finalizer needs the operator: it goes last.
    drop(operator);
    let _ = std::fs::remove_file(&log);
}

/// With `--copy-runner job` (the Lustre case) the copy is a Job in the movement's namespace
/// that mounts the namespace's own PVC through the CSI driver: it copies a store on the
/// filesystem back into it with progress and a result, and a cancelled one leaves whole files
/// only and its Job deleted.
#[test]
#[ignore = "needs a cluster: scripts/kube-up.sh"]
fn data_movement_runs_in_a_job_through_the_namespaces_claim() {
    let _guard = kube::shared();
    let cluster = Cluster::get();
    let _alone = alone(cluster);
    install_crd(cluster);
    let image = cluster.ok(&[
        "get",
        "daemonset",
        "-n",
        &cluster.namespace,
        &format!("{}-node", cluster.release),
        "-o",
        "jsonpath={.spec.template.spec.containers[?(@.name==\"lustrekit\")].image}",
    ]);
    let log =
        std::env::temp_dir().join(format!("lustrekit-operator-job-{}.log", std::process::id()));
    let _operator = Operator::start_with(
        cluster,
        &log,
        &["--copy-runner", "job", "--copy-image", image.trim()],
    );
    let ns = Namespace::new("dm-job");
    // The volumes' directory on the driver's local backend, as the static PVs name it.
    let sub = format!("{}-fs", ns.as_str());
    let dir = cluster.local_root.join(&sub);
    // Enough files that a slow copy (six waves of eight) is still going when cancelled.
    let files = make_tree(&dir.join("data"), 48, 128 << 10);
    // The store the Job copies from: made on the host by the same copy the Job runs.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lustrekit"))
        .args(["operator", "copy", "--direction", "out", "--root"])
        .arg(&dir)
        .args(["--path", "data", "--url"])
        .arg(format!("file://{}", dir.join("store").display()))
        .output()
        .expect("run lustrekit operator copy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(last.contains(r#""success":true"#), "{last}");
    let fs_name = sub.clone();
    cluster.apply(&json!({
        "apiVersion": "lustrekit.io/v1alpha1",
        "kind": "LustreFileSystem",
        "metadata": {"name": fs_name},
        "spec": {
            "fsName": "lustre",
            "mgsNodes": [{"nids": ["10.0.0.1@tcp"]}],
            "mountRoot": "/unused-by-jobs",
            "subDirectory": sub,
            "storageClassName": "lustre-static",
            "namespaces": {ns.as_str(): {"modes": ["ReadWriteMany"]}},
        },
    }));
    wait_bound(
        cluster,
        ns.as_str(),
        &format!("{fs_name}-{}-readwritemany-pvc", ns.as_str()),
    );

    movement(
        cluster,
        ns.as_str(),
        "in",
        json!({
            "fileSystem": fs_name, "path": "back", "direction": "In", "url": "file:///lustre/store",
        }),
    );
    let (status, _) = wait_finished(cluster, ns.as_str(), "in", Duration::from_secs(180));
    assert_eq!(status["result"], "Success", "{status}");
    assert_eq!(status["runner"], Value::Null, "{status}");
    let p = &status["progress"];
    assert_eq!(p["filesDone"], p["filesTotal"], "{status}");
    assert_same_tree(&files, &dir.join("back"));
    let job = cluster
        .try_get(Some(ns.as_str()), "job", "lustrekit-copy-in")
        .expect("the Job stays for its logs");
    assert_eq!(
        job["metadata"]["ownerReferences"][0]["kind"],
        "DataMovement"
    );

    // Slowly, then cancelled: the Job goes, and what is there is whole.
    movement(
        cluster,
        ns.as_str(),
        "slow",
        json!({
            "fileSystem": fs_name, "path": "slow", "direction": "In", "url": "file:///lustre/store",
            "maxBytesPerSecond": 32 << 10,
        }),
    );
    cluster.poll(
        "the slow copy under way",
        Duration::from_secs(180),
        Duration::from_millis(500),
        || {
            let s = movement_status(cluster, ns.as_str(), "slow");
            (s["phase"] == "Running" && s["progress"]["filesDone"].as_u64().unwrap_or(0) > 0)
                .then_some(())
        },
    );
    cluster.ok(&[
        "patch",
        "datamovements.lustrekit.io",
        "-n",
        ns.as_str(),
        "slow",
        "--type=merge",
        "-p",
        r#"{"spec":{"cancel":true}}"#,
    ]);
    let (status, _) = wait_finished(cluster, ns.as_str(), "slow", WAIT);
    assert_eq!(status["result"], "Cancelled", "{status}");
    cluster.poll("the Job deleted", WAIT, Duration::from_millis(500), || {
        cluster
            .try_get(Some(ns.as_str()), "job", "lustrekit-copy-slow")
            .is_none()
            .then_some(())
    });
    // Its pod stops on SIGTERM and drops its temporaries; wait for it to be gone.
    cluster.poll(
        "the copy pod gone",
        WAIT,
        Duration::from_millis(500),
        || {
            cluster
                .ok(&[
                    "get",
                    "pods",
                    "-n",
                    ns.as_str(),
                    "-l",
                    "batch.kubernetes.io/job-name=lustrekit-copy-slow",
                    "-o",
                    "name",
                ])
                .trim()
                .is_empty()
                .then_some(())
        },
    );
    let slow = dir.join("slow");
    assert_cut_short(&files, &slow);
    cluster.ok(&[
        "delete",
        "lustrefilesystems.lustrekit.io",
        &fs_name,
        "--timeout=60s",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
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
    let pid = nix::unistd::Pid::from_raw(follower.child.id() as i32);
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
    let status = follower
        .child
        .wait()
        .expect("wait for the stopped operator");
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
        || third_process.child.try_wait().ok().flatten(),
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
