//! A released file's data survives anything another file, path or process does: versions
//! are pinned on the stub, kept aside before their key is overwritten, fetched exactly and
//! verified against the pinned checksum; gc frees only what nothing pins; and root never
//! acts on a tenant's path by name (symlinks swapped in, FIFOs and devices planted).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hsm::gc::GcOptions;
use hsm::{HsmEngine, HsmError};

fn released(e: &HsmEngine, p: &Path) -> bool {
    let rt = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| rt.block_on(e.state(p)))
        .expect("state")
        .state
        .flags
        .released
}

async fn archive_release(e: &HsmEngine, p: &Path) {
    e.archive(p).await.expect("archive");
    e.release(p).await.expect("release");
    assert!(released(e, p));
}

fn no_gc_grace() -> GcOptions {
    GcOptions {
        dry_run: false,
        grace: Duration::ZERO,
    }
}

/// The sequence: archive + release `x`, rename it to `y`, archive a new `x`.
/// Restoring `y` must give back the original bytes, on every store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_then_rearchive_the_old_path_keeps_the_renamed_stubs_data() {
    for (label, env) in envs(small_cfg()).await {
        let (e, ns) = (&env.engine, &env.ns);
        let original = content(300_000, 1);
        let x = ns.join("x");
        let y = ns.join("y");
        write(&x, &original);
        archive_release(e, &x).await;
        std::fs::rename(&x, &y).expect("mv");
        write(&x, b"NEW\n");
        e.archive(&x).await.expect("archive new x");

        e.restore(&y)
            .await
            .unwrap_or_else(|err| panic!("{label}: restore y: {err}"));
        assert!(std::fs::read(&y).expect("y") == original, "{label}: y");
        assert!(!released(e, &y));
        // The new x still round-trips with its own content.
        archive_release(e, &x).await;
        e.restore(&x).await.expect("restore x");
        assert!(std::fs::read(&x).expect("x") == b"NEW\n", "{label}");
    }
}

/// The same with `rm x; touch x; archive x`, and with `export` between the steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_recreate_and_export_never_take_a_pinned_version() {
    for (label, env) in envs(small_cfg()).await {
        let (e, ns) = (&env.engine, &env.ns);
        let original = content(70_000, 2);
        let x = ns.join("d/x");
        let y = ns.join("d/y");
        write(&x, &original);
        archive_release(e, &x).await;
        std::fs::rename(&x, &y).expect("mv");
        write(&x, b"");
        e.archive(&x).await.expect("archive empty x");
        std::fs::remove_file(&x).expect("rm");
        write(&x, b"third\n");
        let r = e
            .export(&ns.join("d"), hsm::ConflictMode::OverwriteAlways)
            .await
            .expect("export");
        assert!(r.errors.is_empty(), "{label}: {:?}", r.errors);
        e.restore(&y)
            .await
            .unwrap_or_else(|err| panic!("{label}: restore y: {err}"));
        assert!(std::fs::read(&y).expect("y") == original, "{label}");
    }
}

/// An object replaced out of band (same key, other bytes): restore fails with a checksum
/// error, and the stub stays released and untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_replaced_out_of_band_fails_restore_with_a_checksum_error() {
    for (label, env) in envs(small_cfg()).await {
        let (e, ns) = (&env.engine, &env.ns);
        let x = ns.join("victim");
        let data = content(50_000, 3);
        write(&x, &data);
        archive_release(e, &x).await;
        let key = e.key_of(&x).expect("key");
        let info = e.store().head(&key).await.expect("head").expect("object");
        // Same size, same metadata (including our checksum), other bytes.
        e.store()
            .put(&key, bytes::Bytes::from(content(50_000, 99)), &info.meta)
            .await
            .expect("replace");
        let before = std::fs::metadata(&x).expect("md");
        let err = e.restore(&x).await.expect_err("restore must fail");
        assert!(matches!(err, HsmError::Checksum { .. }), "{label}: {err}");
        assert!(released(e, &x), "{label}");
        let after = std::fs::metadata(&x).expect("md");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (before.ino(), before.len(), before.mtime_nsec()),
            (after.ino(), after.len(), after.mtime_nsec())
        );
        let leftovers: Vec<_> = std::fs::read_dir(ns)
            .expect("ls")
            .filter_map(|d| d.ok())
            .filter(|d| d.file_name().to_string_lossy().contains("restore"))
            .collect();
        assert!(leftovers.is_empty(), "{label}: temporary left behind");
    }
}

