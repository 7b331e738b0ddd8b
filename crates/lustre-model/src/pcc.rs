//! Persistent Client Cache (PCC): the auto-cache rule grammar of `lctl pcc add`, the
//! `--param` string a volume's cache is registered with, and parsers for `lfs pcc state`
//! and `lctl pcc list` (`shared/lustre-formats/pcc.md`).
//!
//! A rule is an OR (`,`) of AND-groups (`&`) of terms `field OP {v1 v2 ...}`: values inside
//! `{}` are space separated. What a client accepts depends on its version, the
//! [`PccDialect`]:
//! - 2.13 to 2.15: fields `uid`, `gid`, `projid`, `fname`; operator `=` only; PCC-RW only
//!   (`rwid=N rwpcc=1`);
//! - 2.16 and later: also `size` (`=`, `<`, `>`, values with units `1M`) and `mtime` (`<`,
//!   `>`, an age such as `1h`), `<`/`>` on ids, the `filename` alias; PCC-RO (`roid=N
//!   pccro=1`) as well as PCC-RW (`rwid=N pccrw=1`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;
use crate::version::LustreVersion;

/// The PCC syntax a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PccDialect {
    /// Lustre 2.13 to 2.15.
    V2_15,
    /// Lustre 2.16 and later.
    V2_16,
}

impl PccDialect {
    /// The dialect of a client version; `None` before 2.13 (no PCC).
    pub fn for_version(version: &LustreVersion) -> Option<Self> {
        if version.at_least(2, 16) {
            Some(Self::V2_16)
        } else if version.at_least(2, 13) {
            Some(Self::V2_15)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::V2_15 => "Lustre 2.15",
            Self::V2_16 => "Lustre 2.16",
        }
    }
}

/// Why a PCC rule, id or mode is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PccError {
    /// The rule as a whole is malformed.
    #[error("PCC rule `{rule}`: {why}")]
    Rule {
        /// The rule text.
        rule: String,
        /// What is wrong.
        why: String,
    },
    /// One term of the rule is wrong.
    #[error("PCC rule term `{term}`: {why}")]
    Term {
        /// The term text.
        term: String,
        /// What is wrong.
        why: String,
    },
    /// The client's version lacks what was asked.
    #[error("{what} needs Lustre 2.16 or later; this client speaks the {} PCC syntax", .dialect.name())]
    Unsupported {
        /// What was asked.
        what: String,
        /// The client's dialect.
        dialect: PccDialect,
    },
    /// A PCC id (`rwid`/`roid`, the `-i` of `lfs pcc attach`) out of range.
    #[error("PCC id {0}: must be 1 to 4294967294")]
    Id(u64),
}

/// A field a rule term tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PccField {
    /// The file owner's uid.
    Uid,
    /// The file's gid.
    Gid,
    /// The file's project ID.
    ProjId,
    /// The file name (glob patterns); `filename` is its 2.16 alias.
    Fname,
    /// The file size (2.16+).
    Size,
    /// The file's age since modification (2.16+).
    Mtime,
}

impl PccField {
    /// The spelling in a rule.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uid => "uid",
            Self::Gid => "gid",
            Self::ProjId => "projid",
            Self::Fname => "fname",
            Self::Size => "size",
            Self::Mtime => "mtime",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "uid" => Self::Uid,
            "gid" => Self::Gid,
            "projid" => Self::ProjId,
            "fname" | "filename" => Self::Fname,
            "size" => Self::Size,
            "mtime" => Self::Mtime,
            _ => return None,
        })
    }
}

/// A term's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PccOp {
    /// `=`: any of the values.
    Eq,
    /// `<`: below the one value.
    Lt,
    /// `>`: above the one value.
    Gt,
}

impl PccOp {
    /// The spelling in a rule.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Lt => "<",
            Self::Gt => ">",
        }
    }
}

/// One `field OP {values}` term. Values are kept as written once checked (an id as a
/// decimal number, a size such as `1M`, an age such as `30m`, a glob).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PccTerm {
    /// The field tested.
    pub field: PccField,
    /// The operator.
    pub op: PccOp,
    /// The values, at least one; exactly one for `<` and `>`.
    pub values: Vec<String>,
}

/// An auto-cache rule: an OR of AND-groups of terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PccRule {
    /// The OR-groups, each an AND of its terms; never empty, nor any group.
    pub groups: Vec<Vec<PccTerm>>,
}

/// Characters a value can never hold: the rule's own delimiters, and what would split the
/// `--param` string (spaces) or be read as an operator.
const VALUE_FORBIDDEN: &[char] = &['{', '}', ',', '&', '=', '<', '>', '"', '\''];

/// The size units `sysfs_memparse` takes (a bare number is MiB for `<`/`>`, bytes for `=`).
const SIZE_UNITS: &[char] = &['K', 'M', 'G', 'T', 'P', 'E', 'k', 'm', 'g', 't', 'p', 'e'];

/// The age units of `mtime` (`pcc_expr_time_parse`).
const AGE_UNITS: &[char] = &['s', 'm', 'h', 'd', 'w', 'y'];

