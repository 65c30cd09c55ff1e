//! The coordinator shard's timer: named deadlines (Kafka's `timer.schedule(key, ...)`), where scheduling a key
//! again replaces its previous deadline and cancelling forgets it. The shard's loop sleeps until the earliest
//! deadline, so timers cost no task each (a heartbeat every few seconds per member only moves an entry).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

pub struct Timers<K, A> {
    by_key: HashMap<K, (Instant, u64, A)>,
    queue: BTreeMap<(Instant, u64), K>,
    seq: u64,
}

impl<K: Clone + Eq + Hash, A> Default for Timers<K, A> {
    fn default() -> Self {
        Timers { by_key: HashMap::new(), queue: BTreeMap::new(), seq: 0 }
    }
}

impl<K: Clone + Eq + Hash, A> Timers<K, A> {
    pub fn schedule(&mut self, key: K, after: Duration, action: A) {
        self.cancel(&key);
        self.seq += 1;
        let at = Instant::now() + after;
        self.queue.insert((at, self.seq), key.clone());
        self.by_key.insert(key, (at, self.seq, action));
    }

    pub fn cancel(&mut self, key: &K) {
        if let Some((at, seq, _)) = self.by_key.remove(key) {
            self.queue.remove(&(at, seq));
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest action whose deadline has passed.
    pub fn pop_expired(&mut self, now: Instant) -> Option<A> {
        let (&(at, seq), _) = self.queue.iter().next()?;
        if at > now {
            return None;
        }
        let key = self.queue.remove(&(at, seq))?;
        self.by_key.remove(&key).map(|(_, _, a)| a)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reschedule_replaces_and_cancel_forgets() {
        let mut t: Timers<&str, u32> = Timers::default();
        let start = Instant::now();
        t.schedule("a", Duration::from_secs(10), 1);
        t.schedule("b", Duration::from_secs(20), 2);
        t.schedule("a", Duration::from_secs(30), 3);
        t.cancel(&"b");
        assert_eq!(t.len(), 1);
        assert_eq!(t.pop_expired(start + Duration::from_secs(25)), None);
        assert_eq!(t.pop_expired(start + Duration::from_secs(31)), Some(3));
        assert!(t.next_deadline().is_none());
    }
}
