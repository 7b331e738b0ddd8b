//! The policy engine on the local backend and store: which files the rules select, LRU
//! release down to the low watermark, dry runs, the rate limit (counted), and `watch`
//! reacting to fanotify change events.

mod common;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hsm::policy::{Policy, PolicyConfig, action_paths};

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Sets atime and mtime (seconds since the epoch).
fn set_times(p: &Path, atime: i64, mtime: i64) {
    let c = CString::new(p.as_os_str().as_bytes()).expect("cstr");
    let ts = [
        libc::timespec {
            tv_sec: atime as _,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: mtime as _,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid path and two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat {}", p.display());
}

async fn local_env() -> Env {
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = format!("file://{}", tmp.path().join("store").display());
    env_with(&spec, tmp, small_cfg()).await
}

fn names(ns: &Path, v: Vec<PathBuf>) -> BTreeSet<String> {
    v.into_iter()
        .map(|p| p.strip_prefix(ns).expect("under ns").display().to_string())
        .collect()
}

fn make_archive_tree(ns: &Path) {
    let old = now_s() - 3 * 3600;
    for (name, size, age_old) in [
        ("a.dat", 2048usize, true),
        ("new.dat", 2048, false),
        ("c.txt", 2048, true),
        ("tmp/d.dat", 2048, true),
        ("big.dat", 70_000, true),
        ("tiny.dat", 10, true),
        ("deep/e/f.dat", 4096, true),
    ] {
        let p = ns.join(name);
        write(&p, &content(size, size as u64));
        if age_old {
            set_times(&p, old, old);
        }
    }
}

const ARCHIVE_RULES: &str = r#"
[archive]
older_than_minutes = 60
include = ["*.dat"]
exclude = ["tmp/**"]
min_size = 100
max_size = "64KiB"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_rules_select_by_glob_size_and_age() {
    let env = local_env().await;
    make_archive_tree(&env.ns);
    let engine = Arc::new(env.engine);
    let cfg = PolicyConfig::parse(ARCHIVE_RULES).expect("cfg");
    let policy = Policy::new(engine.clone(), cfg).expect("policy");
    let r = policy.run_pass().await.expect("pass");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.scanned_files, 7);
    assert_eq!(
        names(&env.ns, action_paths(&r, "archive")),
        BTreeSet::from(["a.dat".to_string(), "deep/e/f.dat".to_string()])
    );
    assert!(r.actions.iter().all(|a| a.done));
    for (f, archived) in [
        ("a.dat", true),
        ("deep/e/f.dat", true),
        ("new.dat", false),
        ("c.txt", false),
        ("tmp/d.dat", false),
        ("big.dat", false),
        ("tiny.dat", false),
    ] {
        let st = engine.state(&env.ns.join(f)).await.expect("state").state;
        assert_eq!(st.flags.archived, archived, "{f}: {st}");
    }
    // A second pass has nothing left to do.
    let r = policy.run_pass().await.expect("pass");
    assert!(r.actions.is_empty(), "{:?}", r.actions);
    assert!(r.text().contains("0 to archive"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_lists_and_changes_nothing() {
    let env = local_env().await;
    make_archive_tree(&env.ns);
    let store_dir = env._tmp.path().join("store");
    let engine = Arc::new(env.engine);
    let mut cfg = PolicyConfig::parse(ARCHIVE_RULES).expect("cfg");
    cfg.dry_run = true;
    let policy = Policy::new(engine.clone(), cfg).expect("policy");
    let r = policy.run_pass().await.expect("pass");
    assert!(r.dry_run);
    assert_eq!(action_paths(&r, "archive").len(), 2);
    assert!(r.actions.iter().all(|a| !a.done));
    assert!(r.text().contains("would archive"), "{}", r.text());
    for f in ["a.dat", "deep/e/f.dat"] {
        let st = engine.state(&env.ns.join(f)).await.expect("state").state;
        assert!(!st.flags.archived, "{f}");
    }
    let objects = std::fs::read_dir(&store_dir)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(objects, 0, "the store was written");
    assert_eq!(policy.operations(), 0);
}

/// Ten archived 64 KiB files with distinct atimes; a budget that puts usage at 95%.
/// High 90%, low 60%: the oldest clean archived files go, until usage is below 60%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermark_release_takes_lru_clean_archived_files_down_to_low() {
    let env = local_env().await;
    let engine = Arc::new(env.engine);
    let base = now_s() - 100_000;
    // Setting times moves the ctime, which the local data version counts as a change, so
    // the atimes are set first and the files archived after (archive reads with O_NOATIME).
    for i in 0..10 {
        let p = env.ns.join(format!("f{i}"));
        write(&p, &content(64 << 10, i));
        // atime order: f0 oldest ... f9 newest.
        let md = std::fs::metadata(&p).expect("md");
        let c = CString::new(p.as_os_str().as_bytes()).expect("c");
        let ts = [
            libc::timespec {
                tv_sec: (base + i as i64 * 100) as _,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: md.mtime() as _,
                tv_nsec: md.mtime_nsec() as _,
            },
        ];
        // SAFETY: valid path and timespecs.
        assert_eq!(
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) },
            0
        );
    }
    let mut alloc = 0u64;
    for i in 0..10 {
        let p = env.ns.join(format!("f{i}"));
        if i != 1 {
            // f1 (second oldest) is never archived.
            engine.archive(&p).await.expect("archive");
        }
        alloc += std::fs::metadata(&p).expect("md").blocks() * 512;
    }
    // f2 (third oldest) changes after its archive: dirty, not releasable. Its atime is put
    // back so only the dirtiness keeps it.
    std::thread::sleep(Duration::from_millis(20));
    {
        let p = env.ns.join("f2");
        let before = std::fs::metadata(&p).expect("md");
        write(&p, &content(64 << 10, 99));
        let c = CString::new(p.as_os_str().as_bytes()).expect("c");
        let ts = [
            libc::timespec {
                tv_sec: before.atime() as _,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
        ];
        // SAFETY: valid path and timespecs.
        assert_eq!(
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) },
            0
        );
    }
    let capacity = alloc * 100 / 95;
    let toml =
        format!("[release]\nhigh_watermark = 90\nlow_watermark = 60\ncapacity = {capacity}\n");
    let cfg = PolicyConfig::parse(&toml).expect("cfg");
    let policy = Policy::new(engine.clone(), cfg).expect("policy");
    let r = policy.run_pass().await.expect("pass");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let rel = r.release.as_ref().expect("release summary");
    assert!(rel.triggered && rel.used_percent > 90.0, "{rel:?}");
    // 95% → below 60% needs 4 files of 10 (each 9.5%): f0, f3, f4, f5 (f1 unarchived, f2 dirty).
    assert_eq!(
        names(&env.ns, action_paths(&r, "release")),
        ["f0", "f3", "f4", "f5"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert!(
        rel.projected_percent < 60.0 && rel.projected_percent > 50.0,
        "{rel:?}"
    );
    assert!(!rel.short_of_target);
    for i in 0..10 {
        let st = engine
            .state(&env.ns.join(format!("f{i}")))
            .await
            .expect("st")
            .state;
        assert_eq!(st.flags.released, [0, 3, 4, 5].contains(&i), "f{i}: {st}");
    }
    // Below the high watermark now: the next pass releases nothing.
    let r = policy.run_pass().await.expect("pass");
    let rel = r.release.as_ref().expect("summary");
    assert!(!rel.triggered, "{rel:?}");
    assert!(action_paths(&r, "release").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_counts_every_operation() {
    let env = local_env().await;
    for i in 0..6 {
        let p = env.ns.join(format!("r{i}"));
        write(&p, b"x");
        set_times(&p, now_s() - 7200, now_s() - 7200);
    }
    let engine = Arc::new(env.engine);
    let cfg =
        PolicyConfig::parse("rate_limit = 40\n[archive]\nolder_than_minutes = 1\n").expect("cfg");
    let policy = Policy::new(engine, cfg).expect("policy");
    let r = policy.run_pass().await.expect("pass");
    assert_eq!(action_paths(&r, "archive").len(), 6);
    // Every operation went through the limiter (its window property is unit-tested).
    assert_eq!(policy.operations(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_file_errors_name_the_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = tmp.path().join("p.toml");
    std::fs::write(&p, "[archive]\nolder_than_minute = 3\n").expect("write");
    let e = PolicyConfig::load(&p).expect_err("bad").to_string();
    assert!(
        e.contains("p.toml") && e.contains("older_than_minute"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (fanotify)"]
async fn watch_reruns_on_change_events() {
    let env = local_env().await;
    let engine = Arc::new(env.engine);
    let cfg = PolicyConfig::parse(
        "[archive]\nolder_than_minutes = 0\n[watch]\ndebounce_ms = 100\ninterval_secs = 3600\n",
    )
    .expect("cfg");
    let policy = Arc::new(Policy::new(engine.clone(), cfg).expect("policy"));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let p2 = policy.clone();
    let task = tokio::spawn(async move {
        let each = move |r: &hsm::policy::PassReport| {
            let _ = tx.send(r.clone());
        };
        p2.watch(
            async {
                let _ = stop_rx.await;
            },
            &each,
        )
        .await
    });
    let first = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("first pass")
        .expect("report");
    assert_eq!(first.trigger, "start");
    // Give the watcher a moment, then change something from another process.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let f = env.ns.join("fresh.dat");
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("echo hello > '{}'", f.display()))
        .status()
        .expect("sh");
    assert!(st.success());
    let next = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
    let _ = stop_tx.send(());
    let next = match next {
        Ok(Some(r)) => r,
        _ => panic!("no pass after a change (interval is an hour, so fanotify did not fire)"),
    };
    assert_eq!(next.trigger, "change");
    assert_eq!(
        names(&env.ns, action_paths(&next, "archive")),
        BTreeSet::from(["fresh.dat".to_string()])
    );
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("watch stops")
        .expect("join")
        .expect("watch ok");
}

/// The release rule measured against a share's project quota: a share directory with a
/// project ID and a 1 MiB limit holds 10 archived files of 96 KiB (about 94%); with high 90%
/// and low 50%, the oldest files go until the share's own usage is below half its quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_scope_release_measures_the_share_quota() {
    let env = local_env().await;
    let engine = Arc::new(env.engine);
    let share = lustre_model::RelPath::parse("tenants/a").expect("rel");
    let dir = env.ns.join("tenants/a");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let fs = engine.backend();
    fs.set_project(&share, lustre_model::ProjectId::new(4242).expect("id"))
        .await
        .expect("project");
    let limits = lustre_model::QuotaLimits {
        block_hard_bytes: 1 << 20,
        ..Default::default()
    };
    fs.set_quota(
        &share,
        lustre_model::ProjectId::new(4242).expect("id"),
        &limits,
    )
    .await
    .expect("quota");
    let base = now_s() - 50_000;
    for i in 0..10 {
        let p = dir.join(format!("f{i}"));
        write(&p, &content(96 << 10, i));
        let mtime = std::fs::metadata(&p).expect("md").mtime();
        set_times(&p, base + i as i64 * 10, mtime);
    }
    for i in 0..10 {
        engine
            .archive(&dir.join(format!("f{i}")))
            .await
            .expect("archive");
    }
    let before = fs
        .quota(&share, lustre_model::ProjectId::new(4242).expect("id"))
        .await
        .expect("quota");
    assert!(
        before.usage.used_bytes * 100 > 90 * (1 << 20),
        "setup: {before:?}"
    );
    let cfg = PolicyConfig::parse(
        "path = \"tenants/a\"\n[release]\nhigh_watermark = 90\nlow_watermark = 50\nshare = \"tenants/a\"\n",
    )
    .expect("cfg");
    let report = Policy::new(engine.clone(), cfg)
        .expect("policy")
        .run_pass()
        .await
        .expect("pass");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let released = names(&dir, action_paths(&report, "release"));
    // Oldest first, and no more than needed.
    assert!(
        released.contains("f0") && !released.contains("f9"),
        "{released:?}"
    );
    let after = fs
        .quota(&share, lustre_model::ProjectId::new(4242).expect("id"))
        .await
        .expect("quota");
    assert!(after.usage.used_bytes * 100 < 50 * (1 << 20), "{after:?}");
    assert!(
        after.usage.used_bytes * 100 > 30 * (1 << 20),
        "released more than needed: {after:?}"
    );
}
