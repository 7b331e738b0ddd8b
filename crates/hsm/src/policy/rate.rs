//! A rate limiter for policy operations: each operation takes the next free slot, slots
//! `1/rate` seconds apart, so no window of one second ever holds more than `rate` (rounded
//! up) operations, however many workers ask at once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub struct RateLimiter {
    gap: Option<Duration>,
    next: Mutex<Option<Instant>>,
    granted: AtomicU64,
}

impl RateLimiter {
    /// `None` (or a non-positive rate): no limit.
    pub fn new(per_sec: Option<f64>) -> Self {
        let gap = per_sec
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r));
        Self {
            gap,
            next: Mutex::new(None),
            granted: AtomicU64::new(0),
        }
    }

    /// Waits for this operation's slot.
    pub async fn acquire(&self) {
        if let Some(gap) = self.gap {
            let slot = {
                let now = Instant::now();
                match self.next.lock() {
                    Ok(mut next) => {
                        let slot = next.map_or(now, |n| n.max(now));
                        *next = Some(slot + gap);
                        slot
                    }
                    Err(_) => now,
                }
            };
            tokio::time::sleep_until(slot).await;
        }
        self.granted.fetch_add(1, Ordering::Relaxed);
    }

    /// Operations let through so far.
    pub fn granted(&self) -> u64 {
        self.granted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Count-based: with time paused, every acquisition's virtual instant is recorded, and
    /// no one-second window may hold more than `rate` of them.
    #[tokio::test(start_paused = true)]
    async fn no_window_holds_more_than_the_rate() {
        let rate = 5.0;
        let lim = Arc::new(RateLimiter::new(Some(rate)));
        let stamps = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (lim, stamps) = (lim.clone(), stamps.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..6 {
                    lim.acquire().await;
                    stamps.lock().expect("lock").push(Instant::now());
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let mut s = stamps.lock().expect("lock").clone();
        s.sort();
        assert_eq!(s.len(), 24);
        assert_eq!(lim.granted(), 24);
        for (i, a) in s.iter().enumerate() {
            let in_window = s[i..]
                .iter()
                .take_while(|b| b.duration_since(*a) < Duration::from_secs(1))
                .count();
            assert!(in_window <= rate as usize, "{in_window} ops in one second");
        }
    }

    #[tokio::test]
    async fn no_limit_lets_everything_through() {
        let lim = RateLimiter::new(None);
        for _ in 0..1000 {
            lim.acquire().await;
        }
        assert_eq!(lim.granted(), 1000);
    }
}
