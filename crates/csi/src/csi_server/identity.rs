//! The Identity service: who we are, what we offer, whether we are ready.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::Driver;
use crate::grpc::identity_server::Identity;
use crate::grpc::plugin_capability::{self, service, volume_expansion};
use crate::grpc::*;

pub struct IdentityService {
    driver: Arc<Driver>,
}

impl IdentityService {
    pub fn new(driver: Arc<Driver>) -> Self {
        Self { driver }
    }
}

fn service_cap(kind: service::Type) -> PluginCapability {
    PluginCapability {
        r#type: Some(plugin_capability::Type::Service(
            plugin_capability::Service {
                r#type: kind as i32,
            },
        )),
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        let d = &self.driver;
        d.call("GetPluginInfo", "", async {
            Ok(GetPluginInfoResponse {
                name: d.name.clone(),
                vendor_version: env!("CARGO_PKG_VERSION").to_string(),
                manifest: [
                    (
                        "backend".to_string(),
                        d.service.backend().kind_name().to_string(),
                    ),
                    ("mode".to_string(), format!("{:?}", d.mode).to_lowercase()),
                ]
                .into(),
            })
        })
        .await
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let d = &self.driver;
        d.call("GetPluginCapabilities", "", async {
            let mut capabilities = Vec::new();
            if d.mode.controller() {
                capabilities.push(service_cap(service::Type::ControllerService));
                capabilities.push(PluginCapability {
                    r#type: Some(plugin_capability::Type::VolumeExpansion(
                        plugin_capability::VolumeExpansion {
                            r#type: volume_expansion::Type::Online as i32,
                        },
                    )),
                });
            }
            Ok(GetPluginCapabilitiesResponse { capabilities })
        })
        .await
    }

    async fn probe(
        &self,
        _request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        let d = &self.driver;
        d.call("Probe", "", async {
            Ok(ProbeResponse {
                ready: Some(d.metrics.is_ready()),
            })
        })
        .await
    }
}
