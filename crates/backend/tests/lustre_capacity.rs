//! The `lustre` backend against the [`FakeRunner`]: capacity (`lfs df`). Every operation asserts the
//! exact argv sequence, and replays outputs copied from `shared/lustre-formats/` (each
//! fixture names its file and sample).

mod lustre_common;

use std::sync::Arc;

use backend::BackendError;
use backend::Quotas;
use backend::lustre::FakeRunner;

use lustre_common::fake::*;

/// `lfs df -i`: the `-i` header of lfs-df.md (b) (`UUID Inodes IUsed IFree IUse% Mounted on`)
/// with the 2.12–2.16 row format, rendered.
const DF_I_216: &str = "\
UUID                      Inodes       IUsed       IFree IUse% Mounted on
testfs-MDT0000_UUID       838864         272      838592   1% /mnt/testfs[MDT:0]
testfs-OST0000_UUID       262144         301      261843   1% /mnt/testfs[OST:0]
testfs-OST0001_UUID       262144         301      261843   1% /mnt/testfs[OST:1]

filesystem_summary:       838864         272      838592   1% /mnt/testfs

";

#[tokio::test]
async fn capacity_reads_the_df_summaries() {
    let fake = Arc::new(
        FakeRunner::new()
            .expect(["lfs", "df", "/mnt/testfs"], DF_216, "", 0)
            .expect(["lfs", "df", "-i", "/mnt/testfs"], DF_I_216, "", 0),
    );
    let cap = backend(&fake).capacity().await.unwrap();
    assert_eq!(cap.total_bytes, 7_810_139_648 * 1024);
    assert_eq!(cap.used_bytes, 4_197_376 * 1024);
    assert_eq!(cap.available_bytes, 7_805_936_128 * 1024);
    assert_eq!(
        (cap.total_inodes, cap.used_inodes, cap.free_inodes),
        (838_864, 272, 838_592)
    );
    fake.assert_done();
}

#[tokio::test]
async fn capacity_with_the_217_format_and_overflowing_columns() {
    // lfs-df.md (b) `=== 2.17.0 / master format` (trailing spaces kept), and (c) 2: the
    // DDN EXAScaler summary whose numbers overflow the 11-char columns.
    let blocks = "UUID                   1K-blocks        Used   Available Use%  Mounted on \ntestfs-MDT0000_UUID      1251328       16384     1122304   2%  /mnt/testfs[MDT:0] \ntestfs-OST0000_UUID   3905069824        3072  3905064704   1%  /mnt/testfs[OST:0] \n\nfilesystem_summary:  12706795008       30348 12577522452   1%  /mnt/testfs \n";
    let fake = Arc::new(
        FakeRunner::new()
            .expect(["lfs", "df", "/mnt/testfs"], blocks, "", 0)
            .expect(["lfs", "df", "-i", "/mnt/testfs"], DF_I_216, "", 0),
    );
    let cap = backend(&fake).capacity().await.unwrap();
    assert_eq!(cap.total_bytes, 12_706_795_008 * 1024);
    assert_eq!(cap.available_bytes, 12_577_522_452 * 1024);
    fake.assert_done();
}

#[tokio::test]
async fn capacity_failure_surfaces_stderr() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["lfs", "df", "/mnt/testfs"],
        "",
        "lfs df: cannot resolve path '/mnt/testfs': No such device\n",
        19,
    ));
    let err = backend(&fake).capacity().await.unwrap_err();
    assert!(
        matches!(err, BackendError::Command { ref stderr, .. } if stderr.contains("No such device")),
        "{err}"
    );
    fake.assert_done();
}
