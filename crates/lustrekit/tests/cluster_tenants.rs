//! `lustrekit csi --mode controller` against the real API server: a namespace's
//! `lustrekit.io/tenant` label places its volumes under the tenant's root, read from the
//! controller's watch of namespaces (a relabel is followed); a label naming no declared
//! tenant is FAILED_PRECONDITION naming it, and a StorageClass `tenant` that is not the
//! namespace's is INVALID_ARGUMENT.

mod kube;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use csi::grpc::controller_client::ControllerClient;
use csi::grpc::*;
use kube::{Cluster, Namespace};
use tonic::Code;

/// The driver's controller, killed when the test ends however it ends.
struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_controller(cluster: &Cluster, dir: &Path) -> Controller {
    let config = dir.join("lustrekit.toml");
    std::fs::write(
        &config,
        format!(
            "backend = \"local\"\nfsname = \"testfs\"\nshare_prefix = \"shares\"\n\
             project_ids = \"5000-5999\"\n[local]\nroot = \"{}\"\n\
             [[tenants]]\nname = \"alpha\"\nranges = [\"10.201.0.0/24\"]\n\
             [[tenants]]\nname = \"beta\"\nranges = [\"10.202.0.0/24\"]\n",
            dir.join("root").display()
        ),
    )
    .expect("config");
    let log = std::fs::File::create(dir.join("controller.log")).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_lustrekit"))
        .args(["--log", "info", "--config"])
        .arg(&config)
        .args(["csi", "--mode", "controller", "--metrics-address", "off"])
        .arg(format!(
            "--endpoint=unix://{}",
            dir.join("csi.sock").display()
        ))
        .env("KUBECONFIG", &cluster.kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn lustrekit csi");
    Controller(child)
}

async fn connect(socket: &Path) -> ControllerClient<tonic::transport::Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the controller did not serve");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let socket = socket.to_path_buf();
    let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect");
    ControllerClient::new(channel)
}

fn create_req(name: &str, namespace: &str, extra: &[(&str, &str)]) -> CreateVolumeRequest {
    let mut parameters: HashMap<String, String> = HashMap::from([
        ("csi.storage.k8s.io/pvc/namespace".into(), namespace.into()),
        ("csi.storage.k8s.io/pvc/name".into(), "claim".into()),
        ("csi.storage.k8s.io/pv/name".into(), name.into()),
    ]);
    parameters.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 1 << 20,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![VolumeCapability {
            access_type: Some(volume_capability::AccessType::Mount(
                volume_capability::MountVolume::default(),
            )),
            access_mode: Some(volume_capability::AccessMode {
                mode: volume_capability::access_mode::Mode::MultiNodeMultiWriter as i32,
            }),
        }],
        parameters,
        ..Default::default()
    }
}

/// CreateVolume, retried while the controller has not seen the namespace (UNAVAILABLE) or
/// while `retry_on` says the answer is not the one awaited yet.
async fn create_until(
    client: &mut ControllerClient<tonic::transport::Channel>,
    req: CreateVolumeRequest,
    settled: impl Fn(&Result<Volume, tonic::Status>) -> bool,
) -> Result<Volume, tonic::Status> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = client
            .create_volume(req.clone())
            .await
            .map(|r| r.into_inner().volume.expect("volume"));
        let waiting = matches!(&got, Err(s) if s.code() == Code::Unavailable);
        if (!waiting && settled(&got)) || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn a_namespace_label_places_volumes_under_its_tenant() {
    // Not kube::shared(): this test runs its own controller, which no disruption of the
    // chart's driver touches.
    let cluster = Cluster::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let labelled = Namespace::new("tenant-label");
    let undeclared = Namespace::new("tenant-undeclared");
    cluster.ok(&[
        "label",
        "namespace",
        labelled.as_str(),
        "lustrekit.io/tenant=alpha",
    ]);
    cluster.ok(&[
        "label",
        "namespace",
        undeclared.as_str(),
        "lustrekit.io/tenant=gamma",
    ]);
    let _controller = start_controller(cluster, dir.path());
    let mut client = connect(&dir.path().join("csi.sock")).await;

    let volume = create_until(
        &mut client,
        create_req("pvc-label-1", labelled.as_str(), &[]),
        |_| true,
    )
    .await
    .expect("create in the labelled namespace");
    assert_eq!(volume.volume_context["tenant"], "alpha", "{volume:?}");
    assert!(
        volume.volume_context["sharePath"].starts_with("shares/alpha/"),
        "{volume:?}"
    );

    let err = create_until(
        &mut client,
        create_req("pvc-label-2", undeclared.as_str(), &[]),
        |_| true,
    )
    .await
    .expect_err("gamma is no tenant");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("\"gamma\""), "{err:?}");

    let err = create_until(
        &mut client,
        create_req("pvc-label-3", labelled.as_str(), &[("tenant", "beta")]),
        |_| true,
    )
    .await
    .expect_err("the class names another tenant");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // A relabel is followed.
    cluster.ok(&[
        "label",
        "--overwrite",
        "namespace",
        labelled.as_str(),
        "lustrekit.io/tenant=beta",
    ]);
    let volume = create_until(
        &mut client,
        create_req("pvc-label-4", labelled.as_str(), &[("tenant", "beta")]),
        |got| got.is_ok(),
    )
    .await
    .expect("create after the relabel");
    assert_eq!(volume.volume_context["tenant"], "beta", "{volume:?}");
}
