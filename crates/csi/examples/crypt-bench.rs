//! Encryption's cost: NodePublishVolume latency (p50/p99) of an encrypted volume (a KMIP
//! fetch and FS_IOC_ADD_ENCRYPTION_KEY each time, since every unpublish removes the key)
//! against a plain one, and sequential write/read throughput through the published target,
//! each as a ratio to the plain volume. Run by `benches/crypt-bench.sh` on an ext4
//! `-O encrypt` loop image with the test KMIP server:
//!
//! `crypt-bench <root dir> <kmip host:port> <pki dir> [publishes] [MiB]`

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use csi::grpc::controller_client::ControllerClient;
use csi::grpc::node_client::NodeClient;
use csi::grpc::*;
use csi::{Driver, DriverOptions, Mode};
use tonic::transport::Channel;

fn cap() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(volume_capability::AccessType::Mount(Default::default())),
        access_mode: Some(volume_capability::AccessMode { mode: 5 }),
    }
}

fn pick(lat: &mut [Duration], q: f64) -> f64 {
    lat.sort();
    lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0
}

fn drop_caches() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

struct Figures {
    p50: f64,
    p99: f64,
    write_mib_s: f64,
    read_mib_s: f64,
}

async fn measure(
    channel: &Channel,
    name: &str,
    params: &[(&str, &str)],
    secrets: &HashMap<String, String>,
    work: &Path,
    publishes: usize,
    mib: usize,
) -> Figures {
    let mut c = ControllerClient::new(channel.clone());
    let mut n = NodeClient::new(channel.clone());
    let volume = c
        .create_volume(CreateVolumeRequest {
            name: name.into(),
            capacity_range: Some(CapacityRange {
                required_bytes: ((mib as i64) + 64) << 20,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![cap()],
            parameters: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            secrets: secrets.clone(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .volume
        .expect("volume");
    let target = work.join(format!("{name}-pod"));
    let publish = NodePublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        target_path: target.display().to_string(),
        volume_capability: Some(cap()),
        volume_context: volume.volume_context.clone(),
        secrets: secrets.clone(),
        ..Default::default()
    };
    let unpublish = NodeUnpublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        target_path: target.display().to_string(),
    };
    let mut lat = Vec::with_capacity(publishes);
    // One publish first, not counted: it pays for the first TLS session and warm caches.
    for i in 0..=publishes {
        let t = Instant::now();
        n.node_publish_volume(publish.clone())
            .await
            .expect("publish");
        if i > 0 {
            lat.push(t.elapsed());
        }
        n.node_unpublish_volume(unpublish.clone())
            .await
            .expect("unpublish");
    }
    n.node_publish_volume(publish.clone())
        .await
        .expect("publish");
    let file = target.join("seq");
    let chunk = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(&file).expect("create file");
        for _ in 0..mib {
            f.write_all(&chunk).expect("write");
        }
        f.sync_all().expect("fsync");
    }
    let write_mib_s = mib as f64 / t.elapsed().as_secs_f64();
    drop_caches();
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    {
        let mut f = std::fs::File::open(&file).expect("open");
        while f.read(&mut buf).expect("read") > 0 {}
    }
    let read_mib_s = mib as f64 / t.elapsed().as_secs_f64();
    std::fs::remove_file(&file).expect("rm");
    n.node_unpublish_volume(unpublish).await.expect("unpublish");
    c.delete_volume(DeleteVolumeRequest {
        volume_id: volume.volume_id,
        secrets: secrets.clone(),
    })
    .await
    .expect("delete");
    Figures {
        p50: pick(&mut lat, 0.50),
        p99: pick(&mut lat, 0.99),
        write_mib_s,
        read_mib_s,
    }
}

#[tokio::main]
async fn main() {
    let usage = "usage: crypt-bench <root> <kmip host:port> <pki dir> [publishes] [MiB]";
    let mut args = std::env::args().skip(1);
    let root = std::path::PathBuf::from(args.next().expect(usage));
    let endpoint = args.next().expect(usage);
    let pki = std::path::PathBuf::from(args.next().expect(usage));
    let publishes: usize = args.next().map(|s| s.parse().expect(usage)).unwrap_or(100);
    let mib: usize = args.next().map(|s| s.parse().expect(usage)).unwrap_or(256);
    let read = |f: &str| std::fs::read_to_string(pki.join(f)).expect("pki file");
    let secrets = HashMap::from([
        ("kmipClientCert".to_string(), read("client.crt")),
        ("kmipClientKey".to_string(), read("client.key")),
        ("kmipCaCert".to_string(), read("ca.crt")),
    ]);
    let config = share::Config::from_toml(&format!(
        "backend = \"local\"\nfsname = \"bench\"\nproject_ids = \"30000-39999\"\n[local]\nroot = \"{}\"\n",
        root.display()
    ))
    .expect("config");
    let fs = config.open_backend().await.expect("backend");
    let service = Arc::new(
        share::ShareService::open(fs, config.settings().expect("settings"))
            .await
            .expect("service"),
    );
    let work = tempfile::tempdir().expect("tempdir");
    let driver = Driver::new(
        service,
        DriverOptions {
            name: "bench".into(),
            node_id: "bench".into(),
            mode: Mode::All,
            fs_timeout: csi::DEFAULT_FS_TIMEOUT,
            quota_margin: Default::default(),
            hsm_import_timeout: csi::DEFAULT_HSM_IMPORT_TIMEOUT,
            node_state_dir: Some(work.path().join("state")),
        },
    );
    let socket = work.path().join("csi.sock");
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
    ready_rx.await.expect("driver up");
    let sock = socket.clone();
    let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let sock = sock.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(sock).await?,
                ))
            }
        }))
        .await
        .expect("connect");

    let plain = measure(
        &channel,
        "plain",
        &[],
        &secrets,
        work.path(),
        publishes,
        mib,
    )
    .await;
    let encrypted = measure(
        &channel,
        "encrypted",
        &[("encryption", "fscrypt"), ("kmipEndpoint", &endpoint)],
        &secrets,
        work.path(),
        publishes,
        mib,
    )
    .await;
    println!(
        "{publishes} publishes each (after one not counted); {mib} MiB sequential write (fsync) \
         and read (cold cache)"
    );
    println!();
    println!("| figure | plain | encrypted | encrypted / plain |");
    println!("|---|---:|---:|---:|");
    for (what, p, e) in [
        ("NodePublishVolume p50 ms", plain.p50, encrypted.p50),
        ("NodePublishVolume p99 ms", plain.p99, encrypted.p99),
        (
            "sequential write MiB/s",
            plain.write_mib_s,
            encrypted.write_mib_s,
        ),
        (
            "sequential read MiB/s",
            plain.read_mib_s,
            encrypted.read_mib_s,
        ),
    ] {
        println!("| {what} | {p:.2} | {e:.2} | {:.2} |", e / p);
    }
    let _ = stop_tx.send(());
    let _ = server.await;
}
