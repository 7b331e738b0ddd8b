//! Import treats object metadata and the target tree as hostile: no setuid-root stub, no
//! `security.*`/`trusted.*` xattr and no foreign owner unless asked for, and no symlink,
//! FIFO or device followed or opened on the way. Each scenario on a `file://` store.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;
use hsm::meta::{FileMeta, MetaMap};
use hsm::{ConflictMode, EntryKind, HsmEngine, ImportOptions, ImportReport};

async fn env() -> Env {
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = format!("file://{}", tmp.path().join("store").display());
    env_with(&spec, tmp, small_cfg()).await
}

/// Puts an object `src/<rel>` with this metadata and content.
async fn put(e: &HsmEngine, rel: &str, meta: &MetaMap, data: &[u8]) {
    let mut segs = vec!["src"];
    segs.extend(rel.split('/'));
    let key = e.store().key_for(&segs);
    e.store()
        .put(&key, data.to_vec().into(), meta)
        .await
        .expect("put");
}

fn opts(target: PathBuf) -> ImportOptions {
    ImportOptions {
        source_prefix: Some("src".into()),
        target,
        ..Default::default()
    }
}

fn map(pairs: &[(&str, &str)]) -> MetaMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn mkdir_owned(p: &Path, uid: u32, gid: u32) {
    std::fs::create_dir_all(p).expect("mkdir");
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
}

fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let f = std::fs::File::open(p).expect("open");
    let fd = std::os::fd::AsFd::as_fd(&f);
    backend::local::beneath::get_xattr(fd, name).expect("getxattr")
}

