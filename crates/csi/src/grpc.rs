//! The generated CSI types and service stubs (package `csi.v1`), included once here.
#![allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]

/// Stands in for a map of secrets in `Debug` output: only how many entries it has is shown.
pub struct Redacted(pub usize);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<redacted: {} entries>", self.0)
    }
}

mod csi {
    pub mod v1 {
        tonic::include_proto!("csi.v1");
        include!(concat!(env!("OUT_DIR"), "/csi_redacted_debug.rs"));
    }
}

/// The encoded descriptor set of `csi.proto` (with source info), for reflection and tests.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/csi_descriptor.bin"));

pub use csi::v1::*;