fn check_value(field: PccField, op: PccOp, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("an empty value".into());
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || VALUE_FORBIDDEN.contains(&c))
    {
        return Err(format!(
            "value `{value}` holds a space, a control character or one of {{ }} , & = < > quotes"
        ));
    }
    match field {
        PccField::Uid | PccField::Gid | PccField::ProjId => {
            let ok = value.bytes().all(|b| b.is_ascii_digit())
                && value.len() <= 10
                && value.parse::<u64>().is_ok_and(|n| {
                    // `<`/`>` take 1 to 2^32-2 (`pcc_expr_id_parse`); `=` any u32.
                    n <= u64::from(u32::MAX)
                        && (op == PccOp::Eq || (1..u64::from(u32::MAX)).contains(&n))
                });
            if !ok {
                return Err(format!("`{value}` is not a {} number", field.as_str()));
            }
        }
        PccField::Size => {
            let digits = value.trim_end_matches(SIZE_UNITS);
            let unit_len = value.len() - digits.len();
            if digits.is_empty()
                || unit_len > 1
                || !digits.bytes().all(|b| b.is_ascii_digit())
                || digits.len() > 19
            {
                return Err(format!("`{value}` is not a size such as 4096, 1M or 500G"));
            }
        }
        PccField::Mtime => {
            let digits = value.trim_end_matches(AGE_UNITS);
            let unit_len = value.len() - digits.len();
            // Lustre reads at most 10 characters (`char buf[11]`).
            if digits.is_empty()
                || unit_len > 1
                || value.len() > 10
                || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(format!(
                    "`{value}` is not an age such as 90, 30m, 12h or 7d (s m h d w y)"
                ));
            }
        }
        PccField::Fname => {
            if value.len() > 255 || value.contains('/') {
                return Err(format!("`{value}` is not a file name pattern"));
            }
        }
    }
    Ok(())
}

impl PccTerm {
    /// Checks the term against what `dialect` accepts.
    pub fn validate(&self, dialect: PccDialect) -> Result<(), PccError> {
        let bad = |why: String| PccError::Term {
            term: self.to_string(),
            why,
        };
        if self.values.is_empty() {
            return Err(bad("no values between { }".into()));
        }
        match (self.field, self.op) {
            (PccField::Fname, PccOp::Lt | PccOp::Gt) => {
                return Err(bad("fname takes only `=`".into()));
            }
            (PccField::Mtime, PccOp::Eq) => {
                return Err(bad("mtime takes only `<` or `>`".into()));
            }
            _ => {}
        }
        if self.op != PccOp::Eq && self.values.len() != 1 {
            return Err(bad(format!(
                "`{}` takes exactly one value",
                self.op.as_str()
            )));
        }
        for value in &self.values {
            check_value(self.field, self.op, value).map_err(bad)?;
        }
        if dialect == PccDialect::V2_15 {
            let what = if matches!(self.field, PccField::Size | PccField::Mtime) {
                Some(format!("the PCC rule field `{}`", self.field.as_str()))
            } else if self.op != PccOp::Eq {
                Some(format!("the PCC rule operator `{}`", self.op.as_str()))
            } else {
                None
            };
            if let Some(what) = what {
                return Err(PccError::Unsupported { what, dialect });
            }
        }
        Ok(())
    }

    fn parse(text: &str, dialect: PccDialect) -> Result<Self, PccError> {
        let bad = |why: &str| PccError::Term {
            term: text.to_string(),
            why: why.to_string(),
        };
        let at = text
            .find(['=', '<', '>'])
            .ok_or_else(|| bad("no operator (`=`, `<` or `>`)"))?;
        let (name, rest) = text.split_at(at);
        let op = match rest.as_bytes().first() {
            Some(b'<') => PccOp::Lt,
            Some(b'>') => PccOp::Gt,
            _ => PccOp::Eq,
        };
        let field = PccField::parse(name.trim()).ok_or_else(|| {
            bad("unknown field (uid, gid, projid, fname, and from 2.16 size, mtime)")
        })?;
        if field == PccField::Fname && name.trim() == "filename" && dialect == PccDialect::V2_15 {
            return Err(PccError::Unsupported {
                what: "the PCC rule field `filename`".into(),
                dialect,
            });
        }
        let body = rest[1..].trim();
        let inner = body
            .strip_prefix('{')
            .and_then(|b| b.strip_suffix('}'))
            .ok_or_else(|| bad("values must be in { }"))?;
        let term = Self {
            field,
            op,
            values: inner
                .split(' ')
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect(),
        };
        term.validate(dialect)?;
        Ok(term)
    }
}

impl fmt::Display for PccTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{{{}}}",
            self.field.as_str(),
            self.op.as_str(),
            self.values.join(" ")
        )
    }
}

/// The longest rule taken: far more than any real one, and well under what one `lctl`
/// argument and the kernel's copy of it can hold.
pub const MAX_RULE_LEN: usize = 4096;

