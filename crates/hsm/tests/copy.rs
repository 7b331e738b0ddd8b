//! Plain copies (the data mover): a tree out to each real store and back as ordinary files,
//! byte for byte, with no HSM trace; a second run skips what is there; a symlink is copied as
//! a symlink; a changed object is refused by its checksum; credentials for a local store are
//! refused.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{content, envs, small_cfg, write};
use hsm::{ArchiveStore, ConflictMode, CopyCounters, ImportOptions};

fn copy_in_opts(target: &str) -> ImportOptions {
    ImportOptions {
        target: target.into(),
        with_data: true,
        conflict: ConflictMode::OverwriteIfChanged,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_goes_out_and_comes_back_exact() {
    for (label, env) in envs(small_cfg()).await {
        let e = &env.engine;
        let src = env.ns.join("src");
        let big = content((6 << 20) + 123, 7); // more than one part
        write(&src.join("big"), &big);
        write(&src.join("sub/small"), b"small");
        write(&src.join("sub/deeper/empty"), b"");
        std::fs::set_permissions(
            src.join("sub/small"),
            std::fs::Permissions::from_mode(0o640),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("../big", src.join("sub/link")).expect("symlink");

        let counters = CopyCounters::default();
        let rep = e.copy_out(&src, &counters).await.expect("copy out");
        assert!(rep.errors.is_empty(), "{label}: {:?}", rep.errors);
        let p = counters.snapshot();
        // src (the prefix itself), big, sub, small, deeper, empty, link
        assert_eq!((p.files_total, p.files_done), (7, 7), "{label}: {p:?}");
        assert_eq!(p.bytes_total, big.len() as u64 + 5, "{label}");
        assert_eq!(p.bytes_done, p.bytes_total, "{label}");
        // No HSM trace on the source.
        let st = e.state(&src.join("big")).await.expect("state");
        assert!(!st.state.flags.archived, "{label}: {st:?}");

        // Again: everything is there already.
        let again = CopyCounters::default();
        let rep = e.copy_out(&src, &again).await.expect("copy out again");
        assert_eq!(rep.done, 0, "{label}: {rep:?}");
        assert_eq!(again.snapshot().files_done, 7, "{label}");

        let counters = CopyCounters::default();
        let rep = e
            .import_counted(
                &ImportOptions {
                    ..copy_in_opts("back")
                },
                &counters,
            )
            .await
            .expect("copy in");
        assert!(rep.errors.is_empty(), "{label}: {:?}", rep.errors);
        let back = env.ns.join("back");
        assert_eq!(
            std::fs::read(back.join("big")).expect("read"),
            big,
            "{label}"
        );
        assert_eq!(
            std::fs::read(back.join("sub/small")).expect("read"),
            b"small"
        );
        assert_eq!(
            std::fs::read(back.join("sub/deeper/empty"))
                .expect("read")
                .len(),
            0
        );
        assert_eq!(
            std::fs::read_link(back.join("sub/link")).expect("readlink"),
            std::path::PathBuf::from("../big"),
            "{label}"
        );
        let (a, b) = (
            std::fs::metadata(src.join("sub/small")).expect("stat"),
            std::fs::metadata(back.join("sub/small")).expect("stat"),
        );
        assert_eq!(b.mode() & 0o7777, 0o640, "{label}");
        assert_eq!(a.mtime(), b.mtime(), "{label}");
        let st = e.state(&back.join("big")).await.expect("state");
        assert!(
            !st.state.flags.archived && !st.state.flags.released,
            "{label}: a copy is an ordinary file: {st:?}"
        );
        let p = counters.snapshot();
        assert_eq!(p.files_done, p.files_total, "{label}: {p:?}");
        assert!(p.bytes_done >= big.len() as u64, "{label}: {p:?}");

        // Copying in again changes nothing: every entry is already there.
        let before = std::fs::metadata(back.join("big")).expect("stat").ino();
        let rep = e
            .import(&ImportOptions {
                ..copy_in_opts("back")
            })
            .await
            .expect("copy in again");
        assert_eq!(rep.files, 0, "{label}: {rep:?}");
        assert_eq!(
            std::fs::metadata(back.join("big")).expect("stat").ino(),
            before,
            "{label}"
        );
        // A changed source file is sent again and replaces the copy.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(&src.join("sub/small"), b"changed");
        e.copy_out(&src, &CopyCounters::default())
            .await
            .expect("copy out the change");
        let rep = e
            .import(&ImportOptions {
                ..copy_in_opts("back")
            })
            .await
            .expect("copy in the change");
        assert_eq!(rep.files, 1, "{label}: {rep:?}");
        assert_eq!(
            std::fs::read(back.join("sub/small")).expect("read"),
            b"changed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_does_not_match_its_checksum_is_refused_and_leaves_nothing() {
    for (label, env) in envs(small_cfg()).await {
        let e = &env.engine;
        let src = env.ns.join("src");
        write(&src.join("f"), b"the real bytes");
        e.copy_out(&src, &CopyCounters::default())
            .await
            .expect("copy out");
        // Someone rewrites the object behind its metadata (same length, other bytes, the old
        // checksum still recorded).
        let key = e.store().key_for(&["f"]);
        let info = e.store().head(&key).await.expect("head").expect("object");
        e.store()
            .put(
                &key,
                bytes::Bytes::from_static(b"THE FAKE BYTES"),
                &info.meta,
            )
            .await
            .expect("overwrite");
        let rep = e
            .import(&ImportOptions {
                ..copy_in_opts("back")
            })
            .await
            .expect("copy in");
        assert_eq!(rep.errors.len(), 1, "{label}: {rep:?}");
        assert_eq!(rep.errors[0].kind, "checksum", "{label}: {rep:?}");
        let left: Vec<_> = std::fs::read_dir(env.ns.join("back"))
            .expect("ls")
            .filter_map(|x| x.ok())
            .map(|x| x.file_name())
            .collect();
        assert!(
            left.is_empty(),
            "{label}: no file and no temporary: {left:?}"
        );
    }
}

#[test]
fn credentials_are_refused_for_a_local_store_and_unknown_ones_by_name_only() {
    let retry = small_cfg().retry;
    let secret = "s3cr3t-value".to_string();
    let refused = |r: hsm::Result<ArchiveStore>| match r {
        Ok(_) => panic!("opened"),
        Err(e) => e,
    };
    let e = refused(ArchiveStore::open_with(
        "file:///tmp/x",
        &retry,
        &[("azure_storage_account_key".into(), secret.clone())],
    ));
    assert!(e.to_string().contains("local store"), "{e}");
    assert!(!e.to_string().contains(&secret), "{e}");
    let e = refused(ArchiveStore::open_with(
        "az://c/p?use_emulator=true",
        &retry,
        &[("not_a_key".into(), secret.clone())],
    ));
    assert!(e.to_string().contains("not_a_key"), "{e}");
    assert!(!e.to_string().contains(&secret), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_copy_in_leaves_whole_files_or_none() {
    let mut cfg = small_cfg();
    cfg.rate_limit_bytes_per_sec = Some(256 << 10);
    cfg.part_size = 64 << 10;
    for (label, env) in envs(cfg).await {
        let e = &env.engine;
        let src = env.ns.join("src");
        let data: Vec<Vec<u8>> = (0..12).map(|i| content(300 << 10, i)).collect();
        for (i, d) in data.iter().enumerate() {
            write(&src.join(format!("f{i}")), d);
        }
        e.copy_out(&src, &CopyCounters::default())
            .await
            .expect("copy out");
        // Dropped mid-copy, as a cancelled movement's task is.
        let cut = tokio::time::timeout(
            std::time::Duration::from_millis(1500),
            e.import(&ImportOptions {
                ..copy_in_opts("back")
            }),
        )
        .await;
        assert!(
            cut.is_err(),
            "{label}: the copy should still have been running"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let back = env.ns.join("back");
        let mut whole = 0;
        for entry in std::fs::read_dir(&back).expect("ls").filter_map(|x| x.ok()) {
            let name = entry.file_name().into_string().expect("utf-8");
            let i: usize = name
                .strip_prefix('f')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{label}: a leftover: {name}"));
            assert_eq!(
                std::fs::read(entry.path()).expect("read"),
                data[i],
                "{label}: {name}"
            );
            whole += 1;
        }
        assert!(whole < data.len(), "{label}: it was cut before the end");
    }
}

#[test]
fn scrub_takes_out_every_secret_longest_first() {
    let text = "GET http://h/c/k?sv=1&sig=abcdef123&se=2 failed; key abcdef123456";
    let out = hsm::store::scrub(text, ["abcdef123", "abcdef123456", "x"]);
    assert_eq!(
        out,
        "GET http://h/c/k?sv=1&sig=<redacted>&se=2 failed; key <redacted>"
    );
}
