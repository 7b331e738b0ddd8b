//! The lustrekit CSI driver.
pub mod grpc;
