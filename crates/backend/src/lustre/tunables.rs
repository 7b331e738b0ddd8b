//! Client tunables on the node (`lctl get_param` / `lctl set_param`), scoped to this
//! backend's filesystem, and what compression needs. The allowlist and the output parser
//! are [`lustre_model::tunables`]; get_param prints one `<name>=<value>` line per device
//! (`shared/lustre-formats/INDEX.md`, rule 3).

use async_trait::async_trait;
use lustre_model::{ClientTunable, Compression, ParamValue, parse_tunable_values};

use super::{LustreBackend, On, is_enoent, parse_error};
use crate::{BackendError, ClientParams, Result};

#[async_trait]
impl ClientParams for LustreBackend {
    async fn client_param_values(&self, tunable: &ClientTunable) -> Result<Vec<ParamValue>> {
        let pattern = tunable.pattern(&self.inner.config.fsname);
        let argv = self.lctl(["get_param", pattern.as_str()]);
        let out = self.run(On::Node, &argv).await?;
        // Nothing of the filesystem mounted here (or a client without the parameter):
        // `error: get_param: param_path '...': No such file or directory`, exit 2.
        if !out.success() && (is_enoent(&out) || out.exit_code == Some(2)) {
            return Ok(Vec::new());
        }
        let out = out.check(&argv)?;
        parse_tunable_values(&out.stdout_text(), tunable, &self.inner.config.fsname)
            .map_err(|e| parse_error(&argv, e))
    }

    async fn set_client_tunable(&self, tunable: &ClientTunable) -> Result<()> {
        let setting = format!(
            "{}={}",
            tunable.pattern(&self.inner.config.fsname),
            tunable.value
        );
        let argv = self.lctl(["set_param", setting.as_str()]);
        let out = self.run(On::Node, &argv).await?;
        if !out.success() && (is_enoent(&out) || out.exit_code == Some(2)) {
            return Err(BackendError::NeedsVersion {
                what: "client tunable",
                needed: format!("a Lustre client with {}", tunable.key()),
                why: format!(
                    "this node's client has no {}",
                    tunable.pattern(&self.inner.config.fsname)
                ),
            });
        }
        out.check(&argv).map(drop)
    }

    async fn restore_client_param(&self, value: &ParamValue) -> Result<()> {
        let setting = format!("{}={}", value.name, value.value);
        let argv = self.lctl(["set_param", setting.as_str()]);
        let out = self.run(On::Node, &argv).await?;
        // The device went with its mount: nothing to put back.
        if !out.success() && (is_enoent(&out) || out.exit_code == Some(2)) {
            return Ok(());
        }
        out.check(&argv).map(drop)
    }
}

/// Client-side data compression is not in any Lustre release this driver knows: the
/// lustre-release tree has no `lfs setstripe` compression option (it is planned for 2.17,
/// LU-10026 and LU-16920), so there is no syntax to drive and no version to accept.
pub(super) fn check_compression(compression: &Compression) -> Result<()> {
    Err(BackendError::NeedsVersion {
        what: "compression",
        needed: "Lustre 2.17 or later (client-side data compression)".into(),
        why: format!(
            "{compression} was asked for; no Lustre release lustrekit drives has client-side \
             compression yet"
        ),
    })
}
