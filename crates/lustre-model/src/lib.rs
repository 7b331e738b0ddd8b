//! `lustre-model`: the Lustre domain types of lustrekit and pure parsers for the text
//! output of `lfs` and `lctl`.
//!
//! This crate does no I/O: callers run the commands (locally or over SSH) and hand the
//! captured text to the parsers here. Types validate on construction and are
//! `serde`-serialisable (the CLI emits them as JSON). Every parser returns a typed
//! [`ParseError`] instead of panicking, whatever the input. Output formats follow
//! `shared/lustre-formats/` (Lustre 2.12 → 2.17+).
//!
//! Must never: do I/O, or panic on any input.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod compression;
pub mod df;
pub mod error;
pub mod fid;
pub mod grace;
pub mod hsm;
pub mod layout;
pub mod llite;
pub mod names;
pub mod nid;
pub mod nodemap;
pub mod pcc;
pub mod project;
pub mod project_list;
pub mod quota;
pub mod root_prj;
pub mod size;
pub mod striping;
pub mod tunables;
pub mod version;
pub mod volume_id;

pub use compression::{Compression, CompressionAlgorithm, CompressionError};
pub use df::{DfMode, DfReport, DfRow, DfSpace, DfUnavailable, TargetKind, parse_lfs_df};
pub use error::{ModelError, ParseError};
pub use fid::Fid;
pub use grace::{Grace, parse_grace};
pub use hsm::{
    HS_ARCHIVED, HS_DIRTY, HS_EXISTS, HS_LOST, HS_NOARCHIVE, HS_NORELEASE, HS_PCCRO, HS_PCCRW,
    HS_RELEASED, HsmFlags, HsmState, parse_lfs_data_version, parse_lfs_hsm_state,
};
pub use layout::{Layout, LayoutComponent, StripeLayout, StripeObject, parse_lfs_getstripe};
pub use llite::{LliteValue, parse_llite_param};
pub use names::{FsName, NodemapName, RelPath, ShareName};
pub use nid::{LNet, NetType, Nid, NidRange, parse_nid_range_expr};
pub use nodemap::{
    FilesetEntry, IdMap, IdType, Nodemap, NodemapState, RBAC_ROLES_216, RBAC_ROLES_MASTER,
    RawNidRange, parse_nodemap_info_list, parse_nodemap_params, rbac_value,
};
pub use pcc::{
    PccAddParam, PccCounters, PccDataset, PccDialect, PccError, PccFileState, PccMode, PccRule,
    PccType, parse_lctl_pcc_list, parse_lfs_pcc_state, parse_llite_pcc_stats,
};
pub use project::{ProjectId, ProjectRange};
pub use project_list::{ProjectEntry, parse_lfs_project};
pub use quota::{QuotaLimits, QuotaReport, QuotaUsage, parse_lfs_quota, parse_lfs_quota_all};
pub use root_prj::parse_root_prj_enable;
pub use size::ByteSize;
pub use striping::{ComponentSpec, LayoutSpec, StripeSpec, StripingError};
pub use tunables::{
    ClientTunable, ClientTunables, ParamValue, TunableClass, TunableError, parse_tunable_values,
};
pub use version::{LustreVersion, parse_lctl_version};
pub use volume_id::VolumeId;
