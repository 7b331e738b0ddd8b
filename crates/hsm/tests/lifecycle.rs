//! Archive, release, restore, remove against every real store the environment offers.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;
use hsm::{ConflictMode, HsmError, ImportOptions, Outcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_release_restore_round_trip() {
    for (label, env) in envs(small_cfg()).await {
        eprintln!("store: {label}");
        let e = &env.engine;
        // Small (one PUT) and large (multipart, ranged GETs) files.
        for (name, size) in [
            ("small.bin", 1000usize),
            ("dir/big.bin", 12 << 20),
            ("empty", 0),
        ] {
            let p = env.ns.join(name);
            let data = content(size, size as u64);
            write(&p, &data);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o1640)).expect("chmod");
            let mtime = std::fs::metadata(&p).expect("md").mtime_nsec();

            let r = e
                .archive(&p)
                .await
                .unwrap_or_else(|err| panic!("{label} archive {name}: {err}"));
            assert_eq!(r.outcome, Outcome::Done);
            assert_eq!(r.bytes, size as u64);
            let st = e.state(&p).await.expect("state").state;
            assert!(
                st.flags.archived && st.flags.exists && !st.flags.dirty,
                "{label}: {st}"
            );
            assert_eq!(st.archive_id, Some(1));
            // Archiving again is a no-op.
            assert_eq!(
                e.archive(&p).await.expect("again").outcome,
                Outcome::Skipped
            );

            // AMLFS metadata keys on the object.
            let info = e
                .store()
                .head(&e.key_of(&p).expect("key"))
                .await
                .expect("head")
                .expect("object");
            let lower: std::collections::BTreeMap<String, String> = info
                .meta
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect();
            assert_eq!(
                lower.get("permissions").map(String::as_str),
                Some("1640"),
                "{label}: {lower:?}"
            );
            assert!(
                lower.contains_key("owner")
                    && lower.contains_key("group")
                    && lower.contains_key("modtime")
            );
            assert!(lower.contains_key("lustrekit_blake3"));

            e.release(&p)
                .await
                .unwrap_or_else(|err| panic!("{label} release {name}: {err}"));
            let md = std::fs::metadata(&p).expect("md");
            assert_eq!(md.len(), size as u64);
            assert_eq!(md.mtime_nsec(), mtime);
            if size > 1 << 20 {
                assert!(blocks(&p) < 64, "data blocks not freed");
            }
            let st = e.state(&p).await.expect("state").state;
            assert!(
                st.flags.released && st.flags.archived && !st.flags.dirty,
                "{label}: {st}"
            );

            let r = e
                .restore(&p)
                .await
                .unwrap_or_else(|err| panic!("{label} restore {name}: {err}"));
            assert_eq!(r.outcome, Outcome::Done);
            assert_eq!(
                std::fs::read(&p).expect("read"),
                data,
                "{label}: content after restore"
            );
            let md = std::fs::metadata(&p).expect("md");
            assert_eq!(md.mode() & 0o7777, 0o1640);
            assert_eq!(md.mtime_nsec(), mtime);
            let st = e.state(&p).await.expect("state").state;
            assert!(
                !st.flags.released && st.flags.archived && !st.flags.dirty,
                "{label}: {st}"
            );
            // And it can be released again without a new archive.
            e.release(&p).await.expect("release again");
            e.restore(&p).await.expect("restore again");
            assert_eq!(std::fs::read(&p).expect("read"), data);
        }
        // No temporaries left behind.
        let left: Vec<_> = std::fs::read_dir(env.ns.join("dir"))
            .expect("ls")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with(".lustrekit"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let metrics = e.metrics().render();
        assert!(metrics.contains("lustrekit_hsm_operations_total{op=\"restore\",result=\"ok\"}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_refuses_and_changes_nothing() {
    for (label, env) in envs(small_cfg()).await {
        let e = &env.engine;
        let p = env.ns.join("f");
        write(&p, b"original");
        // Never archived.
        assert!(
            matches!(e.release(&p).await, Err(HsmError::Refused { .. })),
            "{label}"
        );
        assert_eq!(std::fs::read(&p).expect("read"), b"original");
        // Archived, then changed: dirty.
        e.archive(&p).await.expect("archive");
        std::thread::sleep(std::time::Duration::from_millis(60));
        write(&p, b"changed!");
        let st = e.state(&p).await.expect("state").state;
        assert!(st.flags.dirty, "{label}: {st}");
        assert!(
            matches!(e.release(&p).await, Err(HsmError::Refused { .. })),
            "{label}"
        );
        assert_eq!(std::fs::read(&p).expect("read"), b"changed!");
        // Re-archive makes it clean again and releasable.
        assert_eq!(
            e.archive(&p).await.expect("re-archive").outcome,
            Outcome::Done
        );
        e.release(&p).await.expect("release");
        e.restore(&p).await.expect("restore");
        assert_eq!(std::fs::read(&p).expect("read"), b"changed!");
        // The archived copy vanished behind our back: refuse.
        e.store()
            .delete(&e.key_of(&p).expect("key"))
            .await
            .expect("delete");
        assert!(
            matches!(e.release(&p).await, Err(HsmError::Refused { .. })),
            "{label}"
        );
        assert_eq!(std::fs::read(&p).expect("read"), b"changed!");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_object_fails_checksum_and_stub_stays_released() {
    for (label, env) in envs(small_cfg()).await {
        let e = &env.engine;
        let p = env.ns.join("c.bin");
        let data = content(300_000, 7);
        write(&p, &data);
        e.archive(&p).await.expect("archive");
        e.release(&p).await.expect("release");
        // Same size, one byte flipped, same metadata: a silent corruption in the store.
        let key = e.key_of(&p).expect("key");
        let info = e.store().head(&key).await.expect("head").expect("obj");
        let mut bad = data.clone();
        bad[1234] ^= 0xff;
        e.store()
            .put(&key, bad.into(), &info.meta)
            .await
            .expect("corrupt");
        let before = std::fs::read(&p).expect("read");
        let err = e.restore(&p).await.expect_err("must fail");
        assert!(matches!(err, HsmError::Checksum { .. }), "{label}: {err}");
        assert_eq!(std::fs::read(&p).expect("read"), before);
        let st = e.state(&p).await.expect("state").state;
        assert!(st.flags.released && !st.flags.dirty, "{label}: {st}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modified_during_archive_is_not_marked() {
    for (label, env) in envs(hsm::EngineConfig {
        rate_limit_bytes_per_sec: Some(4 << 20),
        ..small_cfg()
    })
    .await
    {
        let e = &env.engine;
        let p = env.ns.join("m.bin");
        write(&p, &content(12 << 20, 3));
        let p2 = p.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(700));
            use std::io::{Seek, Write};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&p2)
                .expect("open");
            f.seek(std::io::SeekFrom::Start(10)).expect("seek");
            f.write_all(b"scribble").expect("write");
        });
        let err = e.archive(&p).await.expect_err("must fail");
        writer.join().expect("writer");
        assert!(
            matches!(err, HsmError::ModifiedDuringArchive { .. }),
            "{label}: {err}"
        );
        let st = e.state(&p).await.expect("state").state;
        assert!(!st.flags.archived || st.flags.dirty, "{label}: {st}");
        assert!(e.release(&p).await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_retries_then_fails_and_marks_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Nothing listens on port 1.
    let spec =
        "s3://nobucket/p?endpoint=http://127.0.0.1:1&access_key_id=a&secret_access_key=b&region=x";
    let env = env_with(spec, tmp, small_cfg()).await;
    let p = env.ns.join("f");
    write(&p, b"data");
    let t = std::time::Instant::now();
    let err = env.engine.archive(&p).await.expect_err("store is down");
    let took = t.elapsed();
    assert!(matches!(err, HsmError::Store { .. }), "{err}");
    let msg = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(
        msg.contains("127.0.0.1") || msg.to_lowercase().contains("retr"),
        "{msg}"
    );
    // Two retries with 50 ms+ backoff each.
    assert!(
        took >= std::time::Duration::from_millis(100),
        "no backoff: {took:?}"
    );
    let st = env.engine.state(&p).await.expect("state").state;
    assert!(!st.flags.archived && !st.flags.exists, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_refuses_released_and_clears_state() {
    for (label, env) in envs(small_cfg()).await {
        let e = &env.engine;
        let p = env.ns.join("r");
        write(&p, b"remove me");
        e.archive(&p).await.expect("archive");
        e.release(&p).await.expect("release");
        assert!(
            matches!(e.remove(&p).await, Err(HsmError::Refused { .. })),
            "{label}"
        );
        e.restore(&p).await.expect("restore");
        e.remove(&p).await.expect("remove");
        assert!(
            e.store()
                .head(&e.key_of(&p).expect("key"))
                .await
                .expect("head")
                .is_none()
        );
        let st = e.state(&p).await.expect("state").state;
        assert!(!st.flags.archived && !st.flags.exists, "{label}: {st}");
        // After unlink: removing the copy by path still works.
        e.archive(&p).await.expect("archive");
        std::fs::remove_file(&p).expect("rm");
        e.remove(&p).await.expect("remove after unlink");
        assert!(
            e.store()
                .head(&e.key_of(&p).expect("key"))
                .await
                .expect("head")
                .is_none()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_tree_as_stubs_then_restore() {
    for (label, env) in envs(small_cfg()).await {
        let e = &env.engine;
        let src = env.ns.join("src");
        write(&src.join("a/one.txt"), b"one");
        write(&src.join("a/b/two.bin"), &content(200_000, 2));
        std::fs::set_permissions(src.join("a/b"), std::fs::Permissions::from_mode(0o1777))
            .expect("chmod");
        std::os::unix::fs::symlink("one.txt", src.join("a/link")).expect("symlink");
        // Directory times, set once their children are in.
        let dir_time = |i: u64| {
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::new(1_500_000_000 + i, 250)
        };
        for (i, d) in ["a", "a/b"].iter().enumerate() {
            std::fs::File::open(src.join(d))
                .and_then(|f| {
                    f.set_times(std::fs::FileTimes::new().set_modified(dir_time(i as u64)))
                })
                .expect("set dir times");
        }
        let rep = e.archive_tree(&src).await.expect("archive tree");
        assert!(rep.errors.is_empty(), "{label}: {:?}", rep.errors);

        let opts = ImportOptions {
            source_prefix: Some("src".into()),
            target: env.ns.join("dst"),
            conflict: ConflictMode::Fail,
            ..Default::default()
        };
        let rep = e.import(&opts).await.expect("import");
        assert!(rep.errors.is_empty(), "{label}: {:?}", rep.errors);
        assert_eq!((rep.files, rep.symlinks), (2, 1), "{label}: {rep:?}");
        let two = env.ns.join("dst/a/b/two.bin");
        assert_eq!(std::fs::metadata(&two).expect("md").len(), 200_000);
        assert_eq!(
            std::fs::metadata(env.ns.join("dst/a/b"))
                .expect("md")
                .mode()
                & 0o7777,
            0o1777,
            "{label}"
        );
        assert_eq!(
            std::fs::read_link(env.ns.join("dst/a/link"))
                .expect("link")
                .to_str(),
            Some("one.txt")
        );
        let st = e.state(&two).await.expect("state").state;
        assert!(st.flags.released && st.flags.archived, "{label}: {st}");
        // A directory keeps its archived mtime, though its children were made after it.
        for (i, d) in ["a", "a/b"].iter().enumerate() {
            let modified = std::fs::metadata(env.ns.join("dst").join(d))
                .and_then(|m| m.modified())
                .expect("dir mtime");
            assert_eq!(modified, dir_time(i as u64), "{label}: {d}");
        }

        // Restore needs the keys to match: import into the same place the objects came from.
        std::fs::remove_dir_all(&src).expect("rm src");
        let opts = ImportOptions {
            target: env.ns.join("src"),
            ..opts
        };
        let rep = e.import(&opts).await.expect("import in place");
        assert!(rep.errors.is_empty(), "{label}: {:?}", rep.errors);
        e.restore(&src.join("a/b/two.bin")).await.expect("restore");
        assert_eq!(
            std::fs::read(src.join("a/b/two.bin")).expect("read"),
            content(200_000, 2)
        );

        // Conflicts: fail reports each, skip leaves them.
        let rep = e.import(&opts).await.expect("import again");
        assert_eq!(rep.errors.len(), 3, "{label}: {rep:?}");
        assert!(rep.errors.iter().all(|x| x.kind == "conflict"));
        let rep = e
            .import(&ImportOptions {
                conflict: ConflictMode::Skip,
                ..opts.clone()
            })
            .await
            .expect("skip");
        assert!(
            rep.errors.is_empty() && rep.skipped >= 3,
            "{label}: {rep:?}"
        );
        assert_eq!(
            std::fs::read(src.join("a/b/two.bin")).expect("read"),
            content(200_000, 2)
        );
        // max_errors stops early.
        let rep = e
            .import(&ImportOptions {
                max_errors: 0,
                ..opts.clone()
            })
            .await
            .expect("max");
        assert!(rep.stopped, "{label}: {rep:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_defaults_and_over_long_names() {
    for (label, env) in envs(small_cfg()).await {
        let e = &env.engine;
        // A foreign object with no metadata at all.
        let key = e.store().key_for(&["foreign", "plain.dat"]);
        e.store()
            .put(&key, vec![1u8; 10].into(), &Default::default())
            .await
            .expect("put");
        if label != "local" {
            // Over-long segment (a real key on cloud stores; a local disk cannot hold it).
            let long = "x".repeat(300);
            let key = e.store().key_for(&["foreign", &long]);
            e.store()
                .put(&key, vec![2u8; 3].into(), &Default::default())
                .await
                .expect("put long");
            // `..` once decoded.
            let key =
                object_store::path::Path::parse(format!("{}/foreign/%2E%2E", e.store().prefix()))
                    .expect("p");
            e.store()
                .put(&key, vec![3u8; 3].into(), &Default::default())
                .await
                .expect("put dotdot");
        }
        let opts = ImportOptions {
            source_prefix: Some("foreign".into()),
            target: env.ns.join("imp"),
            default_uid: Some(4242),
            default_gid: Some(4343),
            ..Default::default()
        };
        let rep = e.import(&opts).await.expect("import");
        let md = std::fs::symlink_metadata(env.ns.join("imp/plain.dat")).expect("stub");
        assert_eq!(md.len(), 10);
        assert_eq!(md.mode() & 0o7777, 0o644);
        if nix::unistd::geteuid().is_root() {
            assert_eq!((md.uid(), md.gid()), (4242, 4343));
        }
        if label == "local" {
            assert!(rep.errors.is_empty(), "{rep:?}");
        } else {
            assert_eq!(rep.errors.len(), 2, "{label}: {rep:?}");
            assert!(
                rep.errors.iter().all(|x| x.kind == "hostile_name"),
                "{rep:?}"
            );
        }
        // Nothing escaped: the namespace holds only imp/ (and the store is elsewhere).
        let names: Vec<_> = std::fs::read_dir(&env.ns)
            .expect("ls")
            .filter_map(|x| x.ok())
            .map(|x| x.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("imp")], "{label}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_is_incremental() {
    for (label, env) in envs(small_cfg()).await {
        let e = &env.engine;
        let d = env.ns.join("exp");
        write(&d.join("a"), b"a");
        write(&d.join("sub/b"), b"b");
        let rep = e.export(&d, ConflictMode::Fail).await.expect("export");
        assert!(rep.errors.is_empty(), "{label}: {:?}", rep.errors);
        assert_eq!(rep.done, 4, "{label}: {rep:?}"); // exp, a, sub, sub/b
        let rep = e
            .export(&d, ConflictMode::Fail)
            .await
            .expect("export again");
        assert_eq!(rep.done, 0, "{label}: {rep:?}");
        std::thread::sleep(std::time::Duration::from_millis(60));
        write(&d.join("sub/b"), b"bb");
        write(&d.join("c"), b"c");
        let rep = e
            .export(&d, ConflictMode::Fail)
            .await
            .expect("export changes");
        let done: Vec<_> = rep
            .items
            .iter()
            .filter(|i| i.outcome == Outcome::Done)
            .map(|i| i.path.clone())
            .collect();
        assert!(
            done.contains(&d.join("sub/b")) && done.contains(&d.join("c")),
            "{label}: {done:?}"
        );
        assert!(!done.contains(&d.join("a")), "{label}: {done:?}");
    }
}

/// Restores in many parts, each GET a task of its own and several in flight: the parts are
/// written at their offsets and hashed in order, through a temporary file and in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_in_many_parts_gets_the_exact_bytes() {
    for (label, env) in envs(hsm::EngineConfig {
        part_size: 64 << 10,
        concurrency: 6,
        ..small_cfg()
    })
    .await
    {
        let e = &env.engine;
        let p = env.ns.join("parts.bin");
        // Not a whole number of parts.
        let data = content((3 << 20) + 12_345, 21);
        write(&p, &data);
        e.archive(&p).await.expect("archive");
        e.release(&p).await.expect("release");
        e.restore(&p).await.expect("restore");
        assert_eq!(std::fs::read(&p).expect("read"), data, "{label}: renamed");

        e.release(&p).await.expect("release again");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .expect("open");
        let r = e
            .restore_in_place(&p, std::sync::Arc::new(f))
            .await
            .unwrap_or_else(|err| panic!("{label}: in place: {err}"));
        assert_eq!(r.bytes, data.len() as u64);
        assert_eq!(std::fs::read(&p).expect("read"), data, "{label}: in place");
        let st = e.state(&p).await.expect("state").state;
        assert!(!st.flags.released && !st.flags.dirty, "{label}: {st}");
    }
}

/// The archived object replaced while a restore fetches it: a later part's GET fails its
/// ETag check, the parts still in flight are dropped, and the file stays released with
/// its written range punched out again, never a mix of two versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_replaced_mid_restore_fails_and_stays_released() {
    for (label, env) in envs(hsm::EngineConfig {
        part_size: 64 << 10,
        concurrency: 4,
        rate_limit_bytes_per_sec: Some(4 << 20),
        ..small_cfg()
    })
    .await
    {
        let e = &env.engine;
        let p = env.ns.join("r.bin");
        let data = content(12 << 20, 5);
        write(&p, &data);
        e.archive(&p).await.expect("archive");
        e.release(&p).await.expect("release");
        let key = e.key_of(&p).expect("key");
        let info = e.store().head(&key).await.expect("head").expect("obj");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .expect("open");
        let restore = e.restore_in_place(&p, std::sync::Arc::new(f));
        let replace = async {
            tokio::time::sleep(std::time::Duration::from_millis(700)).await;
            e.store()
                .put(&key, content(12 << 20, 6).into(), &info.meta)
                .await
                .expect("replace");
        };
        let (res, ()) = tokio::join!(restore, replace);
        let err = res.expect_err("a restore across two versions must fail");
        assert!(
            matches!(err, HsmError::Store { .. } | HsmError::Checksum { .. }),
            "{label}: {err}"
        );
        // Released (the punch back moves the ctime, so the state may also read dirty, as
        // after any failed restore in place; the next read restores it all the same).
        let st = e.state(&p).await.expect("state").state;
        assert!(st.flags.released, "{label}: {st}");
        assert!(
            blocks(&p) < 64,
            "{label}: the written range was not punched out"
        );
    }
}
