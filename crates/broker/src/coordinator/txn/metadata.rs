//! One transactional id's state and its transitions (Kafka's TransactionMetadata). A change is first *prepared*
//! (a `TxnTransit`, the record to write, with the target state held as `pending_state` so that no other change can
//! start), then *completed* once its record is durable in `__transaction_state`. A failed write only clears the
//! pending state, so the in-memory state never runs ahead of the log.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;

use super::records::{TransactionLogValue, TxnState};

pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;

/// (topic, partition)
pub type TopicPartition = (String, i32);

/// Kafka keeps Short.MaxValue free so that a producer can always be fenced.
pub fn is_epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

/// The target of a prepared transition: exactly what the record says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnTransit {
    pub producer_id: i64,
    pub prev_producer_id: i64,
    pub next_producer_id: i64,
    pub producer_epoch: i16,
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartition>,
    pub start_timestamp: i64,
    pub update_timestamp: i64,
    pub client_transaction_version: i16,
}

impl TxnTransit {
    /// The record value. PrepareEpochFence is never written; a fence is persisted as the PrepareAbort that follows.
    pub fn to_record(&self) -> TransactionLogValue {
        let mut partitions: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
        for (t, p) in &self.partitions {
            partitions.entry(t.clone()).or_default().insert(*p);
        }
        TransactionLogValue {
            producer_id: self.producer_id,
            previous_producer_id: self.prev_producer_id,
            next_producer_id: self.next_producer_id,
            producer_epoch: self.producer_epoch,
            transaction_timeout_ms: self.timeout_ms,
            state: self.state,
            partitions,
            last_update_timestamp_ms: self.update_timestamp,
            start_timestamp_ms: self.start_timestamp,
            client_transaction_version: self.client_transaction_version,
        }
    }
}

#[derive(Clone, Debug)]
pub struct TransactionMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub previous_producer_id: i64,
    pub next_producer_id: i64,
    pub producer_epoch: i16,
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartition>,
    pub start_timestamp: i64,
    pub last_update_timestamp: i64,
    pub client_transaction_version: i16,
    /// The state a prepared, not yet durable transition leads to.
    pub pending_state: Option<TxnState>,
    /// A fence whose write failed already bumped the epoch (never returned to a client): do not bump it again.
    pub has_failed_epoch_fence: bool,
}

