//! CreateVolume with `hsmImportFrom`: a store prefix becomes released stubs in the new
//! volume (names, sizes, modes, owners, times; no data), a retry resumes and never
//! duplicates, and failures are clear codes that leave nothing behind and no secret in a
//! message or a log line. The stores: a `file://` directory always, Azurite with
//! `LUSTREKIT_TEST_AZURITE=1` (scripts/start-azurite.sh).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use common::*;
use csi::Mode;
use csi::grpc::*;
use hsm::{ArchiveStore, EngineConfig, HsmEngine, RetryPolicy};
use tonic::Code;

const MIB: i64 = 1 << 20;
const SECRET: &str = "c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw==";
/// Azurite's well-known development account (public, in every Azurite README).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Everything this test binary logs, at TRACE level.
fn captured() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .init();
        log
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_no_secret_logged(log: &Arc<Mutex<Vec<u8>>>, secret: &str) {
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(
        !text.is_empty(),
        "nothing was logged: the capture is broken"
    );
    assert!(!text.contains(secret), "a secret reached the log:\n{text}");
}

fn unique() -> String {
    let n = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("csi{}-{n}", std::process::id())
}

/// One entry as a workload sees it: kind, size, permission bits, owner, and (files only:
/// making a child touches its directory) the modification time in nanoseconds.
type Seen = (char, u64, u32, u32, u32, Option<i128>);

fn entries(dir: &Path) -> BTreeMap<String, Seen> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Seen>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for path in names {
            let m = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            let kind = if m.is_dir() { 'd' } else { 'f' };
            let mtime = Some(i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()));
            let size = if kind == 'f' { m.len() } else { 0 };
            out.insert(
                rel,
                (kind, size, m.mode() & 0o7777, m.uid(), m.gid(), mtime),
            );
            if m.is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// `entries` without directory times: a resumed import sets the archived times of the
/// directories it makes, not of those an earlier attempt made and it only fills in.
fn without_dir_times(mut seen: BTreeMap<String, Seen>) -> BTreeMap<String, Seen> {
    for entry in seen.values_mut() {
        if entry.0 == 'd' {
            entry.5 = None;
        }
    }
    seen
}

