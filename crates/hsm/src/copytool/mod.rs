//! stub
use crate::{HsmEngine, Result};
use std::path::Path;
use std::sync::Arc;
pub struct LustreApi;
impl LustreApi {
    pub fn load(_lib: &str) -> std::result::Result<Self, String> {
        Err("stub".into())
    }
}
pub async fn run(
    _api: LustreApi,
    _e: Arc<HsmEngine>,
    _mnt: &Path,
    _a: &[u32],
    _stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    Ok(())
}
