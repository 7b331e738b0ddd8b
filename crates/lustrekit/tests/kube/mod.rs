//! Helpers for the tests that run against a real one-node cluster (scripts/kube-up.sh, with the
//! chart installed by scripts/cluster-test.sh). Shared by every cluster test file: add
//! `mod kube;` to a new `tests/cluster_*.rs` and use [`Cluster::get`] and [`Namespace`].
//!
//! Everything goes through `kubectl` as a subprocess under `timeout`, so no call hangs. The
//! environment (set by scripts/cluster-test.sh):
//!
//! - `KUBECONFIG` (required): the cluster's admin kubeconfig;
//! - `KUBECTL`: the kubectl binary (default: `kubectl` on PATH);
//! - `LUSTREKIT_NAMESPACE` (`lustrekit`) and `LUSTREKIT_RELEASE` (`lustrekit`): where the
//!   chart is installed;
//! - `LUSTREKIT_LOCAL_ROOT` (`/var/lib/lustrekit-e2e`): the `local` backend's root, a btrfs
//!   mount on this host, inspected directly by the tests;
//! - `BUSYBOX_IMAGE` (`localhost/lustrekit/busybox:1.35`): the test pods' image;
//! - `KEEP_NAMESPACES=1`: leave each test's namespace behind for a post-mortem.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const DRIVER: &str = "lustre.csi.lustrekit.io";
/// How long a single kubectl call may run.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The cluster under test, read once from the environment.
pub struct Cluster {
    pub kubectl: PathBuf,
    pub kubeconfig: PathBuf,
    /// The chart's namespace and release name.
    pub namespace: String,
    pub release: String,
    pub local_root: PathBuf,
    pub busybox: String,
    /// The one node's name.
    pub node: String,
}

/// Tests that disrupt the driver for everyone (restarting the node plugin) take this for
/// writing; every other test holds it for reading, so they never overlap with one.
static DISRUPTION: RwLock<()> = RwLock::new(());

pub fn shared() -> RwLockReadGuard<'static, ()> {
    DISRUPTION.read().unwrap_or_else(|e| e.into_inner())
}

pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    DISRUPTION.write().unwrap_or_else(|e| e.into_inner())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

impl Cluster {
    /// The cluster, or a panic that says what is missing (these tests are `#[ignore]`d, and run
    /// only by scripts/cluster-test.sh or by hand against a cluster).
    pub fn get() -> &'static Cluster {
        static CLUSTER: OnceLock<Cluster> = OnceLock::new();
        CLUSTER.get_or_init(|| {
            let kubeconfig = std::env::var_os("KUBECONFIG").map(PathBuf::from).expect(
                "KUBECONFIG is unset: start a cluster with scripts/kube-up.sh, or run scripts/cluster-test.sh",
            );
            assert!(
                kubeconfig.is_file(),
                "KUBECONFIG={} does not exist",
                kubeconfig.display()
            );
            let mut cluster = Cluster {
                kubectl: PathBuf::from(env_or("KUBECTL", "kubectl")),
                kubeconfig,
                namespace: env_or("LUSTREKIT_NAMESPACE", "lustrekit"),
                release: env_or("LUSTREKIT_RELEASE", "lustrekit"),
                local_root: PathBuf::from(env_or("LUSTREKIT_LOCAL_ROOT", "/var/lib/lustrekit-e2e")),
                busybox: env_or("BUSYBOX_IMAGE", "localhost/lustrekit/busybox:1.35"),
                node: String::new(),
            };
            let nodes = cluster.json(&["get", "nodes"]);
            let items = nodes["items"].as_array().expect("node list");
            assert_eq!(items.len(), 1, "expected a one-node cluster");
            cluster.node = items[0]["metadata"]["name"]
                .as_str()
                .expect("node name")
                .to_string();
            cluster
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", &CALL_TIMEOUT.as_secs().to_string()])
            .arg(&self.kubectl)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// Runs kubectl; the output whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.kubectl.display()))
    }

    /// Runs kubectl and returns its stdout; panics with stderr on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl ARGS -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("kubectl {args:?}: not JSON: {e}"))
    }

    /// The object, or `None` when it does not exist.
    pub fn try_get(&self, ns: Option<&str>, kind: &str, name: &str) -> Option<Value> {
        let mut args = vec!["get", kind, name, "-o", "json", "--ignore-not-found"];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        let text = self.ok(&args);
        if text.trim().is_empty() {
            None
        } else {
            Some(serde_json::from_str(&text).expect("object JSON"))
        }
    }

    /// `kubectl apply -f -` with `manifest` (JSON or YAML).
    pub fn apply(&self, manifest: &Value) {
        self.apply_text(&manifest.to_string());
    }