/// gc keeps every version a file pins and frees the rest, reporting the bytes; a dry run
/// frees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_frees_only_unpinned_versions() {
    for (label, env) in envs(small_cfg()).await {
        let (e, ns) = (&env.engine, &env.ns);
        let original = content(40_000, 4);
        let (x, y) = (ns.join("x"), ns.join("y"));
        write(&x, &original);
        archive_release(e, &x).await;
        std::fs::rename(&x, &y).expect("mv");
        write(&x, b"new x");
        e.archive(&x).await.expect("archive x"); // y's version goes aside, pinned by y
        let kept = e.gc(&no_gc_grace()).await.expect("gc");
        assert_eq!((kept.freed, kept.kept_pinned), (0, 1), "{label}: {kept:?}");
        e.restore(&y).await.expect("restore y");

        // y changes and is archived at its own key: the version aside is pinned by nothing.
        write(&y, b"y changed");
        e.archive(&y).await.expect("archive y");
        let young = e
            .gc(&GcOptions {
                dry_run: false,
                grace: Duration::from_secs(3600),
            })
            .await
            .expect("gc");
        assert_eq!(
            (young.freed, young.kept_in_grace),
            (0, 1),
            "{label}: {young:?}"
        );
        let dry = e
            .gc(&GcOptions {
                dry_run: true,
                grace: Duration::ZERO,
            })
            .await
            .expect("dry run");
        assert_eq!(
            (dry.freed, dry.bytes_freed),
            (1, original.len() as u64),
            "{label}: {dry:?}"
        );
        let done = e.gc(&no_gc_grace()).await.expect("gc");
        assert_eq!((done.freed, done.bytes_freed), (1, original.len() as u64));
        let again = e.gc(&no_gc_grace()).await.expect("gc");
        assert_eq!(again.versions_seen, 0, "{label}: {again:?}");
        // Both files still restore their own data.
        for (p, want) in [(&x, &b"new x"[..]), (&y, &b"y changed"[..])] {
            archive_release(e, p).await;
            e.restore(p).await.expect("restore");
            assert!(std::fs::read(p).expect("read") == want, "{label}");
        }
    }
}

/// `remove` deletes only the version the file itself pins; for a path with no file it
/// moves the object aside, so a renamed stub still restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_never_deletes_another_files_version() {
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = format!("file://{}", tmp.path().join("store").display());
    let env = env_with(&spec, tempfile::tempdir().expect("tmp"), small_cfg()).await;
    let (e, ns) = (&env.engine, &env.ns);
    let data = content(10_000, 5);
    let (x, y) = (ns.join("x"), ns.join("y"));
    write(&x, &data);
    archive_release(e, &x).await;
    std::fs::rename(&x, &y).expect("mv");
    e.remove(&x).await.expect("remove of a path with no file");
    e.restore(&y).await.expect("restore y after remove x");
    assert!(std::fs::read(&y).expect("y") == data);
}