impl PccRule {
    /// Parses and checks a rule for `dialect`.
    pub fn parse(text: &str, dialect: PccDialect) -> Result<Self, PccError> {
        let bad = |why: String| PccError::Rule {
            rule: text.to_string(),
            why,
        };
        if text.len() > MAX_RULE_LEN {
            return Err(bad(format!("longer than {MAX_RULE_LEN} bytes")));
        }
        if text.trim().is_empty() {
            return Err(bad("empty".into()));
        }
        let mut groups = Vec::new();
        for group in split_top(text, ',') {
            let mut terms = Vec::new();
            for term in split_top(group, '&') {
                let term = term.trim();
                if term.is_empty() {
                    return Err(bad("an empty term (a stray `,` or `&`)".into()));
                }
                terms.push(PccTerm::parse(term, dialect)?);
            }
            groups.push(terms);
        }
        Ok(Self { groups })
    }

    /// Checks every term against `dialect`.
    pub fn validate(&self, dialect: PccDialect) -> Result<(), PccError> {
        if self.groups.is_empty() || self.groups.iter().any(Vec::is_empty) {
            return Err(PccError::Rule {
                rule: self.to_string(),
                why: "an empty group".into(),
            });
        }
        self.groups
            .iter()
            .flatten()
            .try_for_each(|t| t.validate(dialect))
    }

    /// The rule restricted to project `project`: `projid={N}` ANDed into every OR-group, so
    /// a volume's cache never takes files of another project.
    pub fn scoped_to_project(&self, project: u32) -> Self {
        let scope = PccTerm {
            field: PccField::ProjId,
            op: PccOp::Eq,
            values: vec![project.to_string()],
        };
        Self {
            groups: self
                .groups
                .iter()
                .map(|g| {
                    std::iter::once(scope.clone())
                        .chain(g.iter().cloned())
                        .collect()
                })
                .collect(),
        }
    }

    /// Just `projid={N}`: every file of the project.
    pub fn project(project: u32) -> Self {
        Self {
            groups: vec![vec![PccTerm {
                field: PccField::ProjId,
                op: PccOp::Eq,
                values: vec![project.to_string()],
            }]],
        }
    }
}

/// Splits on `delim` outside `{ }` (Lustre splits blindly; values never hold the
/// delimiters, so this only keeps an error message whole).
fn split_top(text: &str, delim: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            c if c == delim && depth == 0 => {
                out.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

impl fmt::Display for PccRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.groups.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            for (j, term) in group.iter().enumerate() {
                if j > 0 {
                    f.write_str("&")?;
                }
                write!(f, "{term}")?;
            }
        }
        Ok(())
    }
}

/// Read-only (PCC-RO, 2.16+: many clients cache the same file) or read-write (PCC-RW:
/// HSM based, one client owns the file while cached) caching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PccMode {
    /// PCC-RO.
    #[default]
    ReadOnly,
    /// PCC-RW.
    ReadWrite,
}

impl PccMode {
    /// `readonly` or `readwrite`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "readonly",
            Self::ReadWrite => "readwrite",
        }
    }

    /// `readonly` or `readwrite`; `None` otherwise.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "readonly" => Some(Self::ReadOnly),
            "readwrite" => Some(Self::ReadWrite),
            _ => None,
        }
    }

    /// The id key and the mode key of the `--param` string: `rwid`/`rwpcc` (2.15),
    /// `rwid`/`pccrw` or `roid`/`pccro` (2.16+). PCC-RO on 2.15 is refused.
    pub fn param_keys(self, dialect: PccDialect) -> Result<(&'static str, &'static str), PccError> {
        match (self, dialect) {
            (Self::ReadWrite, PccDialect::V2_15) => Ok(("rwid", "rwpcc")),
            (Self::ReadWrite, PccDialect::V2_16) => Ok(("rwid", "pccrw")),
            (Self::ReadOnly, PccDialect::V2_16) => Ok(("roid", "pccro")),
            (Self::ReadOnly, PccDialect::V2_15) => Err(PccError::Unsupported {
                what: "read-only PCC (PCC-RO)".into(),
                dialect,
            }),
        }
    }

    /// The `lfs pcc attach` options after `-i ID`: `-r` or `-w` (2.16+); nothing for
    /// PCC-RW on 2.15 (its only mode).
    pub fn attach_flag(self, dialect: PccDialect) -> Result<Option<&'static str>, PccError> {
        self.param_keys(dialect)?;
        Ok(match (self, dialect) {
            (Self::ReadWrite, PccDialect::V2_15) => None,
            (Self::ReadWrite, PccDialect::V2_16) => Some("-w"),
            (Self::ReadOnly, _) => Some("-r"),
        })
    }
}

/// A PCC id (`rwid`/`roid`, `lfs pcc attach -i`): for PCC-RW the HSM archive id of the
/// copytool serving the cache.
pub fn check_pcc_id(id: u64) -> Result<u32, PccError> {
    u32::try_from(id)
        .ok()
        .filter(|n| *n != 0 && *n != u32::MAX)
        .ok_or(PccError::Id(id))
}

