//! Choosing a partition for records sent without one. The default is the Java client's: murmur2 of the key
//! (so a key lands where a Java producer would put it), sticky batches for records without a key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Picks a partition in `0..partitions` for a record without an explicit partition.
pub trait Partitioner: Send + Sync {
    fn partition(&self, topic: &str, key: Option<&[u8]>, partitions: i32) -> i32;

    /// Told when the batch a record went into was the first of a new batch for `partition`: sticky partitioners
    /// move on then, so keyless records fill whole batches and spread over partitions batch by batch.
    fn on_new_batch(&self, _topic: &str, _partition: i32, _partitions: i32) {}
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), seed 0x9747b28c.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ len as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    // Java's switch falls through from 3 to 1 over the trailing bytes.
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner picks for a key.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as i64 % partitions.max(1) as i64) as i32
}

/// A cheap pseudo-random number (splitmix64 over a counter seeded from the clock): enough to spread sticky
/// partitions without a rand dependency.
fn next_random(state: &AtomicU64) -> u64 {
    let mut z = state.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
}

/// Java's default: keyed records by murmur2; keyless records stick to one partition until its batch is full.
pub struct DefaultPartitioner {
    sticky: Mutex<HashMap<String, i32>>,
    random: AtomicU64,
}

impl Default for DefaultPartitioner {
    fn default() -> Self {
        DefaultPartitioner { sticky: Mutex::new(HashMap::new()), random: AtomicU64::new(seed()) }
    }
}

impl Partitioner for DefaultPartitioner {
    fn partition(&self, topic: &str, key: Option<&[u8]>, partitions: i32) -> i32 {
        if let Some(k) = key {
            return partition_for_key(k, partitions);
        }
        let mut sticky = self.sticky.lock().unwrap_or_else(|e| e.into_inner());
        match sticky.get(topic) {
            Some(&p) if p < partitions => p,
            _ => {
                let p = (next_random(&self.random) % partitions.max(1) as u64) as i32;
                sticky.insert(topic.to_string(), p);
                p
            }
        }
    }

    fn on_new_batch(&self, topic: &str, partition: i32, partitions: i32) {
        let mut sticky = self.sticky.lock().unwrap_or_else(|e| e.into_inner());
        if partitions > 1 && sticky.get(topic) == Some(&partition) {
            // Any partition but the one just filled.
            let step = 1 + (next_random(&self.random) % (partitions as u64 - 1)) as i32;
            sticky.insert(topic.to_string(), (partition + step) % partitions);
        }
    }
}

/// Every record to the next partition in turn, keys ignored (Java's RoundRobinPartitioner).
#[derive(Default)]
pub struct RoundRobinPartitioner {
    next: Mutex<HashMap<String, u32>>,
}

impl Partitioner for RoundRobinPartitioner {
    fn partition(&self, topic: &str, _key: Option<&[u8]>, partitions: i32) -> i32 {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let n = next.entry(topic.to_string()).or_insert(0);
        let p = (*n % partitions.max(1) as u32) as i32;
        *n = n.wrapping_add(1);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's UtilsTest.testMurmur2 vectors.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ];
        for (k, want) in cases {
            assert_eq!(murmur2(k), want, "{}", String::from_utf8_lossy(k));
        }
    }

    #[test]
    fn keyed_partition_matches_java_to_positive_modulo() {
        // toPositive(-790332482) = 1357151166; 1357151166 % 50 = 16.
        assert_eq!(partition_for_key(b"foobar", 50), 16);
        let p = DefaultPartitioner::default();
        for n in [1, 3, 7, 12] {
            assert_eq!(p.partition("t", Some(b"foobar"), n), ((-790_332_482i32 & 0x7fff_ffff) % n));
        }
    }

    #[test]
    fn keyless_records_stick_until_a_new_batch() {
        let p = DefaultPartitioner::default();
        let first = p.partition("t", None, 4);
        assert!((0..10).all(|_| p.partition("t", None, 4) == first));
        p.on_new_batch("t", first, 4);
        let second = p.partition("t", None, 4);
        assert_ne!(first, second);
        assert_eq!(p.partition("t", None, 1), 0);
    }

    #[test]
    fn round_robin_cycles() {
        let p = RoundRobinPartitioner::default();
        let got: Vec<i32> = (0..6).map(|_| p.partition("t", Some(b"same"), 3)).collect();
        assert_eq!(got, vec![0, 1, 2, 0, 1, 2]);
    }
}
