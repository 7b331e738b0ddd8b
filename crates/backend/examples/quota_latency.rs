//! How long the local backend's `quota()` (what NodeGetVolumeStats costs) takes on a share
//! with many files, as a ratio to a bare `statvfs` of the same directory.
//!
//! As root, on a fresh btrfs loop image (needs btrfs-progs):
//!
//! ```text
//! cargo run -p backend --example quota_latency -- [FILES] [ROUNDS]
//! ```
//!
//! Prints p50 and p99 of each, the first `quota()` call on its own (the cold walk), and the
//! ratios. FILES defaults to 100000, ROUNDS to 50.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use backend::local::LocalBackend;
use backend::{DirSpec, Filesystem};
use backend::{Namespace, Quotas};
use lustre_model::{ProjectId, QuotaLimits, RelPath};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn summary(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (percentile(&samples, 0.50), percentile(&samples, 0.99))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let files: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let image = dir.path().join("fs.img");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(4 << 30))
        .map_err(|e| e.to_string())?;
    run(Command::new("mkfs.btrfs").arg("-q").arg(&image))?;
    run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&mnt))?;
    let _mounted = Mounted(&mnt);

    let fs = LocalBackend::open(&mnt).await.map_err(|e| e.to_string())?;
    let share = RelPath::parse("share").map_err(|e| e.to_string())?;
    let project = ProjectId::new(1000).map_err(|e| e.to_string())?;
    fs.create_share_dir(&share, &DirSpec::default())
        .await
        .map_err(|e| e.to_string())?;
    fs.set_quota(
        &share,
        project,
        &QuotaLimits {
            block_hard_bytes: 2 << 30,
            ..QuotaLimits::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let host = fs.host_path(&share);
    let made = Instant::now();
    for d in 0..files.div_ceil(1000) {
        let sub = host.join(format!("d{d:04}"));
        std::fs::create_dir(&sub).map_err(|e| e.to_string())?;
        for f in 0..1000.min(files - d * 1000) {
            std::fs::write(sub.join(format!("f{f:04}")), b"x").map_err(|e| e.to_string())?;
        }
    }
    nix::unistd::sync();
    eprintln!("made {files} files in {:?}", made.elapsed());

    let mut statvfs = Vec::new();
    for _ in 0..rounds.max(200) {
        let t = Instant::now();
        nix::sys::statvfs::statvfs(&host).map_err(|e| e.to_string())?;
        statvfs.push(t.elapsed());
    }
    let t = Instant::now();
    let first = fs.quota(&share, project).await.map_err(|e| e.to_string())?;
    let cold = t.elapsed();
    let mut quota = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let report = fs.quota(&share, project).await.map_err(|e| e.to_string())?;
        quota.push(t.elapsed());
        assert_eq!(report.usage.inodes, first.usage.inodes);
    }
    let (s50, s99) = summary(statvfs);
    let (q50, q99) = summary(quota);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!("files: {files}, inodes counted: {}", first.usage.inodes);
    println!("statvfs: p50 {s50:?} p99 {s99:?}");
    println!("quota() first call (cold): {cold:?}");
    println!(
        "quota() over {rounds} calls: p50 {q50:?} p99 {q99:?}  (x{:.0} / x{:.0} statvfs)",
        ratio(q50, s50),
        ratio(q99, s99)
    );
    Ok(())
}