/// Lustre's path: the copytool's FID records are the pins. ARCHIVE of FID 1 at `x`,
/// rename to `y`, ARCHIVE of FID 2 at the new `x`: RESTORE of FID 1 returns its own
/// bytes, and RESTORE of FID 2 its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytool_restore_by_fid_follows_the_pin_not_the_path() {
    use common::coordinator::{Fake, Log, fid, list, run_list};
    use hsm::copytool::Dispatcher;
    use hsm::copytool::hal::Action;

    for (label, env) in envs(small_cfg()).await {
        let mnt = env.ns.clone();
        let scratch = tempfile::tempdir().expect("scratch");
        let original = content(120_000, 6);
        write(&mnt.join("x"), &original);
        let fake = Arc::new(Fake {
            mnt: mnt.clone(),
            scratch: scratch.path().to_path_buf(),
            fids: Mutex::new(HashMap::from([(fid(1), PathBuf::from("x"))])),
            log: Mutex::new(Log::default()),
            drifting_version: None,
        });
        let engine = Arc::new(env.engine);
        let mut d = Dispatcher::new(fake.clone(), engine.clone());
        run_list(&mut d, &list(vec![(Action::Archive, fid(1), 1)])).await;
        // (The coordinator would release FID 1 now.) Rename, and a new file at `x`.
        std::fs::rename(mnt.join("x"), mnt.join("y")).expect("mv");
        {
            let mut fids = fake.fids.lock().expect("lock");
            fids.insert(fid(1), PathBuf::from("y"));
            fids.insert(fid(2), PathBuf::from("x"));
        }
        write(&mnt.join("x"), b"NEW\n");
        run_list(&mut d, &list(vec![(Action::Archive, fid(2), 2)])).await;

        run_list(&mut d, &list(vec![(Action::Restore, fid(1), 3)])).await;
        run_list(&mut d, &list(vec![(Action::Restore, fid(2), 4)])).await;
        {
            let log = fake.log.lock().expect("lock");
            for cookie in [1, 2, 3, 4] {
                assert!(
                    log.ends.iter().any(|(c, e, _)| *c == cookie && *e == 0),
                    "{label}: action {cookie}: {:?}",
                    log.ends
                );
            }
            let p1 = log.restored.get(&3).expect("restore 1 ended");
            assert!(
                std::fs::read(p1).expect("read") == original,
                "{label}: fid 1"
            );
            let p2 = log.restored.get(&4).expect("restore 2 ended");
            assert!(
                std::fs::read(p2).expect("read") == b"NEW\n",
                "{label}: fid 2"
            );
        }
        // gc sees the FID records as pins.
        let gc = engine.gc(&no_gc_grace()).await.expect("gc");
        assert_eq!((gc.freed, gc.kept_pinned), (0, 1), "{label}: {gc:?}");
    }
}

fn canary_dir() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let outside = tempfile::tempdir().expect("outside");
    let canary = outside.path().join("canary");
    let secret = b"host secret: must never be read or written\n".to_vec();
    std::fs::write(&canary, &secret).expect("canary");
    (outside, canary, secret)
}

/// A directory swapped for a symlink to a host directory: archive, release and restore
/// refuse, and nothing outside the namespace is read (no object with the canary's bytes)
/// or written (the canary is unchanged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swapped_in_is_never_followed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store_dir = tmp.path().join("store");
    let spec = format!("file://{}", store_dir.display());
    let env = env_with(&spec, tempfile::tempdir().expect("tmp"), small_cfg()).await;
    let (e, ns) = (&env.engine, &env.ns);
    let (outside, canary, secret) = canary_dir();
    let stub = ns.join("d/canary");
    write(&stub, &content(secret.len(), 7));
    archive_release(e, &stub).await;
    // The tenant swaps `d` for a symlink to the host directory.
    std::fs::rename(ns.join("d"), ns.join("d.old")).expect("mv");
    std::os::unix::fs::symlink(outside.path(), ns.join("d")).expect("symlink");

    for (op, r) in [
        ("archive", e.archive(&stub).await),
        ("release", e.release(&stub).await),
        ("restore", e.restore(&stub).await),
        ("remove", e.remove(&stub).await),
    ] {
        let err = r
            .err()
            .unwrap_or_else(|| panic!("{op} went through the symlink"));
        assert!(
            matches!(err, HsmError::Refused { .. } | HsmError::Io { .. }),
            "{op}: {err}"
        );
    }
    assert_eq!(std::fs::read(&canary).expect("canary"), secret);
    let leaked = walk_files(&store_dir)
        .into_iter()
        .any(|p| std::fs::read(&p).is_ok_and(|b| b == secret));
    assert!(!leaked, "the canary's bytes reached the store");
    // The real stub, at its new name, still restores.
    e.restore(&ns.join("d.old/canary")).await.expect("restore");
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// FIFOs and device nodes planted by a tenant: archive refuses them at once (never opening
/// them, so nothing blocks), and FIFOs at restore-like temporary names do not disturb a
/// restore, whose temporary name is random and created exclusively.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (mknod of a device node)"]
async fn fifos_and_devices_are_refused_without_being_opened() {
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = format!("file://{}", tmp.path().join("store").display());
    let env = env_with(&spec, tempfile::tempdir().expect("tmp"), small_cfg()).await;
    let (e, ns) = (&env.engine, &env.ns);
    let fifo = ns.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).expect("mkfifo");
    // /dev/null's numbers: opening it would succeed, so a refusal proves the type check.
    let dev = ns.join("null");
    nix::sys::stat::mknod(
        &dev,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .expect("mknod");
    for p in [&fifo, &dev] {
        let r = tokio::time::timeout(Duration::from_secs(10), e.archive(p))
            .await
            .expect("archive of a special file must not block");
        assert!(matches!(r, Err(HsmError::Refused { .. })), "{p:?}: {r:?}");
        let r = tokio::time::timeout(Duration::from_secs(10), e.restore(p))
            .await
            .expect("restore of a special file must not block");
        assert!(r.is_err(), "{p:?}");
    }
    // A released file with FIFOs at every name the old code used, and then some.
    let f = ns.join("data");
    let data = content(20_000, 8);
    write(&f, &data);
    archive_release(e, &f).await;
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(&f).expect("md").ino();
    for name in [
        format!(".lustrekit-restore.{ino}"),
        ".lustrekit-restore.".to_string(),
    ] {
        nix::unistd::mkfifo(
            &ns.join(name),
            nix::sys::stat::Mode::from_bits_truncate(0o666),
        )
        .expect("mkfifo");
    }
    tokio::time::timeout(Duration::from_secs(30), e.restore(&f))
        .await
        .expect("restore must not block on a planted FIFO")
        .expect("restore");
    assert!(std::fs::read(&f).expect("read") == data);
}

