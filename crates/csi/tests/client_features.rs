//! StorageClass client features on the `local` backend: compression is the btrfs
//! compression property of the volume's subvolume, so what a pod writes is stored
//! compressed (checked by the volume's quota usage, which counts bytes on disk); what btrfs cannot do (lz4, a level per
//! directory) and what needs a Lustre client (`clientTunables`) is refused before anything
//! is made.

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;
use csi::Mode;
use tonic::Code;

const MIB: i64 = 1 << 20;

fn share_dirs(root: &std::path::Path) -> Vec<String> {
    match std::fs::read_dir(root.join("shares")) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_backend_cannot_do_is_refused_and_makes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let d = Running::start(&root, &dir.path().join("csi.sock"), Mode::Controller, false).await;
    let mut c = d.controller();
    for (params, want) in [
        (
            vec![("clientTunables", "llite.max_read_ahead_mb=1024")],
            "the local backend has none",
        ),
        (
            vec![("clientTunables", "llite.enable_setstripe_gid=0")],
            "not settable per StorageClass",
        ),
        (
            vec![("clientTunables", "osc.max_rpcs_in_flight=100000")],
            "at most 512",
        ),
        (vec![("compression", "lz4")], "no lz4"),
        (
            vec![("compression", "zstd"), ("compressionLevel", "3")],
            "only for a whole mount",
        ),
        (vec![("compression", "brotli")], "must be lz4, gzip or zstd"),
        (
            vec![("compression", "gzip"), ("compressionLevel", "12")],
            "gzip takes levels 1 to 9",
        ),
        (vec![("compressionLevel", "3")], "needs compression"),
        (
            vec![
                ("hotNodes", "true"),
                ("pccCache", "/nvme"),
                ("mountMode", "bind"),
            ],
            "needs mountMode=direct",
        ),
        (
            vec![("hotNodes", "true"), ("pccCache", "/nvme")],
            "asks for a Persistent Client Cache",
        ),
    ] {
        let err = c
            .create_volume(create_req("pvc-x", MIB, &params))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{params:?}: {err}");
        assert!(err.message().contains(want), "{params:?}: {err}");
    }
    assert!(share_dirs(&root).is_empty(), "{:?}", share_dirs(&root));
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_compressed_volume_stores_its_data_compressed() {
    let fs = btrfs_root(512);
    let d = Running::start(
        &fs.root,
        &fs.dir.path().join("csi.sock"),
        Mode::Controller,
        false,
    )
    .await;
    let mut c = d.controller();
    // Text that compresses well, but not to nothing (no run of one byte).
    let text: Vec<u8> = (0..(8 << 20))
        .map(|i: usize| {
            b"lustrekit compresses this line of text\n"[i % 39] ^ ((i / 4096) % 7) as u8
        })
        .collect();
    let mut blocks = Vec::new();
    for (name, params, property) in [
        ("pvc-zstd", vec![("compression", "zstd")], Some("zstd")),
        ("pvc-gzip", vec![("compression", "gzip")], Some("zlib")),
        ("pvc-plain", vec![], None),
    ] {
        c.create_volume(create_req(name, 64 * MIB, &params))
            .await
            .unwrap();
        // Idempotent: the same request again is the same volume...
        c.create_volume(create_req(name, 64 * MIB, &params))
            .await
            .unwrap();
        let dir = fs.root.join("shares").join(name);
        let got = xattr(&dir, "btrfs.compression");
        assert_eq!(got.as_deref(), property.map(str::as_bytes), "{name}");
        let file = dir.join("data.txt");
        std::fs::write(&file, &text).unwrap();
        std::fs::File::open(&file).unwrap().sync_all().unwrap();
        assert_eq!(
            std::fs::read(&file).unwrap(),
            text,
            "{name}: the bytes read back"
        );
        // btrfs reports a file's blocks uncompressed; its qgroup (the volume's quota usage)
        // counts what is on disk.
        let usage = d
            .driver
            .service()
            .usage_now(&lustre_model::ShareName::new(name).unwrap())
            .await
            .unwrap();
        assert!(
            std::fs::metadata(&file).unwrap().blocks() * 512 >= text.len() as u64,
            "{name}"
        );
        blocks.push((name, usage.used_bytes));
    }
    eprintln!("bytes on disk for {} bytes written: {blocks:?}", text.len());
    let plain = blocks[2].1;
    assert!(plain >= text.len() as u64, "{blocks:?}");
    for (name, stored) in &blocks[..2] {
        assert!(
            *stored * 4 < plain,
            "{name} stored {stored} of {plain}: {blocks:?}"
        );
    }
    // ...and another compression for the same name is a conflict.
    let err = c
        .create_volume(create_req("pvc-zstd", 64 * MIB, &[("compression", "gzip")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");
    d.stop().await.unwrap();
}

fn xattr(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let f = std::fs::File::open(path).unwrap();
    backend::local::beneath::get_xattr(std::os::fd::AsFd::as_fd(&f), name).unwrap()
}