/// Names in a directory (empty when it holds nothing).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("ls")
        .filter_map(|x| x.ok())
        .map(|x| x.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn errors_of(rep: &ImportReport) -> String {
    format!("{:?}", rep.errors)
}

/// A valid `security.capability` (VFS_CAP_REVISION_2, CAP_NET_RAW permitted), so that a
/// broken filter would really set it.
fn cap_net_raw() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0000u32.to_le_bytes());
    v.extend_from_slice(&(1u32 << 13).to_le_bytes()); // permitted, low word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn setuid_root_object_imports_as_plain_file_of_the_target_owner() {
    let env = env().await;
    let e = &env.engine;
    let setuid = map(&[("permissions", "04755"), ("owner", "0"), ("group", "0")]);
    put(e, "bin/su", &setuid, b"#!/bin/sh\n").await;
    put(e, "plain.dat", &MetaMap::new(), b"no metadata").await;
    put(
        e,
        "setgid",
        &map(&[("permissions", "02775"), ("owner", "77"), ("group", "88")]),
        b"g",
    )
    .await;

    let dst = env.ns.join("dst");
    mkdir_owned(&dst, 1234, 2345);
    let rep = e.import(&opts(dst.clone())).await.expect("import");
    assert!(rep.errors.is_empty(), "{}", errors_of(&rep));
    assert_eq!(rep.files, 3, "{rep:?}");
    assert_eq!(rep.setid_dropped, 2, "{rep:?}");
    for (rel, mode) in [("bin/su", 0o755), ("plain.dat", 0o644), ("setgid", 0o775)] {
        let md = std::fs::symlink_metadata(dst.join(rel)).expect("stub");
        assert!(md.is_file(), "{rel}");
        assert_eq!(md.mode() & 0o7777, mode, "{rel}");
        assert_eq!((md.uid(), md.gid()), (1234, 2345), "{rel}");
    }
    // The directory made on the way belongs to the target's owner too, not to root.
    let md = std::fs::metadata(dst.join("bin")).expect("bin");
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1234, 2345, 0o755)
    );
    let st = e.state(&dst.join("bin/su")).await.expect("state").state;
    assert!(st.flags.released && st.flags.archived, "{st}");

    // --uid/--gid name the owner instead of the target's.
    let dst_uid = env.ns.join("dst-uid");
    mkdir_owned(&dst_uid, 1234, 2345);
    let rep = e
        .import(&ImportOptions {
            default_uid: Some(4242),
            default_gid: Some(4343),
            ..opts(dst_uid.clone())
        })
        .await
        .expect("import --uid");
    assert!(rep.errors.is_empty(), "{}", errors_of(&rep));
    let md = std::fs::symlink_metadata(dst_uid.join("bin/su")).expect("stub");
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (4242, 4343, 0o755)
    );

    // Asked for explicitly, the object's owner and bits are kept; objects without an owner
    // still get the target's.
    let kept = env.ns.join("kept");
    mkdir_owned(&kept, 1234, 2345);
    let rep = e
        .import(&ImportOptions {
            preserve_owner: true,
            preserve_setid: true,
            ..opts(kept.clone())
        })
        .await
        .expect("import preserving");
    assert!(rep.errors.is_empty(), "{}", errors_of(&rep));
    assert_eq!(rep.setid_dropped, 0, "{rep:?}");
    let md = std::fs::symlink_metadata(kept.join("bin/su")).expect("stub");
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (0, 0, 0o4755));
    let md = std::fs::symlink_metadata(kept.join("setgid")).expect("stub");
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (77, 88, 0o2775));
    let md = std::fs::symlink_metadata(kept.join("plain.dat")).expect("stub");
    assert_eq!((md.uid(), md.gid()), (1234, 2345));

    // Each flag alone does only its part.
    let own = env.ns.join("own");
    mkdir_owned(&own, 1234, 2345);
    e.import(&ImportOptions {
        preserve_owner: true,
        ..opts(own.clone())
    })
    .await
    .expect("import owner only");
    let md = std::fs::symlink_metadata(own.join("bin/su")).expect("stub");
    assert_eq!((md.uid(), md.mode() & 0o7777), (0, 0o755));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn only_user_xattrs_from_metadata_unless_allowed() {
    let env = env().await;
    let e = &env.engine;
    let forged_pin = br#"{"key":"other/tenant/file","version":"v-forged","size":1}"#;
    let (meta, dropped) = FileMeta {
        kind: EntryKind::File,
        mode: 0o755,
        xattrs: vec![
            ("security.capability".into(), cap_net_raw()),
            ("trusted.foo".into(), b"t".to_vec()),
            ("user.foo".into(), b"bar".to_vec()),
            ("trusted.lustrekit.pin".into(), forged_pin.to_vec()),
            ("user.lustrekit.hsm".into(), b"{}".to_vec()),
        ],
        ..Default::default()
    }
    .to_map();
    assert!(!dropped);
    put(e, "tool", &meta, b"\x7fELF").await;

    let dst = env.ns.join("dst");
    let rep = e.import(&opts(dst.clone())).await.expect("import");
    assert!(rep.errors.is_empty(), "{}", errors_of(&rep));
    let stub = dst.join("tool");
    assert_eq!(get_xattr(&stub, "user.foo").as_deref(), Some(&b"bar"[..]));
    assert_eq!(get_xattr(&stub, "security.capability"), None);
    assert_eq!(get_xattr(&stub, "trusted.foo"), None);
    assert_ne!(
        get_xattr(&stub, "trusted.lustrekit.pin").as_deref(),
        Some(&forged_pin[..])
    );
    assert_eq!(get_xattr(&stub, "user.lustrekit.hsm"), None);
    assert_eq!(rep.xattrs_dropped, 4, "{rep:?}");
    let mut names = rep.xattrs_dropped_names.clone();
    names.sort();
    assert_eq!(
        names,
        vec![
            "security.capability",
            "trusted.foo",
            "trusted.lustrekit.pin",
            "user.lustrekit.hsm"
        ]
    );

    // An allowlist lets named namespaces through, never our own records.
    let allowed = env.ns.join("allowed");
    let rep = e
        .import(&ImportOptions {
            xattr_allow: vec!["trusted.".into(), "security.capability".into()],
            ..opts(allowed.clone())
        })
        .await
        .expect("import allowing");
    assert!(rep.errors.is_empty(), "{}", errors_of(&rep));
    let stub = allowed.join("tool");
    assert_eq!(get_xattr(&stub, "trusted.foo").as_deref(), Some(&b"t"[..]));
    assert_eq!(get_xattr(&stub, "security.capability"), Some(cap_net_raw()));
    assert_ne!(
        get_xattr(&stub, "trusted.lustrekit.pin").as_deref(),
        Some(&forged_pin[..])
    );
    assert_eq!(rep.xattrs_dropped, 2, "{rep:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_target_is_refused_and_nothing_lands_through_it() {
    let env = env().await;
    let e = &env.engine;
    put(e, "f", &MetaMap::new(), b"data").await;
    put(e, "d/g", &MetaMap::new(), b"data").await;
    let canary = env._tmp.path().join("canary");
    std::fs::create_dir(&canary).expect("canary");

    // The target itself.
    std::os::unix::fs::symlink(&canary, env.ns.join("link")).expect("symlink");
    let err = e
        .import(&opts(env.ns.join("link")))
        .await
        .expect_err("symlinked target");
    assert!(err.to_string().contains("symlink"), "{err}");
    assert_eq!(err.kind(), "refused", "{err}");
    // A component on the way to it.
    let err = e
        .import(&opts(env.ns.join("link/deeper")))
        .await
        .expect_err("symlink on the way");
    assert_eq!(err.kind(), "refused", "{err}");
    assert!(names(&canary).is_empty(), "{:?}", names(&canary));

    // A symlink planted inside the target where an object's directory goes: that entry
    // fails, the others are made.
    let dst = env.ns.join("dst");
    std::fs::create_dir(&dst).expect("dst");
    std::os::unix::fs::symlink(&canary, dst.join("d")).expect("symlink");
    let rep = e.import(&opts(dst.clone())).await.expect("import");
    assert_eq!(rep.files, 1, "{rep:?}");
    assert_eq!(rep.errors.len(), 1, "{rep:?}");
    assert_eq!(rep.errors[0].kind, "refused", "{rep:?}");
    assert!(names(&canary).is_empty(), "{:?}", names(&canary));
    assert!(
        std::fs::symlink_metadata(dst.join("f"))
            .expect("f")
            .is_file()
    );
    // No temporary left behind.
    assert_eq!(names(&dst), vec!["d", "f"]);
}

/// Runs `fut`; if it is still running after a generous while, opens `fifo` for reading
/// and writing (which never blocks, and releases any open of it that does) so the test
/// fails instead of hanging. Returns whether the watchdog had to step in.
async fn unless_it_hangs_on<T>(
    fifo: &Path,
    fut: impl std::future::Future<Output = T>,
) -> (T, bool) {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (d, f, p) = (done.clone(), fired.clone(), fifo.to_path_buf());
    let dog = std::thread::spawn(move || {
        for _ in 0..600 {
            if d.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        f.store(true, std::sync::atomic::Ordering::SeqCst);
        // Hold both ends for a while so any blocked open completes.
        let held = std::fs::OpenOptions::new().read(true).write(true).open(&p);
        std::thread::sleep(std::time::Duration::from_secs(5));
        drop(held);
    });
    let out = fut.await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = dog.join();
    (out, fired.load(std::sync::atomic::Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_or_symlink_where_a_stub_goes_is_never_opened_or_followed() {
    let env = env().await;
    let e = &env.engine;
    put(e, "pipe", &MetaMap::new(), b"stub data").await;
    put(e, "link", &MetaMap::new(), b"stub data 2").await;
    let dst = env.ns.join("dst");
    std::fs::create_dir(&dst).expect("dst");
    let fifo = dst.join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).expect("mkfifo");
    let canary = env._tmp.path().join("canary");
    std::fs::create_dir(&canary).expect("canary");
    let victim = canary.join("victim");
    std::fs::write(&victim, b"CANARY").expect("victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let victim_md = std::fs::metadata(&victim).expect("md");
    std::os::unix::fs::symlink(&victim, dst.join("link")).expect("symlink");

    for mode in [
        ConflictMode::Fail,
        ConflictMode::OverwriteIfDirty,
        ConflictMode::OverwriteAlways,
    ] {
        let (rep, hung) = unless_it_hangs_on(
            &fifo,
            e.import(&ImportOptions {
                conflict: mode,
                ..opts(dst.clone())
            }),
        )
        .await;
        assert!(!hung, "{mode:?}: import blocked on the FIFO");
        let rep = rep.expect("import");
        let fifo_err = rep
            .errors
            .iter()
            .find(|x| x.path.to_string_lossy().ends_with("pipe"))
            .unwrap_or_else(|| panic!("{mode:?}: no error for the FIFO: {rep:?}"));
        assert_eq!(fifo_err.kind, "refused", "{mode:?}: {rep:?}");
        assert!(fifo_err.error.contains("FIFO"), "{mode:?}: {rep:?}");
        let md = std::fs::symlink_metadata(&fifo).expect("fifo");
        assert!(
            std::os::unix::fs::FileTypeExt::is_fifo(&md.file_type()),
            "{mode:?}"
        );
        // The symlink's target is never written, chmodded or marked, whatever the mode.
        assert_eq!(std::fs::read(&victim).expect("victim"), b"CANARY");
        let md = std::fs::metadata(&victim).expect("md");
        assert_eq!(
            (md.mode(), md.uid(), md.len(), md.ino()),
            (
                victim_md.mode(),
                victim_md.uid(),
                victim_md.len(),
                victim_md.ino()
            )
        );
        assert_eq!(get_xattr(&victim, "trusted.lustrekit.hsm"), None);
        assert_eq!(get_xattr(&victim, "user.lustrekit.hsm"), None);
        match mode {
            // Fail: a conflict; if-dirty: a symlink is not a dirty file, left.
            ConflictMode::Fail | ConflictMode::OverwriteIfDirty => assert!(
                std::fs::symlink_metadata(dst.join("link"))
                    .expect("link")
                    .file_type()
                    .is_symlink(),
                "{mode:?}"
            ),
            // Always: the symlink itself is replaced by the stub.
            _ => {
                let md = std::fs::symlink_metadata(dst.join("link")).expect("stub");
                assert!(md.is_file(), "{mode:?}");
                assert_eq!(md.len(), 11);
            }
        }
    }
    // Skip leaves the FIFO without a word.
    let rep = e
        .import(&ImportOptions {
            conflict: ConflictMode::Skip,
            ..opts(dst.clone())
        })
        .await
        .expect("skip");
    assert!(rep.errors.is_empty(), "{}", errors_of(&rep));
    assert_eq!(names(&dst), vec!["link", "pipe"]);
    assert_eq!(names(&canary), vec!["victim"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_device_node_where_a_stub_goes_is_refused() {
    let env = env().await;
    let e = &env.engine;
    put(e, "null", &MetaMap::new(), b"x").await;
    let dst = env.ns.join("dst");
    std::fs::create_dir(&dst).expect("dst");
    nix::sys::stat::mknod(
        &dst.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .expect("mknod");
    let rep = e
        .import(&ImportOptions {
            conflict: ConflictMode::OverwriteAlways,
            ..opts(dst.clone())
        })
        .await
        .expect("import");
    assert_eq!(rep.errors.len(), 1, "{rep:?}");
    assert!(rep.errors[0].error.contains("character device"), "{rep:?}");
    let md = std::fs::symlink_metadata(dst.join("null")).expect("dev");
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &md.file_type()
    ));
}

/// Every name under `dir`, recursively, relative to it.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for entry in std::fs::read_dir(dir.join(&rel))
            .expect("ls")
            .filter_map(|x| x.ok())
        {
            let r = rel.join(entry.file_name());
            if entry.file_type().expect("type").is_dir() {
                todo.push(r.clone());
            }
            out.push(r.to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_cut_at_any_point_leaves_no_temporary() {
    let env = env().await;
    let e = &env.engine;
    for i in 0..24 {
        put(
            e,
            &format!("d{}/f{i}", i % 3),
            &MetaMap::new(),
            &[i as u8; 3000],
        )
        .await;
    }
    for with_data in [false, true] {
        let dst = env.ns.join(format!("dst-{with_data}"));
        let o = ImportOptions {
            with_data,
            conflict: ConflictMode::Skip,
            ..opts(dst.clone())
        };
        // Cut (the future dropped, as a timed-out CreateVolume's is) after ever longer
        // runs, so the cut lands at many different awaits.
        for micros in [0u64, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800] {
            let cut =
                tokio::time::timeout(std::time::Duration::from_micros(micros), e.import(&o)).await;
            // The guards remove temporaries on blocking threads: let them run.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if dst.exists() {
                let left: Vec<_> = tree(&dst)
                    .into_iter()
                    .filter(|n| n.contains(".lustrekit-import-"))
                    .collect();
                assert!(
                    left.is_empty(),
                    "data {with_data}, cut at {micros} µs ({}): {left:?}",
                    if cut.is_ok() { "finished" } else { "cut" }
                );
            }
        }
        let rep = e.import(&o).await.expect("import");
        assert!(rep.errors.is_empty(), "{}", errors_of(&rep));
        let files = tree(&dst).into_iter().filter(|n| n.contains("/f")).count();
        assert_eq!(files, 24, "{:?}", tree(&dst));
        assert!(!tree(&dst).iter().any(|n| n.contains(".lustrekit-import-")));
    }
}