/// Makes `<src>/dataset` (files of several sizes, modes, owners and times, a sub-directory)
/// and archives it into the store `spec`, as `dataset/...` below the store's prefix.
async fn fill_store(src: &Path, spec: &str) -> BTreeMap<String, Seen> {
    let data = src.join("dataset");
    std::fs::create_dir_all(data.join("sub/deeper")).unwrap();
    let files: &[(&str, usize, u32, u32, u32)] = &[
        ("a.txt", 100, 0o640, 1234, 5678),
        ("sub/b.bin", 5000, 0o755, 1001, 1001),
        ("sub/empty", 0, 0o600, 0, 0),
        ("sub/deeper/c.dat", 70_000, 0o444, 4242, 4343),
    ];
    for (i, (rel, size, mode, uid, gid)) in files.iter().enumerate() {
        let path = data.join(rel);
        std::fs::write(&path, vec![b'a' + i as u8; *size]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
        std::os::unix::fs::chown(&path, Some(*uid), Some(*gid)).unwrap();
        let when = SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000 + i as u64, 123_456_789);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .or_else(|_| std::fs::File::open(&path))
            .unwrap()
            .set_times(std::fs::FileTimes::new().set_modified(when))
            .unwrap();
    }
    std::fs::set_permissions(data.join("sub"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(data.join("sub"), Some(1001), Some(1001)).unwrap();
    for (i, d) in ["sub/deeper", "sub"].iter().enumerate() {
        let when = SystemTime::UNIX_EPOCH + Duration::new(1_500_000_000 + i as u64, 987_654_321);
        std::fs::File::open(data.join(d))
            .and_then(|f| f.set_times(std::fs::FileTimes::new().set_modified(when)))
            .unwrap();
    }
    let backend = backend::local::LocalBackend::open(src).await.unwrap();
    let engine = HsmEngine::new(
        ArchiveStore::open(spec, &RetryPolicy::default()).unwrap(),
        Arc::new(backend),
        EngineConfig {
            root: src.to_path_buf(),
            ..EngineConfig::default()
        },
    );
    let report = engine.archive_tree(&data).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    entries(&data)
}

fn request(name: &str, params: &[(&str, &str)], secrets: &[(&str, &str)]) -> CreateVolumeRequest {
    let mut req = create_req(name, 10 * MIB, params);
    req.secrets = secrets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    req
}

fn share_names(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("shares"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Every file under `dir` is a released stub holding no data.
async fn all_released(d: &Running, dir: &Path) {
    for (rel, seen) in entries(dir) {
        if seen.0 != 'f' {
            continue;
        }
        let path = dir.join(&rel);
        let blocks = std::fs::metadata(&path).unwrap().blocks();
        assert_eq!(blocks, 0, "{rel}: a stub holds no data");
        let state = d.driver.service().backend().hsm_state(&path).await.unwrap();
        assert!(
            state.flags.released && state.flags.archived,
            "{rel}: {state:?}"
        );
    }
}

fn marker(root: &Path, share: &str) -> PathBuf {
    root.join("shares/.lustrekit/hsm-imports").join(share)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn import_makes_released_stubs_and_a_retry_resumes_without_duplicates() {
    let fs = btrfs_root(512);
    let root = fs.root.clone();
    let store = root.join("store");
    let spec = format!("file://{}", store.display());
    let source = fill_store(&root.join("src"), &spec).await;
    let d = Running::start(
        &root,
        &fs.dir.path().join("csi.sock"),
        Mode::Controller,
        false,
    )
    .await;
    let mut c = d.controller();
    let params = [("hsmStore", spec.as_str()), ("hsmImportFrom", "dataset")];

    let vol = c
        .create_volume(request("pvc-imp", &params, &[]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(vol.volume_context["hsmStore"], spec);
    assert_eq!(vol.volume_context["hsmReadMode"], "block");
    assert!(!vol.volume_context.contains_key("hsmImportFrom"));
    let dir = root.join("shares/pvc-imp");
    assert_eq!(entries(&dir), source, "names, sizes, modes, owners, times");
    all_released(&d, &dir).await;

    // The same request again: the same volume, nothing new; a file the workload removed
    // since stays removed (the import is done, the store is not asked).
    std::fs::remove_file(dir.join("a.txt")).unwrap();
    let again = c
        .create_volume(request("pvc-imp", &params, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.volume.unwrap().volume_id, vol.volume_id);
    assert!(!dir.join("a.txt").exists());

    // An interrupted import (no marker, entries missing): the retry makes what is missing
    // and leaves what is there, with no duplicate and no temporary left.
    std::fs::remove_file(marker(&root, "pvc-imp")).unwrap();
    std::fs::remove_file(dir.join("sub/b.bin")).unwrap();
    let before = std::fs::metadata(dir.join("sub/empty")).unwrap().ino();
    c.create_volume(request("pvc-imp", &params, &[]))
        .await
        .unwrap();
    assert_eq!(
        without_dir_times(entries(&dir)),
        without_dir_times(source.clone())
    );
    assert_eq!(
        std::fs::metadata(dir.join("sub/empty")).unwrap().ino(),
        before,
        "an entry already there is left as it is"
    );
    all_released(&d, &dir).await;
    assert!(marker(&root, "pvc-imp").exists());

    // Another source for the same volume is another volume.
    let other = [
        ("hsmStore", spec.as_str()),
        ("hsmImportFrom", "dataset/sub"),
    ];
    let err = c
        .create_volume(request("pvc-imp", &other, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");

    c.delete_volume(DeleteVolumeRequest {
        volume_id: vol.volume_id.clone(),
        secrets: HashMap::new(),
    })
    .await
    .unwrap();
    assert!(
        !marker(&root, "pvc-imp").exists(),
        "the marker goes with the volume"
    );
    assert!(share_names(&root).is_empty());
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn an_import_past_its_bound_is_deadline_exceeded_and_the_retry_completes_it() {
    let fs = btrfs_root(512);
    let root = fs.root.clone();
    let spec = format!("file://{}", root.join("store").display());
    let source = fill_store(&root.join("src"), &spec).await;
    let params = [("hsmStore", spec.as_str()), ("hsmImportFrom", "dataset")];
    let options = |timeout| csi::DriverOptions {
        name: "test.csi.lustrekit.io".into(),
        node_id: "node-1".into(),
        mode: Mode::Controller,
        fs_timeout: csi::DEFAULT_FS_TIMEOUT,
        quota_margin: Default::default(),
        hsm_import_timeout: timeout,
        node_state_dir: None,
    };
    let socket = fs.dir.path().join("csi.sock");
    let d = Running::start_with_options(&root, &socket, false, options(Duration::ZERO)).await;
    let err = d
        .controller()
        .create_volume(request("pvc-slow", &params, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(err.message().contains("a retry resumes it"), "{err}");
    assert!(!marker(&root, "pvc-slow").exists());
    d.stop().await.unwrap();

    // The provisioner retries (a restarted controller, here): the import completes.
    let d = Running::start_with_options(
        &root,
        &socket,
        false,
        options(csi::DEFAULT_HSM_IMPORT_TIMEOUT),
    )
    .await;
    d.controller()
        .create_volume(request("pvc-slow", &params, &[]))
        .await
        .unwrap();
    let dir = root.join("shares/pvc-slow");
    assert_eq!(entries(&dir), source);
    all_released(&d, &dir).await;
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sources_and_unreachable_stores_fail_clearly_and_make_nothing() {
    let log = captured();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let store = tmp.path().join("store");
    std::fs::create_dir_all(store.join("dataset")).unwrap();
    let spec = format!("file://{}", store.display());
    let d = Running::start(&root, &tmp.path().join("csi.sock"), Mode::Controller, false).await;
    let mut c = d.controller();

    // A prefix with no objects.
    let err = c
        .create_volume(request(
            "pvc-a",
            &[("hsmStore", &spec), ("hsmImportFrom", "nothing/here")],
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("hsmImportFrom"), "{err}");

    // Credentials for a store that takes none: refused, and not quoted.
    let err = c
        .create_volume(request(
            "pvc-b",
            &[("hsmStore", &spec), ("hsmImportFrom", "dataset")],
            &[("aws_secret_access_key", SECRET)],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(!err.message().contains(SECRET), "{err}");

    // A store that does not answer: UNAVAILABLE (the provisioner retries), no secret in it.
    let unreachable = "s3://bucket/p?endpoint=http://127.0.0.1:9&region=test";
    let started = std::time::Instant::now();
    let err = c
        .create_volume(request(
            "pvc-c",
            &[("hsmStore", unreachable), ("hsmImportFrom", "dataset")],
            &[
                ("aws_access_key_id", "AKIDEXAMPLE"),
                ("aws_secret_access_key", SECRET),
            ],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(!err.message().contains(SECRET), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );

    // A secret key the store does not know is refused by name, its value never shown.
    let err = c
        .create_volume(request(
            "pvc-d",
            &[("hsmStore", unreachable), ("hsmImportFrom", "dataset")],
            &[("no_such_option", SECRET)],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("no_such_option"), "{err}");
    assert!(!err.message().contains(SECRET), "{err}");

    assert!(share_names(&root).is_empty(), "{:?}", share_names(&root));
    d.stop().await.unwrap();
    assert_no_secret_logged(&log, SECRET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn import_from_azurite_with_the_provisioner_secret() {
    if std::env::var("LUSTREKIT_TEST_AZURITE").ok().as_deref() != Some("1") {
        eprintln!("skipping Azurite: set LUSTREKIT_TEST_AZURITE=1 (scripts/start-azurite.sh)");
        return;
    }
    let log = captured();
    let container =
        std::env::var("LUSTREKIT_TEST_AZURE_CONTAINER").unwrap_or_else(|_| "lustrekit-test".into());
    let fs = btrfs_root(512);
    let root = fs.root.clone();
    let spec = format!("az://{container}/{}?use_emulator=true", unique());
    let source = fill_store(&root.join("src"), &spec).await;
    let d = Running::start(
        &root,
        &fs.dir.path().join("csi.sock"),
        Mode::Controller,
        false,
    )
    .await;
    let mut c = d.controller();
    // The full-URL form of the source.
    let from = format!("{}/dataset", spec.split('?').next().unwrap());
    let params = [
        ("hsmStore", spec.as_str()),
        ("hsmImportFrom", from.as_str()),
    ];
    let secrets = [
        ("azure_storage_account_name", AZURITE_ACCOUNT),
        ("azure_storage_account_key", AZURITE_KEY),
    ];
    c.create_volume(request("pvc-az", &params, &secrets))
        .await
        .unwrap();
    let dir = root.join("shares/pvc-az");
    assert_eq!(entries(&dir), source);
    all_released(&d, &dir).await;

    // A key the store refuses: a final error, nothing made, the key never shown.
    let wrong = [
        ("azure_storage_account_name", AZURITE_ACCOUNT),
        ("azure_storage_account_key", SECRET),
    ];
    let err = c
        .create_volume(request("pvc-az-wrong", &params, &wrong))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(!err.message().contains(SECRET), "{err}");
    assert_eq!(share_names(&root), ["pvc-az"]);
    d.stop().await.unwrap();
    assert_no_secret_logged(&log, SECRET);
    assert_no_secret_logged(&log, AZURITE_KEY);
}

/// The import rate of CreateVolume: `LUSTREKIT_MEASURE_OBJECTS` (default 5,000) small files
/// archived to a `file://` store, then imported into a new volume; prints stubs per second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root; a measurement"]
async fn measure_create_volume_import_rate() {
    let count: usize = std::env::var("LUSTREKIT_MEASURE_OBJECTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5_000);
    let fs = btrfs_root(2048);
    let root = fs.root.clone();
    let src = root.join("src");
    let data = src.join("many");
    for i in 0..count {
        let dir = data.join(format!("d{:03}", i % 100));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i:06}")), format!("{i}")).unwrap();
    }
    let spec = format!("file://{}", root.join("store").display());
    let engine = HsmEngine::new(
        ArchiveStore::open(&spec, &RetryPolicy::default()).unwrap(),
        Arc::new(backend::local::LocalBackend::open(&src).await.unwrap()),
        EngineConfig {
            root: src.clone(),
            ..EngineConfig::default()
        },
    );
    let archived = std::time::Instant::now();
    let report = engine.archive_tree(&data).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors.first());
    eprintln!("archived {count} files in {:?}", archived.elapsed());

    let d = Running::start(
        &root,
        &fs.dir.path().join("csi.sock"),
        Mode::Controller,
        false,
    )
    .await;
    let params = [("hsmStore", spec.as_str()), ("hsmImportFrom", "many")];
    let started = std::time::Instant::now();
    d.controller()
        .create_volume(request("pvc-many", &params, &[]))
        .await
        .unwrap();
    let took = started.elapsed();
    let made = entries(&root.join("shares/pvc-many"))
        .values()
        .filter(|e| e.0 == 'f')
        .count();
    assert_eq!(made, count);
    eprintln!(
        "CreateVolume imported {count} stubs (+100 directories) in {took:?}: {:.0} stubs/s",
        count as f64 / took.as_secs_f64()
    );
    d.stop().await.unwrap();
}

/// Lazily unmounts its paths when dropped (a test that fails halfway).
struct LazyUnmount(Vec<PathBuf>);

impl Drop for LazyUnmount {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

async fn hsm_state(d: &Running, path: &Path) -> lustre_model::HsmState {
    d.driver.service().backend().hsm_state(path).await.unwrap()
}

fn publish(volume: &Volume, target: &Path) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        target_path: target.display().to_string(),
        volume_capability: Some(rwx()),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    }
}

fn unpublish(volume: &Volume, target: &Path) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        target_path: target.display().to_string(),
    }
}

/// Restore on access from the node plugin (`local` backend): `hsmPrefetch` brings back what
/// it names at the first publish; a pod's read of a released file through its target gets
/// the exact bytes; the daemon lives while any pod has the
/// volume; a restarted plugin watches again at once (from its record), and the volume's next
/// publish brings the store's credentials back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_pod_reads_a_released_file_and_gets_its_bytes_across_a_plugin_restart() {
    let fs = btrfs_root(512);
    let root = fs.root.clone();
    let spec = format!("file://{}", root.join("store").display());
    fill_store(&root.join("src"), &spec).await;
    let state = fs.dir.path().join("node-state");
    let options = || csi::DriverOptions {
        name: "test.csi.lustrekit.io".into(),
        node_id: "node-1".into(),
        mode: Mode::All,
        fs_timeout: csi::DEFAULT_FS_TIMEOUT,
        quota_margin: Default::default(),
        hsm_import_timeout: csi::DEFAULT_HSM_IMPORT_TIMEOUT,
        node_state_dir: Some(state.clone()),
    };
    let socket = fs.dir.path().join("csi.sock");
    let d = Running::start_with_options(&root, &socket, false, options()).await;
    let volume = d
        .controller()
        .create_volume(request(
            "pvc-read",
            &[
                ("hsmStore", spec.as_str()),
                ("hsmImportFrom", "dataset"),
                ("hsmPrefetch", "sub/deeper/*.dat"),
            ],
            &[],
        ))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let dir = root.join("shares/pvc-read");
    all_released(&d, &dir).await;
    let (pod1, pod2) = (fs.dir.path().join("pod1"), fs.dir.path().join("pod2"));
    // A failed assertion must not leave the pods' mounts behind (they would pin the image).
    let _unmount = LazyUnmount(vec![pod1.clone(), pod2.clone()]);
    let mut n = d.node();
    n.node_publish_volume(publish(&volume, &pod1))
        .await
        .unwrap();
    n.node_publish_volume(publish(&volume, &pod2))
        .await
        .unwrap();
    let watching = d.driver.restore().watching().await;
    assert_eq!(watching.get(&volume.volume_id), Some(&true), "{watching:?}");
    // hsmPrefetch: c.dat comes back without anyone reading it; a.txt stays released.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while hsm_state(&d, &dir.join("sub/deeper/c.dat"))
        .await
        .flags
        .released
    {
        assert!(
            std::time::Instant::now() < deadline,
            "c.dat was not prefetched"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(hsm_state(&d, &dir.join("a.txt")).await.flags.released);

    // Not assert_eq: a failure would print 70,000 bytes.
    assert!(std::fs::read(pod1.join("a.txt")).unwrap() == vec![b'a'; 100]);
    assert!(std::fs::read(pod2.join("sub/deeper/c.dat")).unwrap() == vec![b'd'; 70_000]);
    let a = hsm_state(&d, &dir.join("a.txt")).await;
    assert!(a.flags.archived && !a.flags.released, "{a:?}");

    // One pod goes: the other still reads through the daemon.
    n.node_unpublish_volume(unpublish(&volume, &pod1))
        .await
        .unwrap();
    assert!(
        d.driver
            .restore()
            .watching()
            .await
            .contains_key(&volume.volume_id)
    );

    // The plugin restarts with pod2 still running.
    d.stop().await.unwrap();
    let d = Running::start_with_options(&root, &socket, false, options()).await;
    let watching = d.driver.restore().watching().await;
    assert_eq!(
        watching.get(&volume.volume_id),
        Some(&false),
        "{watching:?}"
    );
    // A file:// store needs no credentials, so the daemon watching again restores at once
    // (a store that needs them fails the read with EIO until the republish).
    let b = pod2.join("sub/b.bin");
    assert!(hsm_state(&d, &dir.join("sub/b.bin")).await.flags.released);
    assert!(
        std::fs::read(&b).unwrap() == vec![b'b'; 5000],
        "b.bin after the restart"
    );

    // The republish (kubelet's, with the secret) swaps in a daemon with credentials.
    let mut n = d.node();
    n.node_publish_volume(publish(&volume, &pod2))
        .await
        .unwrap();
    assert_eq!(
        d.driver.restore().watching().await.get(&volume.volume_id),
        Some(&true)
    );
    assert!(std::fs::read(pod2.join("a.txt")).unwrap() == vec![b'a'; 100]);

    // The last pod goes: no daemon is left.
    n.node_unpublish_volume(unpublish(&volume, &pod2))
        .await
        .unwrap();
    assert!(d.driver.restore().watching().await.is_empty());
    assert!(!pod2.exists());
    d.stop().await.unwrap();
}

/// Records the annotations the controller would set.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Annotated>>);

/// A PVC's namespace, name and the annotations set on it.
type Annotated = (String, String, BTreeMap<String, String>);

impl csi::hsm_status::PvcAnnotator for Recorder {
    fn annotate<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        annotations: &'a BTreeMap<String, String>,
    ) -> csi::hsm_status::AnnotateFuture<'a> {
        self.0
            .lock()
            .unwrap()
            .push((namespace.into(), name.into(), annotations.clone()));
        Box::pin(async { Ok(()) })
    }
}

/// The per-volume policy on the node that publishes the volume: files written through a
/// pod's target are archived once idle for `hsmArchiveAfter`, then released down to
/// `hsmReleaseLow` of the volume's quota once above `hsmReleaseHigh`; a pod still reads
/// every byte; the status (written outside the share) reaches NodeGetVolumeStats and the
/// node's per-volume metrics; a second node publishing the volume stands by; the last
/// unpublish stops the policy and DeleteVolume removes the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn the_volume_policy_archives_and_releases_on_the_publishing_node() {
    let fs = btrfs_root(512);
    let root = fs.root.clone();
    let spec = format!("file://{}", root.join("store").display());
    std::fs::create_dir_all(root.join("store")).unwrap();
    let options = |node: &str| csi::DriverOptions {
        name: "test.csi.lustrekit.io".into(),
        node_id: node.into(),
        mode: Mode::All,
        fs_timeout: csi::DEFAULT_FS_TIMEOUT,
        quota_margin: Default::default(),
        hsm_import_timeout: csi::DEFAULT_HSM_IMPORT_TIMEOUT,
        node_state_dir: Some(fs.dir.path().join(format!("{node}-state"))),
    };
    let d = Running::start_with_options(
        &root,
        &fs.dir.path().join("n1.sock"),
        false,
        options("node-1"),
    )
    .await;
    let volume = d
        .controller()
        .create_volume(request(
            "pvc-policy",
            &[
                ("hsmStore", spec.as_str()),
                ("hsmArchiveAfter", "1s"),
                ("hsmExclude", "scratch/**"),
                ("hsmReleaseHigh", "50"),
                ("hsmReleaseLow", "20"),
                ("csi.storage.k8s.io/pvc/name", "data"),
                ("csi.storage.k8s.io/pvc/namespace", "team-a"),
            ],
            &[],
        ))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(volume.volume_context["hsmArchiveAfter"], "1");
    assert_eq!(volume.volume_context["hsmReleaseHigh"], "50");
    let dir = root.join("shares/pvc-policy");
    let (pod, other) = (
        fs.dir.path().join("pod"),
        fs.dir.path().join("pod-other-node"),
    );
    let _unmount = LazyUnmount(vec![pod.clone(), other.clone()]);
    let mut n = d.node();
    // Read-only: refused at publish, not EPERM at the first read of a released file.
    let mut read_only = publish(&volume, &pod);
    read_only.readonly = true;
    let err = n.node_publish_volume(read_only).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("publish it read-write"), "{err}");
    assert!(!pod.exists() || std::fs::read_dir(&pod).unwrap().next().is_none());
    n.node_publish_volume(publish(&volume, &pod)).await.unwrap();
    // A second node publishes the same volume: it stands by (one policy per volume).
    let d2 = Running::start_with_options(
        &root,
        &fs.dir.path().join("n2.sock"),
        false,
        options("node-2"),
    )
    .await;
    d2.node()
        .node_publish_volume(publish(&volume, &other))
        .await
        .unwrap();

    // 6 MiB in a 10 MiB quota (60 %, above 50 %): four 1.5 MiB files, plus one excluded.
    let content = |i: usize| {
        (0..3 << 19)
            .map(|j| (i * 7 + j % 251) as u8)
            .collect::<Vec<u8>>()
    };
    for i in 0..4 {
        std::fs::write(pod.join(format!("f{i}.dat")), content(i)).unwrap();
    }
    std::fs::create_dir(pod.join("scratch")).unwrap();
    std::fs::write(pod.join("scratch/tmp"), b"never archived").unwrap();

    // The policy archives the four, then releases the oldest until usage is under 20 %.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let released = loop {
        let mut released = 0;
        for i in 0..4 {
            let st = hsm_state(&d, &dir.join(format!("f{i}.dat"))).await;
            if st.flags.released {
                released += 1;
            }
        }
        if released >= 3 {
            break released;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {released} released"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        released >= 3,
        "60 % down to under 20 % releases at least three of four"
    );
    let scratch = hsm_state(&d, &dir.join("scratch/tmp")).await;
    assert!(!scratch.flags.archived, "excluded: {scratch:?}");

    // The status: written by node-1 (node-2 stands by), quoted by NodeGetVolumeStats.
    let status_file = root.join("shares/.lustrekit/hsm-status/pvc-policy");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status: serde_json::Value = loop {
        if let Ok(text) = std::fs::read(&status_file) {
            let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
            if v["states"]["released"]["files"].as_u64() >= Some(3) {
                break v;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no status with the releases"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(status["node"], "node-1", "{status}");
    assert_eq!(status["volume_id"], volume.volume_id.as_str());
    assert_eq!(status["store_reachable"], true);
    let stats = n
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: volume.volume_id.clone(),
            volume_path: pod.display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let message = stats.volume_condition.unwrap().message;
    assert!(message.contains("files released ("), "{message}");
    let metrics = d.driver.metrics().render();
    let vid = &volume.volume_id;
    for want in [
        format!(
            "lustrekit_hsm_volume_operations_total{{volume=\"{vid}\",op=\"archive\",result=\"ok\"}} 4"
        ),
        format!("lustrekit_hsm_volume_store_reachable{{volume=\"{vid}\"}} 1"),
        format!("lustrekit_hsm_volume_policy_passes_total{{volume=\"{vid}\",result=\"ok\"}}"),
    ] {
        assert!(metrics.contains(&want), "{want} missing from:\n{metrics}");
    }
    assert!(
        !d2.driver
            .metrics()
            .render()
            .contains("lustrekit_hsm_volume_policy_passes_total"),
        "node-2 ran a pass"
    );

    // The controller copies the status onto the PVC, once while it does not change.
    let annotator = Recorder::default();
    let mut sent = HashMap::new();
    let service = d.driver.service();
    assert_eq!(
        csi::hsm_status::annotate_once(service, &annotator, &mut sent)
            .await
            .unwrap(),
        1
    );
    let calls = annotator.0.lock().unwrap().clone();
    let (ns, pvc, annotations) = &calls[0];
    assert_eq!((ns.as_str(), pvc.as_str()), ("team-a", "data"));
    let released: u64 = annotations["lustrekit.io/hsm-released-files"]
        .parse()
        .unwrap();
    assert!(released >= 3, "{annotations:?}");
    assert!(annotations.contains_key("lustrekit.io/hsm-last-policy-pass"));
    let again = csi::hsm_status::annotate_once(service, &annotator, &mut sent)
        .await
        .unwrap();
    let calls_now = annotator.0.lock().unwrap().len();
    // A pass in between may have changed it (its time); otherwise nothing is sent again.
    assert!(
        again == 0 && calls_now == 1 || again == 1 && calls_now == 2,
        "{again} {calls_now}"
    );

    // Every byte reads back through the pod (restored on access).
    for i in 0..4 {
        assert!(
            std::fs::read(pod.join(format!("f{i}.dat"))).unwrap() == content(i),
            "f{i}.dat"
        );
    }

    // The last unpublishes stop it; DeleteVolume removes the status.
    d2.node()
        .node_unpublish_volume(unpublish(&volume, &other))
        .await
        .unwrap();
    n.node_unpublish_volume(unpublish(&volume, &pod))
        .await
        .unwrap();
    assert!(d.driver.restore().watching().await.is_empty());
    assert!(
        !d.driver.metrics().render().contains(vid.as_str()),
        "series of a gone volume"
    );
    d.controller()
        .delete_volume(DeleteVolumeRequest {
            volume_id: volume.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!status_file.exists());
    d2.stop().await.unwrap();
    d.stop().await.unwrap();
}
