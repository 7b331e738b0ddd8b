//! Lustre project IDs and inclusive project-ID ranges (used by the allocator).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, model_err};

/// A usable Lustre project ID: 1..=4294967294. 0 means "no project" and
/// 4294967295 (`(u32)-1`) is rejected by `lfs project`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct ProjectId(u32);

impl ProjectId {
    /// Smallest usable project ID.
    pub const MIN: ProjectId = ProjectId(1);
    /// Largest usable project ID.
    pub const MAX: ProjectId = ProjectId(u32::MAX - 1);

    /// Validates `id` (0 and 4294967295 are invalid).
    pub fn new(id: u32) -> Result<ProjectId, ModelError> {
        match id {
            0 => Err(model_err!(
                InvalidProjectId,
                id,
                "0 is the default \"no project\" ID"
            )),
            u32::MAX => Err(model_err!(
                InvalidProjectId,
                id,
                "4294967295 is reserved (-1)"
            )),
            _ => Ok(ProjectId(id)),
        }
    }

    /// The numeric ID.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for ProjectId {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(model_err!(InvalidProjectId, s, "not a decimal number"));
        }
        let v: u32 = s
            .parse()
            .map_err(|_| model_err!(InvalidProjectId, s, "larger than 4294967294"))?;
        ProjectId::new(v)
    }
}

impl TryFrom<u32> for ProjectId {
    type Error = ModelError;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        ProjectId::new(v)
    }
}

impl From<ProjectId> for u32 {
    fn from(p: ProjectId) -> u32 {
        p.0
    }
}

/// An inclusive, non-empty range of project IDs (`start <= end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawProjectRange")]
pub struct ProjectRange {
    /// First ID.
    pub start: ProjectId,
    /// Last ID (inclusive).
    pub end: ProjectId,
}

#[derive(Deserialize)]
struct RawProjectRange {
    start: ProjectId,
    end: ProjectId,
}

impl TryFrom<RawProjectRange> for ProjectRange {
    type Error = ModelError;
    fn try_from(r: RawProjectRange) -> Result<Self, Self::Error> {
        ProjectRange::new(r.start, r.end)
    }
}

impl ProjectRange {
    /// Builds `start..=end`; a reversed range is an error.
    pub fn new(start: ProjectId, end: ProjectId) -> Result<ProjectRange, ModelError> {
        if start > end {
            return Err(model_err!(
                InvalidProjectId,
                format!("{start}-{end}"),
                "range start is after its end"
            ));
        }
        Ok(ProjectRange { start, end })
    }

    /// Whether `id` is inside the range.
    pub fn contains(&self, id: ProjectId) -> bool {
        self.start <= id && id <= self.end
    }

    /// Every ID of the range, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = ProjectId> + use<> {
        (self.start.0..=self.end.0).map(ProjectId)
    }

    /// Number of IDs in the range (at least 1).
    pub fn len(&self) -> u64 {
        u64::from(self.end.0) - u64::from(self.start.0) + 1
    }

    /// Always false: a range holds at least one ID.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for ProjectRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl FromStr for ProjectRange {
    type Err = ModelError;
    /// Parses `START-END` (or a single `ID`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('-') {
            Some((a, b)) => ProjectRange::new(a.trim().parse()?, b.trim().parse()?),
            None => {
                let id: ProjectId = s.trim().parse()?;
                ProjectRange::new(id, id)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bounds() {
        assert!(ProjectId::new(0).is_err());
        assert!(ProjectId::new(u32::MAX).is_err());
        assert_eq!(ProjectId::new(110255).unwrap().get(), 110255);
        assert!("4294967295".parse::<ProjectId>().is_err());
        assert!("4294967296".parse::<ProjectId>().is_err());
        assert!("-1".parse::<ProjectId>().is_err());
        assert!("".parse::<ProjectId>().is_err());
        assert_eq!("4294967294".parse::<ProjectId>().unwrap(), ProjectId::MAX);
    }

    #[test]
    fn ranges() {
        let r: ProjectRange = "1000-1002".parse().unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(
            r.iter().map(ProjectId::get).collect::<Vec<_>>(),
            [1000, 1001, 1002]
        );
        assert!(r.contains(ProjectId::new(1001).unwrap()));
        assert!(!r.contains(ProjectId::new(999).unwrap()));
        assert!("5-4".parse::<ProjectRange>().is_err());
        assert_eq!("7".parse::<ProjectRange>().unwrap().len(), 1);
        let full = ProjectRange::new(ProjectId::MIN, ProjectId::MAX).unwrap();
        assert_eq!(full.len(), 4294967294);
        assert!(serde_json::from_str::<ProjectRange>(r#"{"start":5,"end":4}"#).is_err());
        assert!(serde_json::from_str::<ProjectId>("0").is_err());
    }

    proptest! {
        #[test]
        fn never_panic(s in any::<String>()) {
            let _ = s.parse::<ProjectId>();
            let _ = s.parse::<ProjectRange>();
        }

        #[test]
        fn roundtrip(a in 1u32..u32::MAX, b in 1u32..u32::MAX) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let r = ProjectRange::new(ProjectId::new(lo).unwrap(), ProjectId::new(hi).unwrap()).unwrap();
            prop_assert_eq!(r.to_string().parse::<ProjectRange>().unwrap(), r);
            prop_assert_eq!(r.start.to_string().parse::<ProjectId>().unwrap(), r.start);
        }
    }
}