/// A pin is root's record: as root, a tenant's `user.lustrekit.pin` naming another
/// tenant's object is ignored (the restore reads the file's own key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (trusted.* xattrs)"]
async fn a_forged_user_pin_is_not_trusted_by_root() {
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = format!("file://{}", tmp.path().join("store").display());
    let env = env_with(&spec, tempfile::tempdir().expect("tmp"), small_cfg()).await;
    let (e, ns) = (&env.engine, &env.ns);
    let secret = content(5_000, 9);
    let mine = content(5_000, 10);
    write(&ns.join("other/secret"), &secret);
    write(&ns.join("me/file"), &mine);
    e.archive(&ns.join("other/secret")).await.expect("archive");
    archive_release(e, &ns.join("me/file")).await;
    let forged = serde_json::json!({
        "key": "other/secret", "version": "v-0000", "size": 5000
    });
    let f = std::fs::File::open(ns.join("me/file")).expect("open");
    hsm::posix::fset_xattr(
        std::os::fd::AsRawFd::as_raw_fd(&f),
        hsm::pin::PIN_XATTR_USER,
        forged.to_string().as_bytes(),
    )
    .expect("tenant sets a user xattr");
    drop(f);
    e.restore(&ns.join("me/file")).await.expect("restore");
    assert!(std::fs::read(ns.join("me/file")).expect("read") == mine);
}

/// Counts the requests the mover makes, by kind, around a real (in-memory) store.
#[derive(Debug, Default)]
struct Counts {
    put: std::sync::atomic::AtomicU32,
    get: std::sync::atomic::AtomicU32,
    head: std::sync::atomic::AtomicU32,
    copy: std::sync::atomic::AtomicU32,
    delete: std::sync::atomic::AtomicU32,
}

#[derive(Debug)]
struct Counting {
    inner: object_store::memory::InMemory,
    n: Arc<Counts>,
}

impl std::fmt::Display for Counting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "counting({})", self.inner)
    }
}

fn bump(c: &std::sync::atomic::AtomicU32) {
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

#[async_trait::async_trait]
impl object_store::ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        bump(&self.n.put);
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        bump(&self.n.put);
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        bump(if options.head {
            &self.n.head
        } else {
            &self.n.get
        });
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        bump(&self.n.delete);
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        bump(&self.n.copy);
        self.inner.copy_opts(from, to, options).await
    }
}

