//! Kafka's Throttler for the log cleaner's I/O (`log.cleaner.io.max.bytes.per.second`): every cleaner thread
//! reports the bytes it read or wrote, and whoever finds the shared window over its budget sleeps while holding the
//! lock, so all cleaner threads together stay under the rate and producers keep the disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often the observed rate is compared with the budget.
const CHECK_INTERVAL: Duration = Duration::from_millis(50);

pub struct Throttler {
    /// Bytes per second as f64 bits; infinite (or absurdly large) means unthrottled.
    rate: AtomicU64,
    window: Mutex<Window>,
}

struct Window {
    start: Instant,
    bytes: f64,
}

impl Throttler {
    pub fn new(bytes_per_second: f64) -> Throttler {
        Throttler {
            rate: AtomicU64::new(bytes_per_second.to_bits()),
            window: Mutex::new(Window { start: Instant::now(), bytes: 0.0 }),
        }
    }

    /// Applies a new rate (the config is dynamic) from the next check on.
    pub fn set_rate(&self, bytes_per_second: f64) {
        self.rate.store(bytes_per_second.to_bits(), Ordering::Relaxed);
    }

    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    /// Whether a rate is in force (Kafka's default, Double.MAX_VALUE, means none).
    pub fn is_limited(&self) -> bool {
        let r = self.rate();
        r.is_finite() && r > 0.0 && r < 1e15
    }

    /// A chunk size that keeps bursts short under the current rate: about a tenth of a second of budget, within
    /// [4 KiB, `max`].
    pub fn chunk_bytes(&self, max: usize) -> usize {
        if !self.is_limited() {
            return max;
        }
        ((self.rate() / 10.0) as usize).clamp(4096, max.max(4096))
    }

    /// Accounts `bytes` of cleaner I/O and sleeps if the cleaners are ahead of the rate.
    pub fn throttle(&self, bytes: u64) {
        if !self.is_limited() {
            return;
        }
        let rate = self.rate();
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        w.bytes += bytes as f64;
        let elapsed = w.start.elapsed();
        if elapsed < CHECK_INTERVAL && w.bytes < rate * CHECK_INTERVAL.as_secs_f64() {
            return;
        }
        let needed = Duration::from_secs_f64(w.bytes / rate);
        if let Some(sleep) = needed.checked_sub(elapsed).filter(|s| !s.is_zero()) {
            // Held across the sleep on purpose: the budget is shared by every cleaner thread.
            std::thread::sleep(sleep);
        }
        w.start = Instant::now();
        w.bytes = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_rate() {
        let t = Throttler::new(2_000_000.0);
        let start = Instant::now();
        for _ in 0..40 {
            t.throttle(25_000); // 1 MB in total
        }
        let secs = start.elapsed().as_secs_f64();
        assert!(secs >= 0.4, "1 MB at 2 MB/s took {secs}s");
        let t = Throttler::new(f64::MAX);
        let start = Instant::now();
        t.throttle(1 << 40);
        assert!(start.elapsed() < Duration::from_millis(50));
        assert!(!t.is_limited());
    }
}
