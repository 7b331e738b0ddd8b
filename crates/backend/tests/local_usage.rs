//! The local backend's usage walk under a low descriptor limit: a tenant's
//! `mkdir d{1..5000}` must not make stats fail with EMFILE. Its own test binary, because the
//! limit is per process.

use backend::local::LocalBackend;
use backend::{DirSpec, Filesystem};
use backend::{Namespace, Quotas};
use lustre_model::{ProjectId, RelPath};

fn nofile() -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to fill.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim
}

fn set_nofile(lim: libc::rlimit) {
    // SAFETY: a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

#[tokio::test]
async fn stats_of_a_share_with_5000_directories_fit_in_128_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let fs = LocalBackend::open(dir.path().join("root")).await.unwrap();
    let share = RelPath::parse("share").unwrap();
    fs.create_share_dir(&share, &DirSpec::default())
        .await
        .unwrap();
    let host = fs.host_path(&share);
    for i in 0..5000 {
        let d = host.join(format!("d{i}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("f"), b"x").unwrap();
    }
    // And a chain 300 deep, where every level also has a second directory.
    let mut deep = host.clone();
    for i in 0..300 {
        deep = deep.join(format!("c{i}"));
        std::fs::create_dir_all(deep.join("side")).unwrap();
    }
    let saved = nofile();
    set_nofile(libc::rlimit {
        rlim_cur: 128,
        rlim_max: saved.rlim_max,
    });
    let report = fs.quota(&share, ProjectId::new(7).unwrap()).await;
    let now = fs.quota_now(&share, ProjectId::new(7).unwrap()).await;
    set_nofile(saved);
    let report = report.expect("stats under a low descriptor limit");
    // The share, 5000 directories with a file each, 300 levels of two directories.
    assert_eq!(report.usage.inodes, 1 + 2 * 5000 + 2 * 300);
    assert_eq!(now.unwrap().usage, report.usage);
}
