//! The controller's HSM status on PVCs: [`csi::hsm_status::PvcAnnotator`] over the
//! Kubernetes API (a JSON merge patch of `metadata.annotations`; nothing else of the PVC is
//! touched). The `csi` crate has no Kubernetes client, so it lives here.

use std::collections::BTreeMap;

use csi::hsm_status::{AnnotateFuture, PvcAnnotator};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};

/// The field manager of these patches.
const FIELD_MANAGER: &str = "lustrekit-csi";

/// Patches PVC annotations with a client of the API server.
pub struct KubePvcAnnotator {
    client: kube::Client,
    pvc: ApiResource,
}

impl std::fmt::Debug for KubePvcAnnotator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubePvcAnnotator")
    }
}

impl KubePvcAnnotator {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            pvc: ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: "PersistentVolumeClaim".into(),
                plural: "persistentvolumeclaims".into(),
            },
        }
    }
}

impl PvcAnnotator for KubePvcAnnotator {
    fn annotate<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        annotations: &'a BTreeMap<String, String>,
    ) -> AnnotateFuture<'a> {
        Box::pin(async move {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), namespace, &self.pvc);
            let patch = serde_json::json!({ "metadata": { "annotations": annotations } });
            api.patch(
                name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Merge(&patch),
            )
            .await
            .map(drop)
            .map_err(|e| e.to_string())
        })
    }
}
