//! The `lustre` backend's directory commands run for real by the [`LocalRunner`] (real
//! coreutils, real error texts) on a scratch directory standing in for the client mount.

mod lustre_common;

use backend::lustre::LustreBackend;
use lustre_common::{config, exercise_dirs, scratch};

#[tokio::test]
async fn directory_operations_with_real_coreutils() {
    let s = scratch();
    let b = LustreBackend::new(config(&s)).unwrap();
    exercise_dirs(&b, &s.root).await;
}