/// The store requests each step makes, exactly: what pins cost. Printed for the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_requests_per_operation() {
    let n = Arc::new(Counts::default());
    let store = hsm::ArchiveStore::from_object_store(
        Arc::new(Counting {
            inner: object_store::memory::InMemory::new(),
            n: n.clone(),
        }),
        object_store::path::Path::default(),
        "counting",
        true,
    )
    .with_create_only_put(true);
    let tmp = tempfile::tempdir().expect("tmp");
    let ns = tmp.path().join("ns");
    std::fs::create_dir_all(&ns).expect("ns");
    let backend = backend::local::LocalBackend::open(&ns)
        .await
        .expect("backend");
    let cfg = hsm::EngineConfig {
        root: ns.clone(),
        ..small_cfg()
    };
    hsm::engine::ignore_lease_break_signal();
    let e = HsmEngine::new(store, Arc::new(backend), cfg);
    let take = || {
        use std::sync::atomic::Ordering::Relaxed;
        [
            n.head.swap(0, Relaxed),
            n.put.swap(0, Relaxed),
            n.copy.swap(0, Relaxed),
            n.get.swap(0, Relaxed),
            n.delete.swap(0, Relaxed),
        ]
    };
    let (x, y) = (ns.join("x"), ns.join("y"));
    write(&x, &content(10_000, 11));
    e.archive(&x).await.expect("archive");
    let first = take();
    write(&x, &content(10_000, 12));
    e.archive(&x).await.expect("re-archive");
    let again = take();
    e.release(&x).await.expect("release");
    let release = take();
    e.restore(&x).await.expect("restore");
    let restore = take();
    e.release(&x).await.expect("release");
    std::fs::rename(&x, &y).expect("mv");
    write(&x, b"new");
    take();
    e.archive(&x).await.expect("archive over a pinned key");
    let over = take();
    e.restore(&y).await.expect("restore from aside");
    let aside = take();
    println!("requests [head, put, copy, get, delete]:");
    for (what, c) in [
        ("first archive", first),
        ("re-archive of the same file", again),
        ("release", release),
        ("restore", restore),
        ("archive over a pinned key", over),
        ("restore from the copy aside", aside),
    ] {
        println!("  {what}: {c:?}");
    }
    // Before pins: archive = 1 PUT, release = 1 HEAD, restore = 1 HEAD + GETs. Now a
    // first archive is a create-only PUT; a taken key costs the refused create and a HEAD,
    // and a copy aside only when another file pins what is there.
    assert_eq!(
        first,
        [0, 1, 0, 0, 0],
        "first archive: a create-only PUT, nothing more"
    );
    assert_eq!(
        again,
        [1, 2, 0, 0, 0],
        "key taken: a HEAD, no copy of its own version"
    );
    assert_eq!(release, [1, 0, 0, 0, 0], "release: unchanged");
    assert_eq!(restore, [1, 0, 0, 1, 0], "restore: unchanged");
    assert_eq!(
        over,
        [1, 2, 1, 0, 0],
        "a pinned version is copied aside once"
    );
    assert_eq!(aside, [2, 0, 0, 1, 0], "restore from aside: one HEAD more");
}

/// The swap happens while an archive is reading (slowed by its rate limit): the archive
/// keeps reading the file it opened, refuses to mark anything once the name no longer leads
/// to it, and never touches the host directory the symlink points at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swapped_in_mid_archive_is_never_followed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store_dir = tmp.path().join("store");
    let spec = format!("file://{}", store_dir.display());
    let cfg = hsm::EngineConfig {
        rate_limit_bytes_per_sec: Some(256 << 10),
        part_size: 128 << 10,
        ..small_cfg()
    };
    let env = env_with(&spec, tempfile::tempdir().expect("tmp"), cfg).await;
    let (e, ns) = (&env.engine, env.ns.clone());
    let (outside, canary, secret) = canary_dir();
    let data = content(1 << 20, 12);
    write(&ns.join("d/canary"), &data);
    let swap = {
        let ns = ns.clone();
        let outside = outside.path().to_path_buf();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            std::fs::rename(ns.join("d"), ns.join("d.old")).expect("mv");
            std::os::unix::fs::symlink(&outside, ns.join("d")).expect("symlink");
        })
    };
    let r = e.archive(&ns.join("d/canary")).await;
    swap.await.expect("swap");
    assert!(r.is_err(), "the archive must notice the swap: {r:?}");
    assert_eq!(std::fs::read(&canary).expect("canary"), secret);
    let st = e
        .state(&ns.join("d.old/canary"))
        .await
        .expect("state")
        .state;
    assert!(!st.flags.archived, "marked archived after a swap: {st}");
    let leaked = walk_files(&store_dir)
        .into_iter()
        .any(|p| std::fs::read(&p).is_ok_and(|b| b == secret));
    assert!(!leaked, "the canary's bytes reached the store");
}

