//! The `lustre` backend against the [`FakeRunner`]: project quotas (`lfs setquota`, `lfs quota`). Every operation asserts the
//! exact argv sequence, and replays outputs copied from `shared/lustre-formats/` (each
//! fixture names its file and sample).

mod lustre_common;

use std::sync::Arc;

use backend::BackendError;
use backend::Quotas;
use backend::lustre::FakeRunner;
use lustre_model::{Grace, QuotaLimits};

use lustre_common::fake::*;

#[tokio::test]
async fn set_quota_passes_kib_and_inode_counts() {
    // lfs-setquota.md (a): `lfs setquota -p 1000 -b 307200 -B 309200 -i 10000 -I 11000 /mnt/testfs`.
    let fake = Arc::new(FakeRunner::new().expect(
        [
            "lfs",
            "setquota",
            "-p",
            "1000",
            "-b",
            "307200",
            "-B",
            "309200",
            "-i",
            "10000",
            "-I",
            "11000",
            "/mnt/testfs",
        ],
        "",
        "",
        0,
    ));
    let limits = QuotaLimits {
        block_soft_bytes: 307_200 * 1024,
        block_hard_bytes: 309_200 * 1024,
        inode_soft: 10_000,
        inode_hard: 11_000,
    };
    backend(&fake)
        .set_quota(&rel("t/a"), pid(1000), &limits)
        .await
        .unwrap();
    fake.assert_done();
}

#[tokio::test]
async fn set_quota_warning_is_not_an_error_but_a_refusal_is() {
    // lfs-setquota.md (b): the qunit warning (exit 0) and the root refusal.
    let warn = "lfs setquota: warning: block softlimit '1024' smaller than minimum qunit size\nSee 'lfs help setquota' or Lustre manual for details\n";
    let argv = [
        "lfs",
        "setquota",
        "-p",
        "5",
        "-b",
        "1024",
        "-B",
        "0",
        "-i",
        "0",
        "-I",
        "0",
        "/mnt/testfs",
    ];
    let fake = Arc::new(FakeRunner::new().expect(argv, "", warn, 0).expect(
        argv,
        "",
        "lfs setquota: quotactl failed: Operation not permitted\n",
        1,
    ));
    let limits = QuotaLimits {
        block_soft_bytes: 1024 * 1024 - 1,
        ..QuotaLimits::default()
    };
    let b = backend(&fake);
    b.set_quota(&rel("a"), pid(5), &limits).await.unwrap();
    let err = b.set_quota(&rel("a"), pid(5), &limits).await.unwrap_err();
    assert!(
        matches!(err, BackendError::Command { ref stderr, .. } if stderr.contains("Operation not permitted")),
        "{err}"
    );
    fake.assert_done();
}

#[tokio::test]
async fn quota_parses_a_real_over_quota_project() {
    // lfs-quota.md (c) 1: NREL Eagle docs, over-quota project (≤2.15 format).
    let out = "Disk quotas for prj 110255 (pid 110255):\n       Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace\n/projects/csc000 3165308*   3072    4096       -      48  1073741824 2147483648       -\n";
    let fake = Arc::new(FakeRunner::new().expect(
        ["lfs", "quota", "-p", "110255", "/projects"],
        out,
        "",
        0,
    ));
    let report = backend_at(&fake, "/projects")
        .quota(&rel("csc000"), pid(110255))
        .await
        .unwrap();
    assert_eq!(report.usage.used_bytes, 3_165_308 * 1024);
    assert_eq!(report.usage.inodes, 48);
    assert_eq!(report.limits.block_soft_bytes, 3072 * 1024);
    assert_eq!(report.limits.block_hard_bytes, 4096 * 1024);
    assert_eq!(report.limits.inode_soft, 1_073_741_824);
    assert_eq!(report.limits.inode_hard, 2_147_483_648);
    assert!(report.block_exceeded);
    assert!(!report.inode_exceeded);
    assert!(!report.inaccurate);
    fake.assert_done();
}

#[tokio::test]
async fn quota_parses_the_217_format() {
    // lfs-quota.md (b), "Rendered from the formats", `=== 2.17 / master` (trailing spaces kept).
    let out = "Disk quotas for prj 1000 (pid 1000):\n     Filesystem  kbytes  bquota  blimit  bgrace   files  iquota  ilimit  igrace \n    /mnt/testfs  30720*   30720   30920 6d23h56m44s  10101*   10000   11000 6d23h59m50s \n";
    let fake = Arc::new(FakeRunner::new().expect(
        ["lfs", "quota", "-p", "1000", "/mnt/testfs"],
        out,
        "",
        0,
    ));
    let report = backend(&fake).quota(&rel("t/a"), pid(1000)).await.unwrap();
    assert_eq!(report.usage.used_bytes, 30720 * 1024);
    assert_eq!(report.limits.inode_hard, 11000);
    assert!(report.block_exceeded && report.inode_exceeded);
    assert!(matches!(report.block_grace, Grace::Remaining(_)));
    fake.assert_done();
}

#[tokio::test]
async fn quota_with_an_unreachable_target_is_reported_inaccurate() {
    // lfs-quota.md (c) 4: OzSTAR docs, bracketed values; lfs exits non-zero (-EIO) then.
    let out = "Disk quotas for usr username (uid 1000):\n     Filesystem    kbytes    quota   limit   grace   files   quota   limit   grace\n          /fred [1041408]  5242880 6291456       -     [0]       0       0       -\n";
    let fake =
        Arc::new(FakeRunner::new().expect(["lfs", "quota", "-p", "1000", "/fred"], out, "", 5));
    let report = backend_at(&fake, "/fred")
        .quota(&rel("x"), pid(1000))
        .await
        .unwrap();
    assert!(report.inaccurate);
    assert_eq!(report.usage.used_bytes, 1_041_408 * 1024);
    fake.assert_done();
}

#[tokio::test]
async fn quota_failure_without_a_table_surfaces_stderr() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["lfs", "quota", "-p", "1000", "/mnt/testfs"],
        "",
        "lfs quota: cannot resolve path '/mnt/testfs': No such file or directory\n",
        2,
    ));
    let err = backend(&fake)
        .quota(&rel("a"), pid(1000))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Command { ref stderr, .. } if stderr.contains("cannot resolve path")),
        "{err}"
    );
    fake.assert_done();
}
