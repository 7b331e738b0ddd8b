//! Data compression a StorageClass may ask for (`compression`, `compressionLevel`): the
//! algorithm and its level, validated here, applied by a backend that has it.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionAlgorithm {
    /// LZ4: fast, light.
    Lz4,
    /// gzip (zlib's deflate).
    Gzip,
    /// Zstandard.
    Zstd,
}

impl CompressionAlgorithm {
    /// The parameter's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CompressionAlgorithm::Lz4 => "lz4",
            CompressionAlgorithm::Gzip => "gzip",
            CompressionAlgorithm::Zstd => "zstd",
        }
    }

    /// The levels the algorithm takes.
    pub fn levels(self) -> std::ops::RangeInclusive<u8> {
        match self {
            CompressionAlgorithm::Lz4 => 1..=12,
            CompressionAlgorithm::Gzip => 1..=9,
            CompressionAlgorithm::Zstd => 1..=22,
        }
    }
}

/// A refused `compression` / `compressionLevel`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CompressionError {
    /// Not one of the algorithms.
    #[error("compression {0:?}: must be lz4, gzip or zstd")]
    Algorithm(String),
    /// Not a level of the algorithm.
    #[error("compressionLevel {level:?}: {algorithm} takes levels {min} to {max}")]
    Level {
        /// The rejected level.
        level: String,
        /// The algorithm.
        algorithm: &'static str,
        /// Lowest level.
        min: u8,
        /// Highest level.
        max: u8,
    },
    /// A level without an algorithm.
    #[error("compressionLevel needs compression")]
    LevelAlone,
}

/// An algorithm and, optionally, its level (the algorithm's default when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compression {
    /// The algorithm.
    pub algorithm: CompressionAlgorithm,
    /// The level, within [`CompressionAlgorithm::levels`].
    pub level: Option<u8>,
}

impl Compression {
    /// From the StorageClass parameters; `None` when neither is given.
    pub fn from_parts(
        algorithm: Option<&str>,
        level: Option<&str>,
    ) -> Result<Option<Self>, CompressionError> {
        let Some(algorithm) = algorithm else {
            return match level {
                Some(_) => Err(CompressionError::LevelAlone),
                None => Ok(None),
            };
        };
        let algorithm = match algorithm {
            "lz4" => CompressionAlgorithm::Lz4,
            "gzip" => CompressionAlgorithm::Gzip,
            "zstd" => CompressionAlgorithm::Zstd,
            other => return Err(CompressionError::Algorithm(other.to_string())),
        };
        let level = match level {
            None => None,
            Some(text) => {
                let range = algorithm.levels();
                let bad = || CompressionError::Level {
                    level: text.to_string(),
                    algorithm: algorithm.as_str(),
                    min: *range.start(),
                    max: *range.end(),
                };
                let n: u8 = text.parse().map_err(|_| bad())?;
                if !range.contains(&n) {
                    return Err(bad());
                }
                Some(n)
            }
        };
        Ok(Some(Self { algorithm, level }))
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.algorithm.as_str())?;
        if let Some(level) = self.level {
            write!(f, " level {level}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn algorithms_and_levels_are_checked() {
        assert_eq!(Compression::from_parts(None, None), Ok(None));
        assert_eq!(
            Compression::from_parts(Some("zstd"), Some("19")),
            Ok(Some(Compression {
                algorithm: CompressionAlgorithm::Zstd,
                level: Some(19)
            }))
        );
        assert_eq!(
            Compression::from_parts(Some("lz4"), None)
                .unwrap()
                .unwrap()
                .level,
            None
        );
        for (a, l, want) in [
            (Some("lzo"), None, "must be lz4, gzip or zstd"),
            (Some("gzip"), Some("10"), "gzip takes levels 1 to 9"),
            (Some("zstd"), Some("0"), "zstd takes levels 1 to 22"),
            (Some("lz4"), Some("x"), "lz4 takes levels 1 to 12"),
            (None, Some("3"), "needs compression"),
        ] {
            let e = Compression::from_parts(a, l).unwrap_err().to_string();
            assert!(e.contains(want), "{a:?} {l:?}: {e}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(a in ".{0,10}", l in ".{0,5}") {
            let _ = Compression::from_parts(Some(&a), Some(&l));
        }
    }
}
