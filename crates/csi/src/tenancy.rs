//! Tenancy in the CSI driver: which tenant a new volume belongs to (the StorageClass's
//! `tenant`, else its PVC namespace's, from the driver configuration), and the node-side
//! check that refuses a tenant's volume on a node that is not the tenant's, where the
//! servers do not enforce nodemaps themselves (on Lustre the tenant's nodemap refuses the
//! mount; on `local` nothing would).
//!
//! The node takes a volume's tenant from its path (under which tenant root it lies), not
//! from the volume context alone, so a static PV that leaves the context out is checked
//! the same; a context that names another tenant than the path is refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use lustre_model::RelPath;
use share::tenant::{self, Tenant};
use share::{ShareService, ShareSettings};

use crate::error::{CsiError, Result};
use crate::params::{ClaimMetadata, keys};
use crate::volume::context;

/// The tenant a new volume belongs to: the class's `tenant` parameter, else the tenant of
/// the PVC's namespace. A class naming a tenant that the namespace is not in is refused: a
/// namespace of one tenant never gets another's volumes.
pub fn volume_tenant<'a>(
    parameters: &HashMap<String, String>,
    metadata: &ClaimMetadata,
    settings: &'a ShareSettings,
) -> Result<Option<&'a Tenant>> {
    let by_namespace = metadata
        .pvc_namespace
        .as_deref()
        .and_then(|ns| settings.tenant_of_namespace(ns));
    let Some(name) = parameters.get(keys::TENANT) else {
        return Ok(by_namespace);
    };
    let named = settings.tenant(name).ok_or_else(|| {
        CsiError::invalid(format!(
            "parameter {}={name:?}: no such tenant in the driver configuration",
            keys::TENANT
        ))
    })?;
    match by_namespace {
        Some(other) if other.name != named.name => Err(CsiError::invalid(format!(
            "parameter {}={name:?}, but namespace {:?} belongs to tenant {}",
            keys::TENANT,
            metadata.pvc_namespace.as_deref().unwrap_or_default(),
            other.name
        ))),
        _ => Ok(Some(named)),
    }
}

/// The volume context entry naming a share's tenant (none outside tenants).
pub fn context_entry(share: &share::Share) -> Option<(String, String)> {
    share
        .tenant
        .as_ref()
        .map(|t| (context::TENANT.to_string(), t.clone()))
}

/// The tenant whose root holds `path` (the root itself or anything below it).
pub fn tenant_of_path<'a>(settings: &'a ShareSettings, path: &RelPath) -> Option<&'a Tenant> {
    settings.tenants.iter().find(|t| {
        tenant::root_dir(&settings.prefix, t).is_ok_and(|root| {
            path.as_str() == root.as_str()
                || path
                    .as_str()
                    .strip_prefix(root.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    })
}

/// This node's own interface addresses, in its network namespace.
pub fn node_addresses() -> Result<Vec<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| CsiError::Internal(format!("reading this node's addresses: {e}")))?;
    Ok(addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect())
}

/// Refuses unless one of `addrs` is in the tenant's ranges. The message names the tenant
/// and the node, not the node's addresses nor the tenant's ranges.
pub fn check_node(
    settings: &ShareSettings,
    tenant: &Tenant,
    node_id: &str,
    addrs: &[IpAddr],
) -> Result<()> {
    let own = std::slice::from_ref(tenant);
    if tenant::tenant_of_addresses(own, addrs, settings.nid_net).is_some() {
        return Ok(());
    }
    Err(CsiError::PermissionDenied(format!(
        "the volume belongs to tenant {}, and node {node_id:?} is not one of its nodes",
        tenant.name
    )))
}

/// NodePublishVolume's check: where the servers do not enforce nodemaps, a tenant's volume
/// is published only on a node whose own addresses are in the tenant's ranges.
pub async fn check_publish(
    settings: &ShareSettings,
    nodemaps_enforced_by_server: bool,
    node_id: &str,
    path: &RelPath,
    ctx: &HashMap<String, String>,
) -> Result<()> {
    let tenant = tenant_of_path(settings, path);
    if let Some(named) = ctx.get(context::TENANT)
        && tenant.map(|t| t.name.as_str()) != Some(named.as_str())
    {
        return Err(CsiError::invalid(format!(
            "volume context {}={named:?} does not match the tenant of {}",
            context::TENANT,
            path.as_str()
        )));
    }
    let Some(tenant) = tenant else {
        return Ok(());
    };
    if nodemaps_enforced_by_server {
        return Ok(());
    }
    // getifaddrs is a netlink round trip: off the async threads.
    let addrs = tokio::task::spawn_blocking(node_addresses)
        .await
        .map_err(|e| CsiError::Internal(format!("reading this node's addresses: {e}")))??;
    check_node(settings, tenant, node_id, &addrs)
}

