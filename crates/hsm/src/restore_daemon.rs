//! stub
use crate::{HsmEngine, Result};
use std::path::Path;
use std::sync::Arc;
pub struct DaemonConfig {
    pub restores: usize,
}
pub struct RestoreDaemon {
    root: std::path::PathBuf,
}
impl RestoreDaemon {
    pub fn start(engine: Arc<HsmEngine>, _cfg: DaemonConfig) -> Result<Self> {
        Ok(Self {
            root: engine.config().root.clone(),
        })
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub async fn stop(self) {}
}