impl TransactionMetadata {
    /// A new transactional id (InitProducerId for an id the coordinator does not know).
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now: i64) -> TransactionMetadata {
        TransactionMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id,
            previous_producer_id: NO_PRODUCER_ID,
            next_producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_timestamp: -1,
            last_update_timestamp: now,
            client_transaction_version: 0,
            pending_state: None,
            has_failed_epoch_fence: false,
        }
    }

    /// Rebuilt from its latest record while loading.
    pub fn from_record(transactional_id: &str, v: &TransactionLogValue) -> TransactionMetadata {
        let mut partitions = BTreeSet::new();
        for (t, ps) in &v.partitions {
            for p in ps {
                partitions.insert((t.clone(), *p));
            }
        }
        TransactionMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id: v.producer_id,
            previous_producer_id: v.previous_producer_id,
            next_producer_id: v.next_producer_id,
            producer_epoch: v.producer_epoch,
            // Kafka does not persist the last epoch; after a reload a retried InitProducerId is fenced.
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms: v.transaction_timeout_ms,
            state: v.state,
            partitions,
            start_timestamp: v.start_timestamp_ms,
            last_update_timestamp: v.last_update_timestamp_ms,
            client_transaction_version: v.client_transaction_version,
            pending_state: None,
            has_failed_epoch_fence: false,
        }
    }

    pub fn pending_transition_in_progress(&self) -> bool {
        self.pending_state.is_some()
    }

    pub fn is_producer_epoch_exhausted(&self) -> bool {
        is_epoch_exhausted(self.producer_epoch)
    }

    fn has_pending_transaction(&self) -> bool {
        matches!(self.state, TxnState::Ongoing | TxnState::PrepareAbort | TxnState::PrepareCommit)
    }

    #[allow(clippy::too_many_arguments)]
    fn prepare_transition(
        &mut self,
        state: TxnState,
        producer_id: i64,
        next_producer_id: i64,
        epoch: i16,
        last_epoch: i16,
        timeout_ms: i32,
        partitions: BTreeSet<TopicPartition>,
        start_timestamp: i64,
        update_timestamp: i64,
        client_transaction_version: i16,
    ) -> Result<TxnTransit, ResponseError> {
        if let Some(p) = self.pending_state {
            tracing::error!(transactional_id = %self.transactional_id, to = state.name(), pending = p.name(), "transition while another is pending");
            return Err(ResponseError::ConcurrentTransactions);
        }
        if producer_id < 0 || (state != TxnState::Dead && epoch < 0) {
            tracing::error!(transactional_id = %self.transactional_id, producer_id, epoch, "illegal producer id or epoch in a transition");
            return Err(ResponseError::UnknownServerError);
        }
        if !state.valid_previous_states().contains(&self.state) {
            tracing::warn!(transactional_id = %self.transactional_id, from = self.state.name(), to = state.name(), "invalid transaction state transition");
            return Err(ResponseError::InvalidTxnState);
        }
        self.pending_state = Some(state);
        Ok(TxnTransit {
            producer_id,
            prev_producer_id: self.producer_id,
            next_producer_id,
            producer_epoch: epoch,
            last_producer_epoch: last_epoch,
            timeout_ms,
            state,
            partitions,
            start_timestamp,
            update_timestamp,
            client_transaction_version,
        })
    }

    /// Bumps the epoch to abort the ongoing transaction of a producer that is being fenced (a new InitProducerId, or
    /// a timeout). The bumped epoch is never returned to a client.
    pub fn prepare_fence_producer_epoch(&mut self) -> Result<TxnTransit, ResponseError> {
        if self.producer_epoch == i16::MAX {
            tracing::error!(transactional_id = %self.transactional_id, "cannot fence a producer at epoch Short.MaxValue");
            return Err(ResponseError::UnknownServerError);
        }
        let bumped = if self.has_failed_epoch_fence { self.producer_epoch } else { self.producer_epoch + 1 };
        let (pid, timeout, parts, start, upd, tv) = (
            self.producer_id,
            self.timeout_ms,
            self.partitions.clone(),
            self.start_timestamp,
            self.last_update_timestamp,
            self.client_transaction_version,
        );
        self.prepare_transition(
            TxnState::PrepareEpochFence,
            pid,
            NO_PRODUCER_ID,
            bumped,
            NO_PRODUCER_EPOCH,
            timeout,
            parts,
            start,
            upd,
            tv,
        )
    }

    /// InitProducerId: the next epoch (or the same one for a retry of a call that succeeded, KIP-360).
    pub fn prepare_increment_producer_epoch(
        &mut self,
        timeout_ms: i32,
        expected_epoch: Option<i16>,
        now: i64,
    ) -> Result<TxnTransit, ResponseError> {
        if self.is_producer_epoch_exhausted() {
            return Err(ResponseError::UnknownServerError);
        }
        let bumped = self.producer_epoch + 1;
        let (epoch, last) = match expected_epoch {
            None => (bumped, NO_PRODUCER_EPOCH),
            Some(e) if self.producer_epoch == NO_PRODUCER_EPOCH || e == self.producer_epoch => {
                (bumped, self.producer_epoch)
            }
            Some(e) if e == self.last_producer_epoch => (self.producer_epoch, self.last_producer_epoch),
            Some(e) => {
                tracing::info!(
                    transactional_id = %self.transactional_id, expected = e, current = self.producer_epoch,
                    last = self.last_producer_epoch, "InitProducerId with a fenced epoch"
                );
                return Err(ResponseError::ProducerFenced);
            }
        };
        let (pid, tv) = (self.producer_id, self.client_transaction_version);
        self.prepare_transition(
            TxnState::Empty,
            pid,
            NO_PRODUCER_ID,
            epoch,
            last,
            timeout_ms,
            BTreeSet::new(),
            -1,
            now,
            tv,
        )
    }

    /// InitProducerId when the epoch is exhausted: a new producer id at epoch 0.
    pub fn prepare_producer_id_rotation(
        &mut self,
        new_producer_id: i64,
        timeout_ms: i32,
        now: i64,
        record_last_epoch: bool,
    ) -> Result<TxnTransit, ResponseError> {
        if self.has_pending_transaction() {
            return Err(ResponseError::UnknownServerError);
        }
        let last = if record_last_epoch { self.producer_epoch } else { NO_PRODUCER_EPOCH };
        let tv = self.client_transaction_version;
        self.prepare_transition(
            TxnState::Empty,
            new_producer_id,
            NO_PRODUCER_ID,
            0,
            last,
            timeout_ms,
            BTreeSet::new(),
            -1,
            now,
            tv,
        )
    }

    pub fn prepare_add_partitions(
        &mut self,
        added: &BTreeSet<TopicPartition>,
        now: i64,
        client_transaction_version: i16,
    ) -> Result<TxnTransit, ResponseError> {
        let start = match self.state {
            TxnState::Empty | TxnState::CompleteAbort | TxnState::CompleteCommit => now,
            _ => self.start_timestamp,
        };
        let mut parts = self.partitions.clone();
        parts.extend(added.iter().cloned());
        let (pid, epoch, last, timeout) =
            (self.producer_id, self.producer_epoch, self.last_producer_epoch, self.timeout_ms);
        self.prepare_transition(
            TxnState::Ongoing,
            pid,
            NO_PRODUCER_ID,
            epoch,
            last,
            timeout,
            parts,
            start,
            now,
            client_transaction_version,
        )
    }

    /// Ongoing → PrepareCommit/PrepareAbort. With transactions version 2 the epoch moves on here, so the markers and
    /// any later write carry an epoch that no write of this transaction has; `next_producer_id` is set when that
    /// bump exhausts the epochs. An abort that fences a producer already bumped the epoch (`is_epoch_fence`) and
    /// does not bump it again, as Kafka's coordinator answers.
    pub fn prepare_abort_or_commit(
        &mut self,
        state: TxnState,
        client_transaction_version: i16,
        next_producer_id: i64,
        now: i64,
        no_partition_added: bool,
        is_epoch_fence: bool,
    ) -> Result<TxnTransit, ResponseError> {
        let (epoch, last) = if client_transaction_version >= 2 && !is_epoch_fence {
            (self.producer_epoch + 1, self.producer_epoch)
        } else {
            (self.producer_epoch, self.last_producer_epoch)
        };
        let start = if no_partition_added { now } else { self.start_timestamp };
        let (pid, timeout, parts) = (self.producer_id, self.timeout_ms, self.partitions.clone());
        self.prepare_transition(
            state,
            pid,
            next_producer_id,
            epoch,
            last,
            timeout,
            parts,
            start,
            now,
            client_transaction_version,
        )
    }

    /// PrepareCommit/PrepareAbort → CompleteCommit/CompleteAbort, once every marker is written.
    pub fn prepare_complete(&mut self, now: i64) -> Result<TxnTransit, ResponseError> {
        let state =
            if self.state == TxnState::PrepareCommit { TxnState::CompleteCommit } else { TxnState::CompleteAbort };
        self.has_failed_epoch_fence = false;
        // An exhausted epoch (transactions v2) moves to the next producer id at epoch 0; the last epoch stays what
        // the client last saw.
        let (pid, epoch) = if self.client_transaction_version >= 2 && self.next_producer_id != NO_PRODUCER_ID {
            (self.next_producer_id, 0)
        } else {
            (self.producer_id, self.producer_epoch)
        };
        let (last, timeout, start, tv) =
            (self.last_producer_epoch, self.timeout_ms, self.start_timestamp, self.client_transaction_version);
        self.prepare_transition(state, pid, NO_PRODUCER_ID, epoch, last, timeout, BTreeSet::new(), start, now, tv)
    }

    /// Expiry of an idle transactional id (a tombstone).
    pub fn prepare_dead(&mut self) -> Result<TxnTransit, ResponseError> {
        let (pid, epoch, last, timeout, start, upd, tv) = (
            self.producer_id,
            self.producer_epoch,
            self.last_producer_epoch,
            self.timeout_ms,
            self.start_timestamp,
            self.last_update_timestamp,
            self.client_transaction_version,
        );
        self.prepare_transition(
            TxnState::Dead,
            pid,
            NO_PRODUCER_ID,
            epoch,
            last,
            timeout,
            BTreeSet::new(),
            start,
            upd,
            tv,
        )
    }

    /// The prepared transition's record is durable: make it the state.
    pub fn complete_transition(&mut self, t: &TxnTransit) {
        self.producer_id = t.producer_id;
        self.previous_producer_id = t.prev_producer_id;
        self.next_producer_id = t.next_producer_id;
        self.producer_epoch = t.producer_epoch;
        self.last_producer_epoch = t.last_producer_epoch;
        self.timeout_ms = t.timeout_ms;
        self.state = t.state;
        self.partitions = t.partitions.clone();
        self.start_timestamp = t.start_timestamp;
        self.last_update_timestamp = t.update_timestamp;
        self.client_transaction_version = t.client_transaction_version;
        self.pending_state = None;
    }

    /// The write of a prepared transition failed: nothing changed.
    pub fn abort_transition(&mut self) {
        self.pending_state = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(m: &mut TransactionMetadata, expected: Option<i16>) -> Result<TxnTransit, ResponseError> {
        let t = m.prepare_increment_producer_epoch(60000, expected, 1)?;
        m.complete_transition(&t);
        Ok(t)
    }

    fn tp(t: &str, p: i32) -> BTreeSet<TopicPartition> {
        BTreeSet::from([(t.to_string(), p)])
    }

    #[test]
    fn first_init_gives_epoch_0_and_every_init_bumps_it() {
        let mut m = TransactionMetadata::new("t", 1000, 60000, 0);
        assert_eq!(init(&mut m, None).unwrap().producer_epoch, 0);
        assert_eq!(init(&mut m, None).unwrap().producer_epoch, 1);
        assert_eq!(m.last_producer_epoch, NO_PRODUCER_EPOCH);
        assert_eq!(m.state, TxnState::Empty);
    }

    #[test]
    fn kip360_retry_with_the_last_epoch_keeps_the_epoch_and_a_stale_one_is_fenced() {
        let mut m = TransactionMetadata::new("t", 1000, 60000, 0);
        init(&mut m, None).unwrap(); // epoch 0
        let t = init(&mut m, Some(0)).unwrap(); // bump to 1, last 0
        assert_eq!((t.producer_epoch, t.last_producer_epoch), (1, 0));
        let t = init(&mut m, Some(0)).unwrap(); // a retry of that call
        assert_eq!(t.producer_epoch, 1);
        init(&mut m, None).unwrap(); // a new producer: epoch 2, last -1
        assert_eq!(init(&mut m, Some(0)).unwrap_err(), ResponseError::ProducerFenced);
    }

    #[test]
    fn a_pending_transition_blocks_another() {
        let mut m = TransactionMetadata::new("t", 1000, 60000, 0);
        init(&mut m, None).unwrap();
        let _t = m.prepare_add_partitions(&tp("a", 0), 5, 0).unwrap();
        assert_eq!(m.prepare_add_partitions(&tp("a", 1), 6, 0).unwrap_err(), ResponseError::ConcurrentTransactions);
        m.abort_transition();
        assert_eq!(m.state, TxnState::Empty);
        assert!(m.partitions.is_empty());
    }

    #[test]
    fn commit_cycle_v1_keeps_the_epoch() {
        let mut m = TransactionMetadata::new("t", 1000, 60000, 0);
        init(&mut m, None).unwrap();
        let t = m.prepare_add_partitions(&tp("a", 0), 10, 0).unwrap();
        assert_eq!((t.state, t.start_timestamp), (TxnState::Ongoing, 10));
        m.complete_transition(&t);
        let t = m.prepare_add_partitions(&tp("b", 1), 20, 0).unwrap();
        m.complete_transition(&t);
        assert_eq!(m.start_timestamp, 10);
        assert_eq!(m.partitions.len(), 2);
        let t = m.prepare_abort_or_commit(TxnState::PrepareCommit, 0, NO_PRODUCER_ID, 30, false, false).unwrap();
        assert_eq!(t.producer_epoch, 0);
        assert_eq!(t.to_record().partitions.len(), 2);
        m.complete_transition(&t);
        let t = m.prepare_complete(40).unwrap();
        assert_eq!((t.state, t.partitions.len(), t.producer_epoch), (TxnState::CompleteCommit, 0, 0));
        m.complete_transition(&t);
        // A new transaction may start from CompleteCommit.
        assert!(m.prepare_add_partitions(&tp("a", 0), 50, 0).is_ok());
    }

    #[test]
    fn v2_bumps_the_epoch_at_prepare_and_rotates_the_id_when_exhausted() {
        let mut m = TransactionMetadata::new("t", 1000, 60000, 0);
        init(&mut m, None).unwrap();
        let t = m.prepare_add_partitions(&tp("a", 0), 10, 2).unwrap();
        m.complete_transition(&t);
        let t = m.prepare_abort_or_commit(TxnState::PrepareCommit, 2, NO_PRODUCER_ID, 30, false, false).unwrap();
        assert_eq!((t.producer_epoch, t.last_producer_epoch), (1, 0));
        m.complete_transition(&t);
        let t = m.prepare_complete(40).unwrap();
        m.complete_transition(&t);
        assert_eq!((m.producer_id, m.producer_epoch), (1000, 1));

        m.producer_epoch = i16::MAX - 1;
        let t = m.prepare_add_partitions(&tp("a", 0), 50, 2).unwrap();
        m.complete_transition(&t);
        let t = m.prepare_abort_or_commit(TxnState::PrepareAbort, 2, 2000, 60, false, false).unwrap();
        assert_eq!((t.producer_epoch, t.next_producer_id), (i16::MAX, 2000));
        m.complete_transition(&t);
        let t = m.prepare_complete(70).unwrap();
        m.complete_transition(&t);
        assert_eq!((m.producer_id, m.producer_epoch, m.previous_producer_id), (2000, 0, 1000));
    }

    #[test]
    fn fencing_bumps_once_even_after_a_failed_fence() {
        let mut m = TransactionMetadata::new("t", 1000, 60000, 0);
        init(&mut m, None).unwrap();
        let t = m.prepare_add_partitions(&tp("a", 0), 10, 0).unwrap();
        m.complete_transition(&t);
        let t = m.prepare_fence_producer_epoch().unwrap();
        assert_eq!((t.state, t.producer_epoch), (TxnState::PrepareEpochFence, 1));
        m.abort_transition();
        m.has_failed_epoch_fence = true;
        assert_eq!(m.prepare_fence_producer_epoch().unwrap().producer_epoch, 0);
    }

    #[test]
    fn invalid_transitions_are_refused() {
        let mut m = TransactionMetadata::new("t", 1000, 60000, 0);
        init(&mut m, None).unwrap();
        assert_eq!(
            m.prepare_abort_or_commit(TxnState::PrepareCommit, 0, NO_PRODUCER_ID, 1, false, false).unwrap_err(),
            ResponseError::InvalidTxnState
        );
        assert!(m.pending_state.is_none());
        let t = m.prepare_dead().unwrap();
        assert_eq!(t.state, TxnState::Dead);
    }
}
