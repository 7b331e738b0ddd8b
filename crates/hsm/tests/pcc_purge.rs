//! The PCC purge against real cache directories: files laid out as PCC lays them out
//! (`<hash dirs>/<FID>`), access times set with `utimensat`, and a usage source the test
//! drives (the `statvfs` of a temporary directory cannot be controlled), except one test
//! that fills a small tmpfs as root and reads its real `statvfs`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use backend::lustre::{FakeRunner, LustreBackend, LustreConfig};
use hsm::pcc::{
    CacheFile, CacheUsage, Detach, LustreDetach, PccMetrics, PurgePolicy, RemoveCacheFile,
    StatvfsUsage, UsageSource, purge_once, scan_cache,
};
use lustre_model::{FsName, PccCounters};
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

const KIB: u64 = 1024;

/// Sets the access time of `path` to `secs` (and its modification time to 0).
fn set_atime(path: &Path, secs: i64) {
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &TimeSpec::new(secs, 0),
        &TimeSpec::new(0, 0),
        UtimensatFlags::NoFollowSymlink,
    )
    .expect("utimensat");
}

/// The cache file of FID `0x200000bd1:0x<oid>:0x0` at PCC's hashed path, `kib` KiB long.
fn cache_file(cache: &Path, oid: u32, kib: u64, atime: i64) -> PathBuf {
    let dir = cache.join(format!("0004/0000/0bd1/0000/{:04x}/0000", oid % 3));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("0x200000bd1:{oid:#x}:0x0"));
    std::fs::write(&path, vec![7u8; (kib * KIB) as usize]).unwrap();
    set_atime(&path, atime);
    path
}

/// Usage the test controls: `total` bytes, of which the files now in the cache (by their
/// allocated blocks) and `other` are used.
struct DirUsage {
    cache: PathBuf,
    total: u64,
    other: u64,
}

impl UsageSource for DirUsage {
    fn usage(&self) -> std::io::Result<CacheUsage> {
        let used: u64 = scan_cache(&self.cache)
            .map_err(std::io::Error::other)?
            .files
            .iter()
            .map(|f| f.bytes)
            .sum();
        Ok(CacheUsage {
            used_bytes: used + self.other,
            total_bytes: self.total,
        })
    }
}

