//! CreateVolume/DeleteVolume throughput through the CSI socket at 1, 16 and 64 concurrent
//! clients, against the share service called in-process in the same run (the ratio is the
//! gRPC and driver overhead). Run by `benches/csi-bench.sh` on a btrfs loop image:
//!
//! `csi-bench <root dir> [volumes per level]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use csi::grpc::controller_client::ControllerClient;
use csi::grpc::*;
use csi::{Driver, DriverOptions, Mode};

const LEVELS: &[usize] = &[1, 16, 64];

fn config(root: &std::path::Path) -> share::Config {
    share::Config::from_toml(&format!(
        "backend = \"local\"\nfsname = \"bench\"\nproject_ids = \"30000-39999\"\n[local]\nroot = \"{}\"\n",
        root.display()
    ))
    .unwrap()
}

struct Run {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

fn summarise(mut lat: Vec<Duration>, wall: Duration) -> Run {
    lat.sort();
    let pick = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    Run {
        rate: lat.len() as f64 / wall.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
    }
}

/// Runs `n` operations over `clients` workers; `op(i)` is one operation.
async fn drive<F, Fut>(n: usize, clients: usize, op: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (op, next) = (Arc::clone(&op), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                op(i).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    summarise(all, start.elapsed())
}

fn cap() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(volume_capability::AccessType::Mount(Default::default())),
        access_mode: Some(volume_capability::AccessMode { mode: 5 }),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let root = std::path::PathBuf::from(args.next().expect("usage: csi-bench <root> [volumes]"));
    let n: usize = args.next().map(|s| s.parse().unwrap()).unwrap_or(256);
    let config = config(&root);
    let fs = config.open_backend().await.unwrap();
    let service = Arc::new(
        share::ShareService::open(fs, config.settings().unwrap())
            .await
            .unwrap(),
    );
    let driver = Driver::new(
        Arc::clone(&service),
        DriverOptions {
            name: "bench".into(),
            node_id: "bench".into(),
            mode: Mode::Controller,
            fs_timeout: csi::DEFAULT_FS_TIMEOUT,
            quota_margin: Default::default(),
            hsm_import_timeout: csi::DEFAULT_HSM_IMPORT_TIMEOUT,
            node_state_dir: None,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let sock = socket.clone();
    let server = tokio::spawn(async move {
        csi::server::serve(
            driver,
            &sock,
            None,
            async move {
                let _ = stop_rx.await;
            },
            move |_| {
                let _ = ready_tx.send(());
            },
        )
        .await
    });
    ready_rx.await.unwrap();
    let sock = socket.clone();
    let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let sock = sock.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(sock).await?,
                ))
            }
        }))
        .await
        .unwrap();

    println!("| clients | path | op | volumes/s | p50 ms | p99 ms |");
    println!("|---:|---|---|---:|---:|---:|");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for &clients in LEVELS {
        // gRPC through the driver.
        let ch = channel.clone();
        let create = drive(n, clients, move |i| {
            let mut c = ControllerClient::new(ch.clone());
            async move {
                c.create_volume(CreateVolumeRequest {
                    name: format!("g{clients}-{i}"),
                    capacity_range: Some(CapacityRange {
                        required_bytes: 1 << 20,
                        limit_bytes: 0,
                    }),
                    volume_capabilities: vec![cap()],
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        })
        .await;
        let ch = channel.clone();
        let settings_fs = service.settings().fsname.to_string();
        let ids: Arc<Vec<String>> = Arc::new(
            service
                .list()
                .await
                .unwrap()
                .into_iter()
                .filter(|s| s.name.as_str().starts_with(&format!("g{clients}-")))
                .map(|s| s.volume_id.to_string())
                .collect(),
        );
        assert!(ids.iter().all(|id| id.contains(&settings_fs)));
        let m = ids.len();
        let delete = drive(m, clients, move |i| {
            let mut c = ControllerClient::new(ch.clone());
            let id = ids[i].clone();
            async move {
                c.delete_volume(DeleteVolumeRequest {
                    volume_id: id,
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        })
        .await;
        // The share service in-process.
        let svc = Arc::clone(&service);
        let direct_create = drive(n, clients, move |i| {
            let svc = Arc::clone(&svc);
            async move {
                svc.create(share::CreateShare {
                    name: lustre_model::ShareName::new(&format!("d{clients}-{i}")).unwrap(),
                    size_bytes: 1 << 20,
                    inode_limit: None,
                    labels: Default::default(),
                    layout: None,
                    compression: None,
                })
                .await
                .unwrap();
            }
        })
        .await;
        let svc = Arc::clone(&service);
        let direct_delete = drive(n, clients, move |i| {
            let svc = Arc::clone(&svc);
            async move {
                svc.delete(
                    &lustre_model::ShareName::new(&format!("d{clients}-{i}")).unwrap(),
                    share::DeleteMode::Purge,
                )
                .await
                .unwrap();
            }
        })
        .await;
        for (path, op, r) in [
            ("csi", "create", &create),
            ("direct", "create", &direct_create),
            ("csi", "delete", &delete),
            ("direct", "delete", &direct_delete),
        ] {
            println!(
                "| {clients} | {path} | {op} | {:.0} | {:.2} | {:.2} |",
                r.rate,
                ms(r.p50),
                ms(r.p99)
            );
        }
        println!(
            "| {clients} | ratio csi/direct | create {:.2}, delete {:.2} | | | |",
            create.rate / direct_create.rate,
            delete.rate / direct_delete.rate
        );
    }
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}
