//! PLACEHOLDER written by the lead so the workspace compiles; the lustre backend engineer
//! replaces this file.
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct LustreConfig {}

pub struct LustreBackend;


impl LustreBackend {
    pub fn new(_config: LustreConfig) -> crate::Result<Self> {
        Err(crate::BackendError::unsupported("lustre", "placeholder"))
    }
}