/// What a volume's cache is registered with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PccAddParam {
    /// The volume's auto-cache rule, already scoped to its project.
    pub rule: PccRule,
    /// Read-only or read-write.
    pub mode: PccMode,
    /// `roid` / `rwid`.
    pub id: u32,
}

impl PccAddParam {
    /// The parameter of a volume: `rule` (or every file) restricted to `project`, checked
    /// against `dialect`.
    pub fn for_volume(
        rule: Option<&PccRule>,
        project: u32,
        mode: PccMode,
        id: u64,
        dialect: PccDialect,
    ) -> Result<Self, PccError> {
        let rule = match rule {
            Some(rule) => rule.scoped_to_project(project),
            None => PccRule::project(project),
        };
        let param = Self {
            rule,
            mode,
            id: check_pcc_id(id)?,
        };
        param.render(dialect)?;
        Ok(param)
    }

    /// The `--param` string: `"<rule> <idkey>=<id> <modekey>=1"`.
    pub fn render(&self, dialect: PccDialect) -> Result<String, PccError> {
        self.rule.validate(dialect)?;
        let (id_key, mode_key) = self.mode.param_keys(dialect)?;
        Ok(format!("{} {id_key}={} {mode_key}=1", self.rule, self.id))
    }
}

/// `type:` of `lfs pcc state` (`pcc_type2string()`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PccType {
    /// Not cached.
    None,
    /// Cached read-write.
    ReadWrite,
    /// Cached read-only.
    ReadOnly,
    /// `fault` (a test hook).
    Fault,
    /// Something newer.
    Other(String),
}

/// One line of `lfs pcc state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PccFileState {
    /// The Lustre file, as given to `lfs`.
    pub file: String,
    /// How it is cached.
    pub kind: PccType,
    /// The cache copy (`PCC file` ≤2.15, `PCC_file` 2.16+), when cached or open.
    pub pcc_file: Option<String>,
    /// The cache copy was unlinked (2.17+ ` (unlinked)`).
    pub unlinked: bool,
    /// Open handles (`user number` ≤2.15, `open_count` 2.16+).
    pub open_count: Option<u32>,
    /// The flag bits (hex); `attaching` alone sets [`PccFileState::attaching`].
    pub flags: Option<u32>,
    /// An attach is in progress.
    pub attaching: bool,
}

const STATE: &str = "lfs pcc state";
/// The flag bit of an attach in progress (`PCC_STATE_FL_ATTACHING`).
pub const PCC_STATE_FL_ATTACHING: u32 = 0x2;

/// Parses `lfs pcc state` output, one [`PccFileState`] per non-empty line, in both the 2.15
/// and the 2.16+ field names. The file name may hold `, `: the line is split at the last
/// `, type: ` (what follows is Lustre's and the cache's text, not a tenant's).
pub fn parse_lfs_pcc_state(text: &str) -> Result<Vec<PccFileState>, ParseError> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| ParseError::new(STATE, index + 1, format!("{why}: {line:?}"));
        let rest = line
            .strip_prefix("file: ")
            .ok_or_else(|| bad("no `file: `"))?;
        let at = rest.rfind(", type: ").ok_or_else(|| bad("no `, type: `"))?;
        let file = rest[..at].to_string();
        let mut tail = &rest[at + ", type: ".len()..];
        let mut state = PccFileState {
            file,
            kind: PccType::None,
            pcc_file: None,
            unlinked: false,
            open_count: None,
            flags: None,
            attaching: false,
        };
        // From the end: `, flags: X`, then the open count, then the cache file.
        if let Some(i) = tail.rfind(", flags: ") {
            let flags = &tail[i + ", flags: ".len()..];
            if flags == "attaching" {
                state.attaching = true;
            } else {
                let bits = u32::from_str_radix(flags, 16).map_err(|_| bad("flags not hex"))?;
                state.flags = Some(bits);
                state.attaching = bits & PCC_STATE_FL_ATTACHING != 0;
            }
            tail = &tail[..i];
        }
        for key in [", open_count: ", ", user number: "] {
            if let Some(i) = tail.rfind(key) {
                let n = tail[i + key.len()..]
                    .parse()
                    .map_err(|_| bad("open count not a number"))?;
                state.open_count = Some(n);
                tail = &tail[..i];
                break;
            }
        }
        for key in [", PCC_file: ", ", PCC file: "] {
            if let Some(i) = tail.find(key) {
                let mut path = &tail[i + key.len()..];
                if let Some(p) = path.strip_suffix(" (unlinked)") {
                    path = p;
                    state.unlinked = true;
                }
                state.pcc_file = Some(path.to_string());
                tail = &tail[..i];
                break;
            }
        }
        if tail.is_empty() || tail.contains([',', ' ']) {
            return Err(bad("unexpected text after `type: `"));
        }
        state.kind = match tail {
            "none" => PccType::None,
            "readwrite" => PccType::ReadWrite,
            "readonly" => PccType::ReadOnly,
            "fault" => PccType::Fault,
            other => PccType::Other(other.to_string()),
        };
        out.push(state);
    }
    Ok(out)
}

