//! One log line per interval for events that can repeat many times a second (rejected connections, accept
//! failures at the descriptor limit): the line carries how many were not logged since the last one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct LogThrottle {
    interval: Duration,
    state: Mutex<State>,
}

struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    pub const fn new(interval: Duration) -> LogThrottle {
        LogThrottle { interval, state: Mutex::new(State { last: None, suppressed: 0 }) }
    }

    /// Some(events not logged since the last line) when this event should be logged, None when it is counted only.
    pub fn check(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if s.last.is_some_and(|last| now.duration_since(last) < self.interval) {
            s.suppressed += 1;
            return None;
        }
        s.last = Some(now);
        Some(std::mem::take(&mut s.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_it_does_not_log() {
        let t = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(t.check(), Some(0));
        assert_eq!(t.check(), None);
        assert_eq!(t.check(), None);
        let t = LogThrottle::new(Duration::ZERO);
        assert_eq!(t.check(), Some(0));
        assert_eq!(t.check(), Some(0));
    }
}