/// How often the controller puts the tenants' roots and nodemaps back to their desired state.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(300);

/// The controller's tenant loop: reconciles now, then every `every`; one task, and a failed
/// round is logged and tried again at the next.
pub async fn keep_tenants(service: Arc<ShareService>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match service.reconcile_tenants().await {
            Ok(report) => tracing::info!(
                tenants = report.tenants.len(),
                changes = report.changes.len(),
                root_project_quota = ?report.root_project_quota,
                enforced_by_server = report.nodemaps_enforced_by_server,
                "tenants reconciled"
            ),
            Err(e) => tracing::warn!(error = %e, "tenant reconcile failed; retrying later"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ShareSettings {
        share::Config::from_toml(
            "backend = \"local\"\nfsname = \"fs\"\nproject_ids = \"1-9\"\n[local]\nroot = \"/x\"\n\
             [[tenants]]\nname = \"alpha\"\nranges = [\"10.1.0.0/24\"]\nnamespaces = [\"team-a\"]\n\
             [[tenants]]\nname = \"beta\"\nranges = [\"10.2.0.7\"]\n",
        )
        .unwrap()
        .settings()
        .unwrap()
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_class_or_the_namespace_names_the_tenant() {
        let s = settings();
        let ns = |n: &str| ClaimMetadata {
            pvc_namespace: Some(n.into()),
            ..ClaimMetadata::default()
        };
        let name = |t: Option<&Tenant>| t.map(|t| t.name.to_string());
        let none = ClaimMetadata::default();
        assert_eq!(name(volume_tenant(&params(&[]), &none, &s).unwrap()), None);
        assert_eq!(
            name(volume_tenant(&params(&[]), &ns("team-a"), &s).unwrap()).as_deref(),
            Some("alpha")
        );
        assert_eq!(
            name(volume_tenant(&params(&[("tenant", "beta")]), &ns("other"), &s).unwrap())
                .as_deref(),
            Some("beta")
        );
        assert!(volume_tenant(&params(&[("tenant", "beta")]), &ns("team-a"), &s).is_err());
        assert!(volume_tenant(&params(&[("tenant", "gamma")]), &none, &s).is_err());
    }

    #[test]
    fn the_path_names_the_tenant_and_the_node_must_be_its() {
        let s = settings();
        let path = |p: &str| RelPath::parse(p).unwrap();
        assert_eq!(
            tenant_of_path(&s, &path("shares/alpha/pvc-1")).map(|t| t.name.as_str()),
            Some("alpha")
        );
        assert!(tenant_of_path(&s, &path("shares/alphabet/pvc-1")).is_none());
        assert!(tenant_of_path(&s, &path("shares/pvc-1")).is_none());
        let beta = s.tenant("beta").unwrap();
        let ip = |a: &str| a.parse::<IpAddr>().unwrap();
        check_node(&s, beta, "n1", &[ip("127.0.0.1"), ip("10.2.0.7")]).unwrap();
        let err = check_node(&s, beta, "n1", &[ip("10.1.0.3")]).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("beta") && message.contains("n1"),
            "{message}"
        );
        assert!(!message.contains("10."), "{message}");
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::PermissionDenied
        );
    }

    #[tokio::test]
    async fn a_context_naming_another_tenant_is_refused() {
        let s = settings();
        let path = RelPath::parse("shares/alpha/pvc-1").unwrap();
        let ctx = params(&[(context::TENANT, "beta")]);
        assert!(matches!(
            check_publish(&s, true, "n1", &path, &ctx).await,
            Err(CsiError::InvalidArgument(_))
        ));
        check_publish(&s, true, "n1", &path, &HashMap::new())
            .await
            .unwrap();
        // This host's addresses are not 10.1.0.0/24 (the test network is TEST-NET-free).
        let addrs = node_addresses().unwrap();
        assert!(!addrs.is_empty());
    }
}