fn names(cache: &Path) -> Vec<String> {
    let mut out: Vec<String> = scan_cache(cache)
        .unwrap()
        .files
        .into_iter()
        .map(|f| f.rel.rsplit('/').next().unwrap().to_string())
        .collect();
    out.sort();
    out
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[tokio::test]
async fn the_least_recently_used_files_go_first_down_to_the_low_mark() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("pcc");
    // Ten files; access order deliberately not creation or name order.
    let atimes = [50, 10, 90, 30, 70, 20, 100, 40, 80, 60];
    let mut size = 0;
    for (i, atime) in atimes.iter().enumerate() {
        let p = cache_file(&cache, i as u32 + 1, 64, 1_000_000 + atime);
        size = allocated(&p);
    }
    let total = size * 20;
    // 10 of 20 units used: 50 %; high 40 %, low 20 %: down to 4 units, so the 6 oldest go.
    let usage: Arc<dyn UsageSource> = Arc::new(DirUsage {
        cache: cache.clone(),
        total,
        other: 0,
    });
    let metrics = PccMetrics::new();
    let report = purge_once(
        &cache,
        PurgePolicy::new(40, 20).unwrap(),
        &usage,
        &RemoveCacheFile {
            cache: cache.clone(),
        },
        Some(&metrics),
    )
    .await
    .unwrap();
    assert_eq!(report.files, 10);
    assert_eq!(report.detached, 6, "{report:?}");
    assert_eq!(report.failed, 0);
    assert!(report.after_percent <= 20.0, "{report:?}");
    assert_eq!(report.before_percent, 50.0);
    // Kept: the four most recently read (atimes 100, 90, 80, 70 = files 7, 3, 9, 5).
    assert_eq!(
        names(&cache),
        [
            "0x200000bd1:0x3:0x0",
            "0x200000bd1:0x5:0x0",
            "0x200000bd1:0x7:0x0",
            "0x200000bd1:0x9:0x0"
        ]
    );
    let text = metrics.render();
    assert!(
        text.contains("lustrekit_pcc_purge_detaches_total{result=\"ok\"} 6"),
        "{text}"
    );
    assert!(
        text.contains(&format!("lustrekit_pcc_cache_bytes {}", 10 * size)),
        "{text}"
    );
    assert!(text.contains("lustrekit_pcc_cache_files 10"), "{text}");

    // Now at 20 %: below high, nothing more goes.
    let again = purge_once(
        &cache,
        PurgePolicy::new(40, 20).unwrap(),
        &usage,
        &RemoveCacheFile {
            cache: cache.clone(),
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!((again.detached, again.files), (0, 4));
}

#[tokio::test]
async fn a_cache_below_the_high_mark_is_left_alone_and_others_usage_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("pcc");
    let p = cache_file(&cache, 1, 64, 5);
    let unit = allocated(&p);
    // 1 unit of ours and 7 of something else of 10: 80 %, at the high mark, not over it.
    let usage: Arc<dyn UsageSource> = Arc::new(DirUsage {
        cache: cache.clone(),
        total: unit * 10,
        other: unit * 7,
    });
    let remove = RemoveCacheFile {
        cache: cache.clone(),
    };
    let r = purge_once(
        &cache,
        PurgePolicy::new(80, 50).unwrap(),
        &usage,
        &remove,
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.detached, 0);
    // Over it, but only other data to blame: our one file goes, and the purge stops there.
    let r = purge_once(
        &cache,
        PurgePolicy::new(70, 50).unwrap(),
        &usage,
        &remove,
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.detached, 1);
    assert!(names(&cache).is_empty());
}

#[tokio::test]
async fn symlinks_in_the_cache_are_never_followed_or_their_targets_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("pcc");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("deep")).unwrap();
    std::fs::write(outside.join("deep/precious"), vec![1u8; 256 * 1024]).unwrap();
    set_atime(&outside.join("deep/precious"), 1);
    let kept = cache_file(&cache, 1, 64, 100);
    std::os::unix::fs::symlink(&outside, cache.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.join("deep/precious"), cache.join("0004/link")).unwrap();
    let scan = scan_cache(&cache).unwrap();
    assert_eq!(scan.files.len(), 1, "{:?}", scan.files);
    assert_eq!(scan.skipped, 2);
    // A full cache: everything it holds goes, and nothing outside it.
    let usage: Arc<dyn UsageSource> = Arc::new(DirUsage {
        cache: cache.clone(),
        total: allocated(&kept) * 2,
        other: allocated(&kept),
    });
    let r = purge_once(
        &cache,
        PurgePolicy::new(60, 10).unwrap(),
        &usage,
        &RemoveCacheFile {
            cache: cache.clone(),
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.detached, 1);
    assert!(outside.join("deep/precious").exists());
    assert!(cache.join("escape").symlink_metadata().is_ok());
}

/// Detaches through the Lustre backend and then drops the cache copy, as the kernel does
/// on `lfs pcc detach_fid`.
struct LustreThenDrop {
    lustre: LustreDetach,
    cache: PathBuf,
    seen: Mutex<Vec<String>>,
}

#[async_trait]
impl Detach for LustreThenDrop {
    async fn detach(&self, file: &CacheFile) -> hsm::Result<()> {
        self.lustre.detach(file).await?;
        self.seen.lock().unwrap().push(file.rel.clone());
        std::fs::remove_file(self.cache.join(&file.rel))
            .map_err(|e| hsm::HsmError::io(&file.rel, e))
    }
}

#[tokio::test]
async fn on_lustre_files_are_detached_by_fid_on_the_client_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("pcc");
    let mut unit = 0;
    for (oid, atime) in [(0x4, 30), (0x5, 10), (0x6, 20)] {
        unit = allocated(&cache_file(&cache, oid, 64, atime));
    }
    // Not a FID: not PCC's, refused and counted, never removed.
    std::fs::write(cache.join("stray"), vec![0u8; 64 * 1024]).unwrap();
    set_atime(&cache.join("stray"), 1);
    let mnt = "/var/lib/lustrekit/mnt/testfs";
    let fake = Arc::new(
        FakeRunner::new()
            .expect(["lctl", "get_param", "version"], "version=2.16.0\n", "", 0)
            .expect(
                [
                    "lfs",
                    "pcc",
                    "detach_fid",
                    "-m",
                    mnt,
                    "[0x200000bd1:0x5:0x0]",
                ],
                "",
                "",
                0,
            )
            .expect(
                [
                    "lfs",
                    "pcc",
                    "detach_fid",
                    "-m",
                    mnt,
                    "[0x200000bd1:0x6:0x0]",
                ],
                "",
                "",
                0,
            ),
    );
    let config = LustreConfig::new(
        FsName::new("testfs").unwrap(),
        vec!["10.0.0.1@tcp".into()],
        "/mnt/testfs",
    );
    let fs: Arc<dyn backend::Filesystem> =
        Arc::new(LustreBackend::with_runner(config, fake.clone()).unwrap());
    let detach = LustreThenDrop {
        lustre: LustreDetach {
            fs,
            mount: mnt.into(),
        },
        cache: cache.clone(),
        seen: Mutex::new(Vec::new()),
    };
    // 4 units of 8 used (50 %); high 40, low 25: two units must go; the stray one fails.
    let usage: Arc<dyn UsageSource> = Arc::new(DirUsage {
        cache: cache.clone(),
        total: unit * 8,
        other: 0,
    });
    let r = purge_once(
        &cache,
        PurgePolicy::new(40, 25).unwrap(),
        &usage,
        &detach,
        None,
    )
    .await
    .unwrap();
    assert_eq!((r.detached, r.failed), (2, 1), "{r:?}");
    assert!(cache.join("stray").exists());
    fake.assert_done();
}

