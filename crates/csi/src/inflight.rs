//! Per-volume serialisation: one operation per key at a time. A second call while one is in
//! flight is refused with ABORTED at once (the spec's answer; the CO retries), rather than
//! queued: a queue would let a stuck mount pile up every retry behind it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::error::{CsiError, Result};

#[derive(Debug, Default, Clone)]
pub struct InFlight {
    keys: Arc<Mutex<HashSet<String>>>,
}

/// Holds a key until dropped.
#[derive(Debug)]
pub struct Guard {
    keys: Arc<Mutex<HashSet<String>>>,
    held: Vec<String>,
}

impl InFlight {
    /// Claims every key, or none: if any is taken, nothing is held and the call is ABORTED.
    pub fn claim<I, S>(&self, keys: I) -> Result<Guard>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let wanted: Vec<String> = keys.into_iter().map(Into::into).collect();
        let mut set = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(busy) = wanted.iter().find(|k| set.contains(*k)) {
            return Err(CsiError::InFlight(busy.clone()));
        }
        let mut held = Vec::with_capacity(wanted.len());
        for key in wanted {
            if set.insert(key.clone()) {
                held.push(key);
            }
        }
        Ok(Guard {
            keys: Arc::clone(&self.keys),
            held,
        })
    }

    pub fn len(&self) -> usize {
        self.keys.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut set = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        for key in &self.held {
            set.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_claim_is_aborted_until_the_first_ends() {
        let inflight = InFlight::default();
        let first = inflight.claim(["volume:a"]).unwrap();
        let err = inflight.claim(["volume:a"]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Aborted);
        // All or nothing: b stays free when a is taken.
        assert!(inflight.claim(["volume:b", "volume:a"]).is_err());
        let b = inflight.claim(["volume:b"]).unwrap();
        drop(first);
        drop(b);
        assert!(inflight.is_empty());
        let _again = inflight.claim(["volume:a", "volume:a"]).unwrap();
        assert_eq!(inflight.len(), 1);
    }
}
