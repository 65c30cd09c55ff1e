//! The idempotent producer's side of exactly-once delivery (the idempotent half of Java's TransactionManager): the
//! producer id from InitProducerId, and per partition the epoch and the next sequence number stamped into each batch.
//! A retried batch is resent with the same bytes, so the broker recognises it and answers with its original offset.
//!
//! Ordering: the sender keeps at most one batch per partition in flight when idempotent (Java allows five and
//! reorders retries by sequence; one is simpler and cannot put a retry behind its successor).
//!
//! When a batch that got a sequence number ends without a known outcome (delivery timeout after it may have been
//! written, or a sequence/epoch error), the partition's sequence restarts at 0 under a bumped epoch, as Java's
//! client-side epoch bump for idempotent producers does (KIP-360); the broker accepts a higher epoch starting at 0.
//! Only that partition is bumped: brokers track producer state per partition, and the other partitions' sequences
//! are still consistent.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{InitProducerIdRequest, ProducerId};

use crate::batch::ProducerStamp;
use crate::cluster::Cluster;
use crate::error::{check, Error, Result};
use crate::record::TopicPartition;

/// Java's `transaction.timeout.ms` default, sent with InitProducerId (brokers ignore it without a transactional id).
const TRANSACTION_TIMEOUT_MS: i32 = 60_000;

#[derive(Clone, Copy)]
struct PartitionSequence {
    epoch: i16,
    next: i32,
}

pub(crate) struct Idempotence {
    producer_id: i64,
    epoch: i16,
    partitions: Mutex<HashMap<TopicPartition, PartitionSequence>>,
}

impl Idempotence {
    /// Asks any broker for a producer id, retrying retriable errors until `max_block`.
    pub async fn init(cluster: &Cluster, max_block: Duration, backoff: Duration) -> Result<Idempotence> {
        let deadline = Instant::now() + max_block;
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(TRANSACTION_TIMEOUT_MS)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        loop {
            let result = cluster
                .call_any(&req)
                .await
                .and_then(|r| check(r.error_code, || "InitProducerId".into(), None).map(|_| r));
            match result {
                Ok(r) => {
                    tracing::debug!(producer_id = r.producer_id.0, epoch = r.producer_epoch, "idempotent producer initialised");
                    return Ok(Idempotence { producer_id: r.producer_id.0, epoch: r.producer_epoch, partitions: Mutex::new(HashMap::new()) });
                }
                Err(e) if e.is_retriable() && Instant::now() + backoff < deadline => {
                    tracing::debug!(error = %e, "InitProducerId failed; retrying");
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn producer_id(&self) -> i64 {
        self.producer_id
    }

    /// The stamp for the next batch of `count` records to `tp`, advancing the partition's sequence.
    pub fn next(&self, tp: &TopicPartition, count: i32) -> ProducerStamp {
        let mut parts = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        let st = parts.entry(tp.clone()).or_insert(PartitionSequence { epoch: self.epoch, next: 0 });
        let stamp = ProducerStamp { producer_id: self.producer_id, epoch: st.epoch, base_sequence: st.next };
        st.next = next_sequence(st.next, count);
        stamp
    }

    /// A sequenced batch of `tp` ended without a known outcome: restart the partition's sequence under a new epoch.
    /// Callers guarantee no other batch of `tp` is in flight or already sequenced (one in flight per partition).
    pub fn reset(&self, tp: &TopicPartition) -> Result<()> {
        let mut parts = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        let Some(st) = parts.get_mut(tp) else { return Ok(()) };
        st.epoch = st.epoch.checked_add(1).ok_or_else(|| {
            Error::Protocol(format!("producer {} exhausted its epochs on {tp}; recreate the producer", self.producer_id))
        })?;
        st.next = 0;
        tracing::debug!(%tp, epoch = st.epoch, "idempotent producer bumped the partition's epoch");
        Ok(())
    }
}

/// Sequences wrap from i32::MAX to 0, as the broker expects.
fn next_sequence(seq: i32, count: i32) -> i32 {
    ((i64::from(seq) + i64::from(count)) % (i64::from(i32::MAX) + 1)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idem() -> Idempotence {
        Idempotence { producer_id: 7, epoch: 0, partitions: Mutex::new(HashMap::new()) }
    }

    #[test]
    fn sequences_advance_per_partition_and_wrap() {
        let i = idem();
        let a = TopicPartition { topic: "t".into(), partition: 0 };
        let b = TopicPartition { topic: "t".into(), partition: 1 };
        assert_eq!(i.next(&a, 3).base_sequence, 0);
        assert_eq!(i.next(&a, 2).base_sequence, 3);
        assert_eq!(i.next(&b, 1).base_sequence, 0);
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert_eq!(next_sequence(i32::MAX - 1, 3), 1);
    }

    #[test]
    fn reset_bumps_only_that_partitions_epoch() {
        let i = idem();
        let a = TopicPartition { topic: "t".into(), partition: 0 };
        let b = TopicPartition { topic: "t".into(), partition: 1 };
        i.next(&a, 5);
        i.next(&b, 5);
        i.reset(&a).unwrap();
        assert_eq!(i.next(&a, 1), ProducerStamp { producer_id: 7, epoch: 1, base_sequence: 0 });
        assert_eq!(i.next(&b, 1), ProducerStamp { producer_id: 7, epoch: 0, base_sequence: 5 });
    }
}