struct AlwaysFails;

#[async_trait]
impl Detach for AlwaysFails {
    async fn detach(&self, file: &CacheFile) -> hsm::Result<()> {
        Err(hsm::HsmError::refused(&file.rel, "busy"))
    }
}

#[tokio::test]
async fn a_purge_where_every_detach_fails_tries_each_file_once() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("pcc");
    let unit = allocated(&cache_file(&cache, 1, 64, 1));
    cache_file(&cache, 2, 64, 2);
    let usage: Arc<dyn UsageSource> = Arc::new(DirUsage {
        cache: cache.clone(),
        total: unit * 2,
        other: 0,
    });
    let metrics = PccMetrics::new();
    let r = purge_once(
        &cache,
        PurgePolicy::new(90, 10).unwrap(),
        &usage,
        &AlwaysFails,
        Some(&metrics),
    )
    .await
    .unwrap();
    assert_eq!((r.detached, r.failed), (0, 2), "{r:?}");
    assert_eq!(r.after_percent, 100.0);
    let text = metrics.render();
    assert!(
        text.contains("lustrekit_pcc_purge_detaches_total{result=\"error\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("lustrekit_pcc_purge_detaches_total{result=\"ok\"} 0"),
        "{text}"
    );
}

#[test]
fn kernel_counters_are_followed_by_their_increase_across_a_reset() {
    let m = PccMetrics::new();
    let c = |attach, hits| PccCounters {
        attach,
        hits,
        ..PccCounters::default()
    };
    m.observe_counters(&[c(3, 10), c(2, 0)]);
    m.observe_counters(&[c(4, 12), c(2, 1)]);
    // A remount: the counters start again.
    m.observe_counters(&[c(1, 1)]);
    let text = m.render();
    assert!(text.contains("lustrekit_pcc_attaches_total 7"), "{text}");
    assert!(text.contains("lustrekit_pcc_hits_total 14"), "{text}");
}

#[test]
fn watermarks_are_checked() {
    for (high, low) in [(0, 0), (50, 50), (50, 60), (101, 50), (90, 0)] {
        assert!(PurgePolicy::new(high, low).is_err(), "{high} {low}");
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_real_tmpfs_is_purged_by_its_statvfs() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("pcc");
    std::fs::create_dir(&cache).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "lustrekit-pcc-test"])
        .arg(&cache)
        .status()
        .expect("mount");
    assert!(status.success(), "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(cache.clone());
    // 14 files of 256 KiB: 3.5 of 4 MiB, 87.5 %.
    for oid in 1..=14u32 {
        cache_file(&cache, oid, 256, i64::from(oid) * 100);
    }
    let usage: Arc<dyn UsageSource> = Arc::new(StatvfsUsage { dir: cache.clone() });
    let r = purge_once(
        &cache,
        PurgePolicy::new(80, 50).unwrap(),
        &usage,
        &RemoveCacheFile {
            cache: cache.clone(),
        },
        None,
    )
    .await
    .unwrap();
    assert!(r.before_percent > 80.0, "{r:?}");
    assert!(r.after_percent <= 50.0, "{r:?}");
    // The oldest went: files 1.. are gone, the newest is there.
    let left = names(&cache);
    assert!(
        left.contains(&"0x200000bd1:0xe:0x0".to_string()),
        "{left:?}"
    );
    assert!(
        !left.contains(&"0x200000bd1:0x1:0x0".to_string()),
        "{left:?}"
    );
    eprintln!(
        "tmpfs: {:.1}% -> {:.1}%, {} files detached, {} left",
        r.before_percent,
        r.after_percent,
        r.detached,
        left.len()
    );
}