/// An imported stub pins the object it was made from: archiving a new file at its old
/// path (after a rename) keeps the imported version, and restore gets its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_stub_pins_its_object() {
    for (label, env) in envs(small_cfg()).await {
        let (e, ns) = (&env.engine, &env.ns);
        let data = content(30_000, 13);
        // An object someone else wrote, with no metadata of ours.
        let key = e.key_of(&ns.join("in/x")).expect("key");
        e.store()
            .put(&key, bytes::Bytes::from(data.clone()), &Default::default())
            .await
            .expect("put");
        let r = e
            .import(&hsm::ImportOptions {
                target: ns.join("in"),
                source_prefix: Some("in".into()),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|err| panic!("{label}: import: {err}"));
        assert!(r.errors.is_empty(), "{label}: {:?}", r.errors);
        assert!(released(e, &ns.join("in/x")), "{label}");
        std::fs::rename(ns.join("in/x"), ns.join("in/y")).expect("mv");
        write(&ns.join("in/x"), b"mine now");
        e.archive(&ns.join("in/x")).await.expect("archive");
        e.restore(&ns.join("in/y"))
            .await
            .unwrap_or_else(|err| panic!("{label}: restore y: {err}"));
        assert!(
            std::fs::read(ns.join("in/y")).expect("y") == data,
            "{label}"
        );
    }
}

/// A tenant can give a released stub the name of one of our temporaries; gc must still see
/// its pin (the tree walks of archive and policy skip those names, gc must not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_sees_pins_under_temporary_looking_names() {
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = format!("file://{}", tmp.path().join("store").display());
    let env = env_with(&spec, tempfile::tempdir().expect("tmp"), small_cfg()).await;
    let (e, ns) = (&env.engine, &env.ns);
    let data = content(20_000, 14);
    let x = ns.join("x");
    write(&x, &data);
    archive_release(e, &x).await;
    let hidden = ns.join(".lustrekit-restore.mine");
    std::fs::rename(&x, &hidden).expect("mv");
    write(&x, b"other");
    e.archive(&x).await.expect("archive"); // the hidden stub's version goes aside
    let gc = e.gc(&no_gc_grace()).await.expect("gc");
    assert_eq!((gc.freed, gc.kept_pinned), (0, 1), "{gc:?}");
    e.restore(&hidden).await.expect("restore");
    assert!(std::fs::read(&hidden).expect("read") == data);
}

/// A directory (or symlink) archived where a released file used to be keeps that file's
/// version: the file, renamed, still restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_archived_over_a_files_key_keeps_its_version() {
    for (label, env) in envs(small_cfg()).await {
        let (e, ns) = (&env.engine, &env.ns);
        let data = content(9_000, 15);
        let (x, y) = (ns.join("x"), ns.join("y"));
        write(&x, &data);
        archive_release(e, &x).await;
        std::fs::rename(&x, &y).expect("mv");
        std::fs::create_dir(&x).expect("mkdir");
        e.archive(&x).await.expect("archive dir");
        std::fs::remove_dir(&x).expect("rmdir");
        std::os::unix::fs::symlink("y", &x).expect("symlink");
        e.archive(&x).await.expect("archive symlink");
        e.restore(&y)
            .await
            .unwrap_or_else(|err| panic!("{label}: restore y: {err}"));
        assert!(std::fs::read(&y).expect("y") == data, "{label}");
    }
}