    pub fn apply_text(&self, manifest: &str) {
        let mut child = self
            .command(&["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl apply");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(manifest.as_bytes())
            .expect("write manifest");
        let out = child.wait_with_output().expect("kubectl apply");
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{manifest}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `kubectl wait` for a JSONPath value or condition (`--for=...`), returning how long it
    /// took. Panics (after printing the object) if it never comes.
    pub fn wait_for(
        &self,
        ns: Option<&str>,
        what: &str,
        condition: &str,
        timeout: Duration,
    ) -> Duration {
        let start = Instant::now();
        let timeout_arg = format!("--timeout={}s", timeout.as_secs());
        let for_arg = format!("--for={condition}");
        let mut args = vec!["wait", what, for_arg.as_str(), timeout_arg.as_str()];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        let out = self.run(&args);
        if !out.status.success() {
            let mut get = vec!["get", what, "-o", "yaml"];
            if let Some(ns) = ns {
                get.extend(["-n", ns]);
            }
            let state = String::from_utf8_lossy(&self.run(&get).stdout).into_owned();
            panic!(
                "{what} never reached {condition} in {timeout:?}: {}\n{state}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        start.elapsed()
    }

    /// Polls `check` every `every` until it returns `Some`, or panics with `what` after
    /// `timeout`.
    pub fn poll<T>(
        &self,
        what: &str,
        timeout: Duration,
        every: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}"
            );
            std::thread::sleep(every);
        }
    }

    /// Runs `sh -c SCRIPT` in a pod's first container.
    pub fn exec(&self, ns: &str, pod: &str, script: &str) -> Output {
        self.run(&["exec", "-n", ns, pod, "--", "sh", "-c", script])
    }

    /// Like [`exec`](Self::exec), panicking unless it succeeds; returns stdout.
    pub fn exec_ok(&self, ns: &str, pod: &str, script: &str) -> String {
        let out = self.exec(ns, pod, script);
        assert!(
            out.status.success(),
            "in {ns}/{pod}: `{script}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `lustrekit --json ARGS` in the controller pod (the chart's config, the same share
    /// records the driver uses).
    pub fn lustrekit(&self, args: &[&str]) -> Output {
        let target = format!("deploy/{}-controller", self.release);
        let mut all = vec![
            "exec",
            "-n",
            &self.namespace,
            &target,
            "-c",
            "lustrekit",
            "--",
            "lustrekit",
            "--json",
        ];
        all.extend(args);
        self.run(&all)
    }

    pub fn lustrekit_json(&self, args: &[&str]) -> Value {
        let out = self.lustrekit(args);
        assert!(
            out.status.success(),
            "lustrekit {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("lustrekit {args:?}: not JSON: {e}"))
    }

    /// `kubectl get --raw PATH`.
    pub fn raw(&self, path: &str) -> String {
        self.ok(&["get", "--raw", path])
    }

    /// The kubelet's Prometheus metrics, through the API server's node proxy.
    pub fn kubelet_metrics(&self) -> String {
        self.raw(&format!("/api/v1/nodes/{}/proxy/metrics", self.node))
    }

    /// The kubelet's summary API (`/stats/summary`), through the node proxy.
    pub fn kubelet_summary(&self) -> Value {
        let text = self.raw(&format!("/api/v1/nodes/{}/proxy/stats/summary", self.node));
        serde_json::from_str(&text).expect("summary JSON")
    }

    /// The node plugin pods of the chart.
    pub fn node_plugin_pods(&self) -> Vec<String> {
        let selector = format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component=node",
            self.release
        );
        let list = self.json(&["get", "pods", "-n", &self.namespace, "-l", &selector]);
        list["items"]
            .as_array()
            .expect("pods")
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    }

    /// The last lines of the driver's logs (controller and node), for a failure report.
    pub fn driver_logs(&self, lines: u32) -> String {
        let tail = format!("--tail={lines}");
        let mut text = String::new();
        for component in ["controller", "node"] {
            let selector = format!(
                "app.kubernetes.io/instance={},app.kubernetes.io/component={component}",
                self.release
            );
            let out = self.run(&[
                "logs",
                "-n",
                &self.namespace,
                "-l",
                &selector,
                "--all-containers",
                "--prefix",
                &tail,
            ]);
            text.push_str(&String::from_utf8_lossy(&out.stdout));
            text.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        text
    }
}

/// A namespace of its own for one test, deleted when dropped. When the test failed, its
/// events, pods and the driver's logs are printed first.
pub struct Namespace {
    pub name: String,
}

impl Namespace {
    pub fn new(test: &str) -> Namespace {
        let cluster = Cluster::get();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("lk-{test}-{:04x}", (nanos >> 8) & 0xffff);
        cluster.ok(&["create", "namespace", &name]);
        // Pods are refused until the namespace's default ServiceAccount exists.
        cluster.poll(
            "the default service account",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                cluster
                    .try_get(Some(&name), "serviceaccount", "default")
                    .map(|_| ())
            },
        );
        Namespace { name }
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let cluster = Cluster::get();
        if std::thread::panicking() {
            for args in [
                vec![
                    "get",
                    "events",
                    "-n",
                    &self.name,
                    "--sort-by=.lastTimestamp",
                ],
                vec!["get", "pods,pvc", "-n", &self.name, "-o", "wide"],
                vec!["describe", "pods", "-n", &self.name],
            ] {
                let out = cluster.run(&args);
                eprintln!(
                    "--- kubectl {}\n{}{}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            eprintln!("--- driver logs\n{}", cluster.driver_logs(60));
        }
        if std::env::var_os("KEEP_NAMESPACES").is_some() {
            eprintln!("keeping namespace {}", self.name);
            return;
        }
        let _ = cluster.run(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// A StorageClass of this driver, named for the test, with `parameters`.
pub fn storage_class(name: &str, parameters: Value) -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name, "labels": {"lustrekit.io/test": "true"}},
        "provisioner": DRIVER,
        "reclaimPolicy": "Delete",
        "allowVolumeExpansion": true,
        "volumeBindingMode": "Immediate",
        "parameters": parameters,
    })
}

pub fn pvc(name: &str, class: &str, size: &str, access_mode: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {
            "accessModes": [access_mode],
            "storageClassName": class,
            "resources": {"requests": {"storage": size}},
        },
    })
}

/// A busybox pod that sleeps, with `claim` mounted at /data (read-only if `read_only`), on
/// the node, with optional pod-level `security` (a PodSecurityContext).
pub fn pod(name: &str, claim: &str, read_only: bool, security: Option<Value>) -> Value {
    let cluster = Cluster::get();
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": cluster.busybox,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [{
                "name": "data",
                "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only},
            }],
        },
    });
    if let Some(security) = security {
        pod["spec"]["securityContext"] = security;
    }
    pod
}