/// One cache backend of `lctl pcc list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PccDataset {
    /// The cache directory (`PCCPATH`).
    pub path: String,
    /// `posix_v1`, `posix_v2` or `unknown` (2.16+).
    pub hsmtool: Option<String>,
    /// PCC-RW archive id.
    pub rwid: u32,
    /// PCC-RO id (2.16+).
    pub roid: Option<u32>,
    /// `PCC_DATASET_*` bits.
    pub flags: u32,
    /// The auto-cache rule as the kernel keeps it.
    pub autocache: String,
}

/// `PCC_DATASET_PCCRW` (2.15 `RWPCC`).
pub const PCC_DATASET_PCCRW: u32 = 0x10;
/// `PCC_DATASET_PCCRO` (2.15 `ROPCC`).
pub const PCC_DATASET_PCCRO: u32 = 0x20;

const LIST: &str = "lctl pcc list";

/// Parses `lctl pcc list MNT`: the 2.15 blocks (`/mnt/pcc:` then indented `key: value`) or
/// the 2.16+ YAML (`pcc:` then `  -` items). Empty output is no backend.
pub fn parse_lctl_pcc_list(text: &str) -> Result<Vec<PccDataset>, ParseError> {
    let mut out: Vec<PccDataset> = Vec::new();
    let mut current: Option<PccDataset> = None;
    let blank = |path: String| PccDataset {
        path,
        hsmtool: None,
        rwid: 0,
        roid: None,
        flags: 0,
        autocache: String::new(),
    };
    for (index, line) in text.lines().enumerate() {
        let bad = |why: &str| ParseError::new(LIST, index + 1, format!("{why}: {line:?}"));
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed == "pcc:" {
            continue;
        }
        // `lctl get_param` style prefix, when the tool prints one.
        if trimmed.starts_with("llite.") && trimmed.ends_with(".pcc=") {
            continue;
        }
        if trimmed == "-" {
            out.extend(current.take());
            current = Some(blank(String::new()));
            continue;
        }
        if !line.starts_with(' ') {
            // 2.15: a new backend, `PCCPATH:`.
            let path = trimmed
                .strip_suffix(':')
                .filter(|p| p.starts_with('/'))
                .ok_or_else(|| bad("not `PCCPATH:`"))?;
            out.extend(current.take());
            current = Some(blank(path.to_string()));
            continue;
        }
        let dataset = current
            .as_mut()
            .ok_or_else(|| bad("a field before any backend"))?;
        let (key, value) = trimmed
            .split_once(':')
            .ok_or_else(|| bad("not `key: value`"))?;
        let value = value.trim();
        let number = |v: &str| v.parse::<u32>().map_err(|_| bad("not a number"));
        match key {
            "pccpath" => dataset.path = value.to_string(),
            "hsmtool" => dataset.hsmtool = Some(value.to_string()),
            "rwid" => dataset.rwid = number(value)?,
            "roid" => dataset.roid = Some(number(value)?),
            "flags" => {
                dataset.flags = u32::from_str_radix(value, 16).map_err(|_| bad("flags not hex"))?
            }
            "autocache" => dataset.autocache = value.to_string(),
            // A newer field: kept out, not refused.
            _ => {}
        }
    }
    out.extend(current);
    if let Some(i) = out.iter().position(|d| d.path.is_empty()) {
        return Err(ParseError::new(
            LIST,
            0,
            format!("backend {} has no pccpath", i + 1),
        ));
    }
    Ok(out)
}

/// The PCC counters of one client mount, from `lctl get_param llite.*.stats` (counters
/// with no samples are not printed, and read 0).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PccCounters {
    /// The llite instance (`testfs-ffff8e4b9a3c2800`).
    pub instance: String,
    /// `pcc_attach` samples.
    pub attach: u64,
    /// `pcc_detach` samples.
    pub detach: u64,
    /// `pcc_auto_attach` samples (2.16+).
    pub auto_attach: u64,
    /// `pcc_hit_bytes` samples: reads served from the cache (2.17+).
    pub hits: u64,
    /// `pcc_hit_bytes` sum: bytes read from the cache (2.17+).
    pub hit_bytes: u64,
    /// `pcc_attach_bytes` sum (2.17+).
    pub attach_bytes: u64,
}

const STATS: &str = "lctl get_param llite.*.stats";

