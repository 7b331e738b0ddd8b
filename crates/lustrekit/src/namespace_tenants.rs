//! The CSI controller's view of namespaces' tenant labels (`lustrekit.io/tenant`): a
//! metadata-only watch of Namespaces (kube-rs reflector), read by the csi crate through
//! [`csi::tenancy::NamespaceTenants`]. Until the first full list arrives every namespace is
//! unknown, so no volume is placed before the labels are.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use csi::tenancy::{NAMESPACE_TENANT_LABEL, NamespaceLabel, NamespaceTenants};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

/// What the watch has seen of the cluster's namespaces.
pub struct WatchedNamespaces {
    store: Store<PartialObjectMeta<Namespace>>,
    listed: Arc<AtomicBool>,
}

impl WatchedNamespaces {
    /// Starts the watch (one task; the watcher retries with backoff and relists) and returns
    /// its view.
    pub fn start(client: kube::Client) -> Arc<Self> {
        let (store, writer) = reflector::store();
        let listed = Arc::new(AtomicBool::new(false));
        let api: Api<Namespace> = Api::all(client);
        let events = reflector::reflector(
            writer,
            watcher::metadata_watcher(api, watcher::Config::default()).default_backoff(),
        );
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "namespace watch failed; retrying");
                }
            }
        });
        let reader = store.clone();
        let flag = Arc::clone(&listed);
        // The only waiter on this store: it wakes once the first full list is in.
        tokio::spawn(async move {
            if reader.wait_until_ready().await.is_ok() {
                flag.store(true, Ordering::Release);
                tracing::info!(
                    namespaces = reader.len(),
                    "namespace tenant labels are known"
                );
            }
        });
        Arc::new(Self { store, listed })
    }
}

impl NamespaceTenants for WatchedNamespaces {
    fn label(&self, namespace: &str) -> NamespaceLabel {
        if !self.listed.load(Ordering::Acquire) {
            return NamespaceLabel::Unknown;
        }
        let Some(seen) = self.store.get(&ObjectRef::new(namespace)) else {
            // A claim's namespace exists: the watch has not caught up with it yet.
            return NamespaceLabel::Unknown;
        };
        label_of(&seen.metadata)
    }
}

/// The tenant label of a namespace's metadata.
fn label_of(meta: &kube::api::ObjectMeta) -> NamespaceLabel {
    match meta
        .labels
        .as_ref()
        .and_then(|l| l.get(NAMESPACE_TENANT_LABEL))
    {
        Some(value) => NamespaceLabel::Tenant(value.clone()),
        None => NamespaceLabel::Unlabelled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_is_read_from_metadata() {
        let mut meta = kube::api::ObjectMeta::default();
        assert_eq!(label_of(&meta), NamespaceLabel::Unlabelled);
        meta.labels = Some(
            [
                ("other".to_string(), "x".to_string()),
                (NAMESPACE_TENANT_LABEL.to_string(), "alpha".to_string()),
            ]
            .into(),
        );
        assert_eq!(label_of(&meta), NamespaceLabel::Tenant("alpha".into()));
    }
}