/// Applies `manifest` in `ns` (adding the namespace).
pub fn create_in(ns: &Namespace, mut manifest: Value) {
    manifest["metadata"]["namespace"] = json!(ns.as_str());
    Cluster::get().apply(&manifest);
}

/// Creates a PVC and waits until it is Bound; returns the bound PV.
pub fn bound_pvc(ns: &Namespace, name: &str, class: &str, size: &str, access_mode: &str) -> Value {
    let cluster = Cluster::get();
    create_in(ns, pvc(name, class, size, access_mode));
    cluster.wait_for(
        Some(ns.as_str()),
        &format!("pvc/{name}"),
        "jsonpath={.status.phase}=Bound",
        Duration::from_secs(120),
    );
    let claim = cluster.json(&["get", "pvc", name, "-n", ns.as_str()]);
    let pv = claim["spec"]["volumeName"]
        .as_str()
        .expect("bound PVC names its PV");
    cluster.json(&["get", "pv", pv])
}

/// Creates a pod and waits until it runs.
pub fn running_pod(ns: &Namespace, manifest: Value) -> String {
    let cluster = Cluster::get();
    let name = manifest["metadata"]["name"]
        .as_str()
        .expect("pod name")
        .to_string();
    create_in(ns, manifest);
    cluster.wait_for(
        Some(ns.as_str()),
        &format!("pod/{name}"),
        "condition=Ready",
        Duration::from_secs(180),
    );
    name
}

/// Deletes a pod and waits until it is gone (its volume unpublished).
pub fn delete_pod(ns: &Namespace, name: &str) {
    Cluster::get().ok(&[
        "delete",
        "pod",
        name,
        "-n",
        ns.as_str(),
        "--wait=true",
        "--timeout=90s",
    ]);
}

/// The PV's share path relative to the backend root (its `sharePath` volume attribute).
pub fn share_path(pv: &Value) -> String {
    pv["spec"]["csi"]["volumeAttributes"]["sharePath"]
        .as_str()
        .expect("PV has a sharePath")
        .to_string()
}

/// Runs a host command (btrfs-progs and such) and returns stdout; panics on failure.
pub fn host(program: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .args(["-k", "5", "60", program])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The btrfs qgroup `0/<subvolume id>`'s (referenced bytes, max referenced) on the backend's
/// filesystem, or `None` when there is no such qgroup.
pub fn qgroup(subvol_id: u64) -> Option<(u64, Option<u64>)> {
    let root = Cluster::get().local_root.to_string_lossy().into_owned();
    let text = host("btrfs", &["qgroup", "show", "--raw", "-r", "--sync", &root]);
    let id = format!("0/{subvol_id}");
    text.lines().find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.first() != Some(&id.as_str()) {
            return None;
        }
        let rfer = cols.get(1)?.parse().ok()?;
        let max = cols.get(3).and_then(|m| m.parse().ok());
        Some((rfer, max))
    })
}

/// The subvolume ID of a share directory on the host.
pub fn subvolume_id(dir: &std::path::Path) -> u64 {
    host(
        "btrfs",
        &["inspect-internal", "rootid", &dir.to_string_lossy()],
    )
    .trim()
    .parse()
    .expect("subvolume id")
}

/// The value of a kubelet metric for one PVC, if the kubelet reports it.
pub fn pvc_metric(metrics: &str, metric: &str, ns: &str, pvc: &str) -> Option<f64> {
    let ns_label = format!("namespace=\"{ns}\"");
    let pvc_label = format!("persistentvolumeclaim=\"{pvc}\"");
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(metric)?.strip_prefix('{')?;
        let (labels, value) = rest.split_once('}')?;
        (labels.contains(&ns_label) && labels.contains(&pvc_label))
            .then(|| value.split_whitespace().next()?.parse().ok())
            .flatten()
    })
}

pub const MIB: u64 = 1024 * 1024;