/// Parses the `pcc_*` counters of `lctl get_param llite.*.stats` (`lctl-stats-lnet.md`):
/// one [`PccCounters`] per `llite.<instance>.stats=` block; other counters are skipped.
pub fn parse_llite_pcc_stats(text: &str) -> Result<Vec<PccCounters>, ParseError> {
    let mut out: Vec<PccCounters> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let bad = |why: &str| ParseError::new(STATS, index + 1, format!("{why}: {line:?}"));
        let trimmed = line.trim();
        if let Some(head) = trimmed.strip_prefix("llite.") {
            let instance = head
                .strip_suffix(".stats=")
                .filter(|i| !i.is_empty() && !i.contains(['.', '=']))
                .ok_or_else(|| bad("not llite.<instance>.stats="))?;
            out.push(PccCounters {
                instance: instance.to_string(),
                ..PccCounters::default()
            });
            continue;
        }
        let mut words = trimmed.split_whitespace();
        let Some(name) = words.next().filter(|n| n.starts_with("pcc_")) else {
            continue;
        };
        let numbers: Vec<&str> = words.collect();
        let samples: u64 = numbers
            .first()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad("no sample count"))?;
        // `N samples [unit] min max sum [sumsq]`: the sum is the sixth word.
        let sum = numbers
            .get(5)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if out.is_empty() {
            // `-n` output: one mount without its header.
            out.push(PccCounters::default());
        }
        let Some(counters) = out.last_mut() else {
            continue;
        };
        match name {
            "pcc_attach" => counters.attach = samples,
            "pcc_detach" => counters.detach = samples,
            "pcc_auto_attach" => counters.auto_attach = samples,
            "pcc_hit_bytes" => {
                counters.hits = samples;
                counters.hit_bytes = sum;
            }
            "pcc_attach_bytes" => counters.attach_bytes = sum,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const V15: PccDialect = PccDialect::V2_15;
    const V16: PccDialect = PccDialect::V2_16;

    #[test]
    fn real_rules_parse_and_render_back() {
        // sanity-pcc.sh and the manual (pcc.md (a)).
        for (text, dialect) in [
            ("projid={100}", V15),
            ("fname={*.h5 suffix.* Mid*dle}", V15),
            ("projid={100 200}&fname={*.h5},uid={500}&gid={500}", V15),
            ("projid={1000},uid={500}", V15),
            ("fname={*.doc}&size<{1M}", V16),
            ("projid<{120}&projid>{110}", V16),
            ("mtime>{1m}", V16),
            ("size<{100M}", V16),
            ("projid={0}", V16),
        ] {
            let rule = PccRule::parse(text, dialect).expect(text);
            assert_eq!(rule.to_string(), text);
        }
        let alias = PccRule::parse("filename={*.h5}", V16).unwrap();
        assert_eq!(alias.to_string(), "fname={*.h5}");
    }

    #[test]
    fn bad_rules_are_refused_naming_the_term() {
        for (text, needle) in [
            ("", "empty"),
            ("projid={500,1000}", "holds a space"),
            ("colour={red}", "unknown field"),
            ("uid={x}", "`x` is not a uid number"),
            ("uid={}", "no values"),
            ("fname>{a}", "only `=`"),
            ("mtime={1h}", "only `<` or `>`"),
            ("mtime>{1x}", "not an age"),
            ("size<{1M 2M}", "exactly one value"),
            ("size={lots}", "not a size"),
            ("uid=500", "values must be in { }"),
            ("uid={1},", "empty term"),
            ("uid={1}&&gid={2}", "empty term"),
            ("fname={a/b}", "not a file name pattern"),
            ("uid<{0}", "not a uid number"),
        ] {
            let err = PccRule::parse(text, V16).expect_err(text).to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        for text in ["size<{1M}", "mtime>{1h}", "projid<{5}", "filename={*.h5}"] {
            let err = PccRule::parse(text, V15).expect_err(text);
            assert!(matches!(err, PccError::Unsupported { .. }), "{text}: {err}");
            assert!(err.to_string().contains("2.16"), "{err}");
        }
    }

    #[test]
    fn the_project_is_anded_into_every_group() {
        let rule = PccRule::parse("fname={*.h5},uid={500}&gid={500}", V15).unwrap();
        assert_eq!(
            rule.scoped_to_project(1001).to_string(),
            "projid={1001}&fname={*.h5},projid={1001}&uid={500}&gid={500}"
        );
        let p = PccAddParam::for_volume(Some(&rule), 1001, PccMode::ReadOnly, 5, V16).unwrap();
        assert_eq!(
            p.render(V16).unwrap(),
            "projid={1001}&fname={*.h5},projid={1001}&uid={500}&gid={500} roid=5 pccro=1"
        );
        let p = PccAddParam::for_volume(None, 7, PccMode::ReadWrite, 2, V16).unwrap();
        assert_eq!(p.render(V16).unwrap(), "projid={7} rwid=2 pccrw=1");
        assert_eq!(p.render(V15).unwrap(), "projid={7} rwid=2 rwpcc=1");
        let err = PccAddParam::for_volume(None, 7, PccMode::ReadOnly, 2, V15).unwrap_err();
        assert!(err.to_string().contains("read-only PCC"), "{err}");
        for id in [0, u64::from(u32::MAX), 1 << 40] {
            assert_eq!(
                PccAddParam::for_volume(None, 7, PccMode::ReadWrite, id, V16).unwrap_err(),
                PccError::Id(id)
            );
        }
        assert_eq!(PccMode::ReadOnly.attach_flag(V16).unwrap(), Some("-r"));
        assert_eq!(PccMode::ReadWrite.attach_flag(V16).unwrap(), Some("-w"));
        assert_eq!(PccMode::ReadWrite.attach_flag(V15).unwrap(), None);
        assert!(PccMode::ReadOnly.attach_flag(V15).is_err());
    }

    #[test]
    fn dialects_follow_the_version() {
        let v = |t: &str| LustreVersion::parse_token(t).unwrap();
        assert_eq!(PccDialect::for_version(&v("2.15.4")), Some(V15));
        assert_eq!(PccDialect::for_version(&v("2.13.0")), Some(V15));
        assert_eq!(PccDialect::for_version(&v("2.16.0_ddn56b")), Some(V16));
        assert_eq!(PccDialect::for_version(&v("2.17.51")), Some(V16));
        assert_eq!(PccDialect::for_version(&v("2.12.9")), None);
    }

    #[test]
    fn pcc_state_in_both_formats() {
        // pcc.md (c), the manual's 2.15 samples.
        let text = "file: /mnt/lustre/test, type: readwrite, PCC file: /mnt/pcc/0004/0000/0bd1/0000/0002/0000/0x200000bd1:0x4:0x0, user number: 1, flags: 4\nfile: /mnt/lustre/test, type: none\n";
        let states = parse_lfs_pcc_state(text).unwrap();
        assert_eq!(states.len(), 2);
        assert_eq!(states[0].kind, PccType::ReadWrite);
        assert_eq!(
            states[0].pcc_file.as_deref(),
            Some("/mnt/pcc/0004/0000/0bd1/0000/0002/0000/0x200000bd1:0x4:0x0")
        );
        assert_eq!(states[0].open_count, Some(1));
        assert_eq!(states[0].flags, Some(4));
        assert_eq!(states[1].kind, PccType::None);
        assert_eq!(states[1].pcc_file, None);
        // 2.16+ names, a file name with `, type: ` in it, 2.17 unlinked, attaching.
        let text = "file: /mnt/lustre/a, type: b, type: readonly, PCC_file: /0004/0000/0bd1/0000/0002/0000/0x200000bd1:0x4:0x0 (unlinked), open_count: 0, flags: 1\nfile: /mnt/lustre/c, type: none, flags: attaching\n";
        let states = parse_lfs_pcc_state(text).unwrap();
        assert_eq!(states[0].file, "/mnt/lustre/a, type: b");
        assert_eq!(states[0].kind, PccType::ReadOnly);
        assert!(states[0].unlinked);
        assert_eq!(states[0].open_count, Some(0));
        assert!(states[1].attaching);
        for bad in ["type: none", "file: /a", "file: /a, type: none, flags: zz"] {
            assert!(parse_lfs_pcc_state(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pcc_list_in_both_formats() {
        let v15 = "/mnt/pcc:\n  rwid: 2\n  flags: 3e\n  autocache: projid={500}\n";
        let list = parse_lctl_pcc_list(v15).unwrap();
        assert_eq!(
            list,
            [PccDataset {
                path: "/mnt/pcc".into(),
                hsmtool: None,
                rwid: 2,
                roid: None,
                flags: 0x3e,
                autocache: "projid={500}".into(),
            }]
        );
        let v16 = "pcc:\n  -\n    pccpath: /mnt/pcc\n    hsmtool: posix_v2\n    rwid: 2\n    roid: 0\n    flags: 9e\n    autocache: projid={100}\n  -\n    pccpath: /mnt/pcc2\n    hsmtool: posix_v2\n    rwid: 0\n    roid: 5\n    flags: ae\n    autocache: projid={7}&fname={*.h5}\n";
        let list = parse_lctl_pcc_list(v16).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].path, "/mnt/pcc");
        assert_eq!(list[0].hsmtool.as_deref(), Some("posix_v2"));
        assert_eq!(list[1].roid, Some(5));
        assert_eq!(list[1].flags & PCC_DATASET_PCCRO, PCC_DATASET_PCCRO);
        assert_eq!(list[1].autocache, "projid={7}&fname={*.h5}");
        assert!(parse_lctl_pcc_list("").unwrap().is_empty());
        for bad in [
            "  rwid: 2\n",
            "/mnt/pcc:\n  rwid: x\n",
            "nonsense\n",
            "pcc:\n  -\n    rwid: 1\n",
        ] {
            assert!(parse_lctl_pcc_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pcc_counters_from_llite_stats() {
        let text = "llite.testfs-ffff000189257000.stats=\nsnapshot_time             1790277040.611962111 secs.nsecs\nread_bytes                57406355 samples [bytes] 1 4194304 1496254921055 47236230193563213\npcc_attach                3 samples [reqs]\npcc_detach                2 samples [reqs]\npcc_auto_attach           4 samples [reqs]\npcc_hit_bytes             12 samples [bytes] 0 1048576 5000000 900000000\n";
        let c = parse_llite_pcc_stats(text).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].instance, "testfs-ffff000189257000");
        assert_eq!((c[0].attach, c[0].detach, c[0].auto_attach), (3, 2, 4));
        assert_eq!((c[0].hits, c[0].hit_bytes), (12, 5_000_000));
        assert!(parse_llite_pcc_stats("pcc_attach  x samples [reqs]\n").is_err());
    }

    fn term_strategy() -> impl Strategy<Value = PccTerm> {
        let ids = proptest::collection::vec(1u32..u32::MAX, 1..4)
            .prop_map(|v| v.into_iter().map(|n| n.to_string()).collect::<Vec<_>>());
        let names = proptest::collection::vec("[a-zA-Z0-9_.*?-]{1,12}", 1..4);
        let id_field = prop_oneof![
            Just(PccField::Uid),
            Just(PccField::Gid),
            Just(PccField::ProjId)
        ];
        let lt_gt = prop_oneof![Just(PccOp::Lt), Just(PccOp::Gt)];
        prop_oneof![
            (id_field.clone(), ids).prop_map(|(field, values)| PccTerm {
                field,
                op: PccOp::Eq,
                values
            }),
            (id_field, lt_gt.clone(), 1u32..u32::MAX).prop_map(|(field, op, n)| PccTerm {
                field,
                op,
                values: vec![n.to_string()]
            }),
            names.prop_map(|values| PccTerm {
                field: PccField::Fname,
                op: PccOp::Eq,
                values
            }),
            (lt_gt.clone(), 0u64..1_000_000, "[KMGT]?").prop_map(|(op, n, u)| PccTerm {
                field: PccField::Size,
                op,
                values: vec![format!("{n}{u}")]
            }),
            (lt_gt, 0u32..100_000, "[smhdwy]?").prop_map(|(op, n, u)| PccTerm {
                field: PccField::Mtime,
                op,
                values: vec![format!("{n}{u}")]
            }),
        ]
    }

    proptest! {
        #[test]
        fn rules_round_trip(groups in proptest::collection::vec(
            proptest::collection::vec(term_strategy(), 1..4), 1..4)) {
            let rule = PccRule { groups };
            prop_assert!(rule.validate(V16).is_ok(), "{}", rule);
            let text = rule.to_string();
            prop_assert_eq!(PccRule::parse(&text, V16).unwrap(), rule.clone());
            let scoped = rule.scoped_to_project(42);
            prop_assert_eq!(PccRule::parse(&scoped.to_string(), V16).unwrap(), scoped);
        }

        #[test]
        fn the_param_is_the_scoped_rule_then_the_keys(
            groups in proptest::collection::vec(proptest::collection::vec(term_strategy(), 1..3), 1..3),
            project in 1u32..u32::MAX,
            id in 1u64..1000,
            read_only: bool,
        ) {
            let rule = PccRule { groups };
            let mode = if read_only { PccMode::ReadOnly } else { PccMode::ReadWrite };
            let param = PccAddParam::for_volume(Some(&rule), project, mode, id, V16).unwrap();
            let text = param.render(V16).unwrap();
            // The kernel reads the rule up to its last `}`, then space-separated keys.
            let end = text.rfind('}').unwrap() + 1;
            let back = PccRule::parse(&text[..end], V16).unwrap();
            let scope = format!("projid={{{project}}}");
            prop_assert!(back.groups.iter().all(|g| g[0].to_string() == scope));
            prop_assert_eq!(back, rule.scoped_to_project(project));
            let keys: Vec<&str> = text[end..].split(' ').filter(|k| !k.is_empty()).collect();
            let want = if read_only {
                [format!("roid={id}"), "pccro=1".to_string()]
            } else {
                [format!("rwid={id}"), "pccrw=1".to_string()]
            };
            prop_assert_eq!(keys, want.iter().map(String::as_str).collect::<Vec<_>>());
        }

        #[test]
        fn rule_parser_never_panics(text in ".{0,120}") {
            let _ = PccRule::parse(&text, V15);
            let _ = PccRule::parse(&text, V16);
        }

        #[test]
        fn rule_parser_never_panics_on_rule_like_text(text in "[a-z{}=<>,& 0-9*.]{0,80}") {
            if let Ok(rule) = PccRule::parse(&text, V16) {
                prop_assert_eq!(PccRule::parse(&rule.to_string(), V16).unwrap(), rule);
            }
        }

        #[test]
        fn output_parsers_never_panic(text in "(file: |, type: |, PCC_file: |, flags: |, open_count: |pcc:\n|  -\n|    rwid: |llite.x.stats=\n|pcc_attach |.){0,40}") {
            let _ = parse_lfs_pcc_state(&text);
            let _ = parse_lctl_pcc_list(&text);
            let _ = parse_llite_pcc_stats(&text);
        }

        #[test]
        fn output_parsers_never_panic_on_anything(text in ".{0,200}") {
            let _ = parse_lfs_pcc_state(&text);
            let _ = parse_lctl_pcc_list(&text);
            let _ = parse_llite_pcc_stats(&text);
        }
    }
}
