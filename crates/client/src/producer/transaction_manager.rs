//! The producer's side of exactly-once delivery, after Java's TransactionManager: the producer id and epoch, the
//! sequence number of each partition (idempotence), and for a transactional producer (`transactional.id`) the
//! transaction state machine and its requests to the transaction coordinator.
//!
//! Idempotence: every batch carries the producer id, epoch and a per-partition base sequence; a retried batch is
//! resent with the same stamp, so the broker recognises it and answers with its original offset. When a stamped
//! batch ends without a known outcome (delivery timeout, a sequence error nothing explains), the partition's
//! sequence restarts at 0 under a bumped epoch (KIP-360's client-side bump for idempotent producers; the broker
//! accepts a higher epoch starting at 0). Only that partition is bumped: brokers keep producer state per partition.
//!
//! Transactions speak one of two protocols, chosen as Java's TransactionManager chooses (kafka-clients 4.x): from the
//! cluster's finalized `transaction.version` feature (ApiVersions), read at `init_transactions` and again as each
//! transaction ends.
//!
//! - Transactions v2 (KIP-890 part 2), when `transaction.version` >= 2: no AddPartitionsToTxn; the first transactional
//!   Produce (v12+) to a partition adds it to the transaction on the broker, and TxnOffsetCommit v5 adds the group's
//!   offsets partition the same way (no AddOffsetsToTxn). EndTxn v5+ ends every transaction with an epoch bump: its
//!   response carries the producer id and epoch to go on with (a new producer id when the epoch is exhausted), and
//!   every sequence restarts at 0 under them. An abort with a sequence in doubt is a plain EndTxn: its bump already
//!   fences whatever of the old epoch is left. Any send or offsets make the transaction need an EndTxn.
//! - Transactions v1 (KIP-98), when the feature is below 2 or absent: partitions are added explicitly with
//!   AddPartitionsToTxn before the first write to them, offsets with AddOffsetsToTxn + TxnOffsetCommit, and EndTxn
//!   keeps the epoch; requests are capped at the last versions before v2 (Produce 11, EndTxn 4, TxnOffsetCommit 4).
//!   When a sequence is in doubt the aborting EndTxn is followed by InitProducerId with the current id and epoch
//!   (KIP-360), which bumps the epoch and restarts every sequence. When the cluster moves to v2 between two
//!   transactions, the producer bumps its epoch that way once before the first v2 transaction (Java: so no partition
//!   added under v1 counts as added under v2).
//!
//! States and transitions are Java's: a fencing error is fatal (the producer can only be closed), any other failure
//! inside a transaction is abortable (the application aborts and carries on).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, GroupId, InitProducerIdRequest, ProducerId,
    TopicName, TransactionalId, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::ResponseError;

use crate::batch::ProducerStamp;
use crate::cluster::Cluster;
use crate::connection::Connection;
use crate::error::{check, Error, Result};
use crate::group::coordinator;
use crate::group::offsets::OffsetAndMetadata;
use crate::group::ConsumerGroupMetadata;
use crate::record::TopicPartition;

/// The last request versions of the transactions v1 protocol (Java: LAST_STABLE_VERSION_BEFORE_TRANSACTION_V2 and
/// friends); newer ones ask the broker for KIP-890 semantics.
pub(crate) const PRODUCE_V1_MAX: i16 = 11;
const END_TXN_V1_MAX: i16 = 4;
const TXN_OFFSET_COMMIT_V1_MAX: i16 = 4;
/// Java asks for TxnOffsetCommit 5 under transactions v2 (the version that adds the offsets partition implicitly).
const TXN_OFFSET_COMMIT_V2_MAX: i16 = 5;
/// The feature whose finalized level picks the transaction protocol.
const TRANSACTION_VERSION_FEATURE: &str = "transaction.version";
/// v4 and later are the broker-to-broker form.
const ADD_PARTITIONS_CLIENT_MAX: i16 = 3;

/// Java's TransactionManager.State.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionState {
    Uninitialized,
    Initializing,
    Ready,
    InTransaction,
    CommittingTransaction,
    AbortingTransaction,
    AbortableError,
    FatalError,
}

#[derive(Clone, Copy)]
struct PartitionSequence {
    epoch: i16,
    next: i32,
    /// A batch of this epoch was acknowledged. Until then only one batch goes at a time: a broker that does not
    /// know the producer yet accepts any first sequence, so a second batch could be written ahead of a first one
    /// that failed and is being retried.
    acked: bool,
}

struct Shared {
    producer_id: i64,
    epoch: i16,
    state: TransactionState,
    /// Why the producer is in AbortableError or FatalError.
    last_error: Option<Error>,
    sequences: HashMap<TopicPartition, PartitionSequence>,
    /// Partitions the coordinator added to the current transaction.
    partitions_in_transaction: HashSet<TopicPartition>,
    /// Partitions or offsets were added (v1), or anything was sent or offsets were (v2): ending needs EndTxn.
    transaction_started: bool,
    /// A sequence is in doubt: under v1 the next abort bumps the epoch through InitProducerId after its EndTxn
    /// (under v2 the EndTxn bumps it).
    epoch_bump_required: bool,
    /// The cluster finalizes `transaction.version` >= 2: transactions speak the v2 protocol.
    transaction_v2: bool,
    /// The features epoch `transaction_v2` was read at (Java's latestFinalizedFeaturesEpoch).
    features_epoch: i64,
}

/// Connections to the coordinators, behind the lock that serialises the transactional operations.
#[derive(Default)]
struct Coordinators {
    transaction: Option<Arc<Connection>>,
    group: Option<(String, Arc<Connection>)>,
}

pub(crate) struct TransactionManager {
    transactional_id: Option<String>,
    transaction_timeout_ms: i32,
    cluster: Arc<Cluster>,
    max_block: Duration,
    retry_backoff: Duration,
    shared: Mutex<Shared>,
    ops: tokio::sync::Mutex<Coordinators>,
}

/// What to do with a coordinator's error code.
enum Next {
    Done,
    /// Retry after the backoff; `true`: find the coordinator again first.
    Retry(bool),
    /// CONCURRENT_TRANSACTIONS: the previous transaction's markers are still being written, which takes
    /// milliseconds; Java retries after 20 ms rather than retry.backoff.ms.
    RetrySoon,
    Fail(Error),
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

impl TransactionManager {
    fn new(
        cluster: Arc<Cluster>,
        transactional_id: Option<String>,
        timeout: Duration,
        max_block: Duration,
        producer_id: i64,
        epoch: i16,
    ) -> Self {
        let state = if transactional_id.is_some() { TransactionState::Uninitialized } else { TransactionState::Ready };
        TransactionManager {
            transactional_id,
            transaction_timeout_ms: timeout.as_millis().min(i32::MAX as u128) as i32,
            retry_backoff: cluster.config().retry_backoff,
            cluster,
            max_block,
            shared: Mutex::new(Shared {
                producer_id,
                epoch,
                state,
                last_error: None,
                sequences: HashMap::new(),
                partitions_in_transaction: HashSet::new(),
                transaction_started: false,
                epoch_bump_required: false,
                transaction_v2: false,
                features_epoch: -1,
            }),
            ops: tokio::sync::Mutex::new(Coordinators::default()),
        }
    }

    /// An idempotent producer: asks any broker for a producer id, retrying retriable errors until `max_block`.
    pub async fn idempotent(cluster: Arc<Cluster>, max_block: Duration) -> Result<TransactionManager> {
        let deadline = Instant::now() + max_block;
        let backoff = cluster.config().retry_backoff;
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        loop {
            let result = cluster
                .call_any(&req)
                .await
                .and_then(|r| check(r.error_code, || "InitProducerId".into(), None).map(|_| r));
            match result {
                Ok(r) => {
                    tracing::debug!(
                        producer_id = r.producer_id.0,
                        epoch = r.producer_epoch,
                        "idempotent producer initialised"
                    );
                    return Ok(Self::new(cluster, None, Duration::ZERO, max_block, r.producer_id.0, r.producer_epoch));
                }
                Err(e) if e.is_retriable() && Instant::now() + backoff < deadline => {
                    tracing::debug!(error = %e, "InitProducerId failed; retrying");
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A transactional producer, uninitialised until `init_transactions`.
    pub fn transactional(
        cluster: Arc<Cluster>,
        transactional_id: String,
        timeout: Duration,
        max_block: Duration,
    ) -> TransactionManager {
        Self::new(cluster, Some(transactional_id), timeout, max_block, -1, -1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_transactional(&self) -> bool {
        self.transactional_id.is_some()
    }

    pub fn producer_id(&self) -> i64 {
        self.lock().producer_id
    }

    pub fn producer_epoch(&self) -> i16 {
        self.lock().epoch
    }

    pub fn state(&self) -> TransactionState {
        self.lock().state
    }

    /// Whether transactions speak the v2 protocol (KIP-890 part 2); Produce requests of a v1 transaction stay below
    /// v12.
    pub fn is_transaction_v2(&self) -> bool {
        self.lock().transaction_v2
    }

    /// Reads `transaction.version` from the newest finalized features the cluster answered (Java's
    /// maybeUpdateTransactionV2Enabled). Returns true when this moved the producer from v1 to v2 outside
    /// `init_transactions`: the caller bumps the epoch before the first v2 transaction.
    fn maybe_update_transaction_v2(&self, on_initialization: bool) -> bool {
        let features = self.cluster.finalized_features();
        let mut sh = self.lock();
        if sh.features_epoch >= features.epoch {
            return false;
        }
        sh.features_epoch = features.epoch;
        let was = sh.transaction_v2;
        sh.transaction_v2 = features.level(TRANSACTION_VERSION_FEATURE).is_some_and(|v| v >= 2);
        tracing::debug!(v2 = sh.transaction_v2, features_epoch = features.epoch, "transaction protocol");
        !on_initialization && !was && sh.transaction_v2
    }

    /// The stamp for the next batch of `count` records to `tp`, advancing the partition's sequence.
    pub fn next(&self, tp: &TopicPartition, count: i32) -> ProducerStamp {
        let mut sh = self.lock();
        let (producer_id, epoch) = (sh.producer_id, sh.epoch);
        let st = sh.sequences.entry(tp.clone()).or_insert(PartitionSequence { epoch, next: 0, acked: false });
        let stamp = ProducerStamp { producer_id, epoch: st.epoch, base_sequence: st.next };
        st.next = next_sequence(st.next, count);
        stamp
    }

    /// True when `stamp` is from before the last epoch bump (of the producer or of the partition): a batch with
    /// it is resent under a new stamp.
    pub fn is_stale(&self, tp: &TopicPartition, stamp: ProducerStamp) -> bool {
        let sh = self.lock();
        let epoch = sh.sequences.get(tp).map_or(sh.epoch, |st| st.epoch);
        stamp.producer_id != sh.producer_id || stamp.epoch != epoch
    }

    /// The broker acknowledged a batch with this stamp.
    pub fn acked(&self, tp: &TopicPartition, stamp: ProducerStamp) {
        if let Some(st) = self.lock().sequences.get_mut(tp) {
            if st.epoch == stamp.epoch {
                st.acked = true;
            }
        }
    }

    /// Whether `tp` may have more than one batch in flight (see `PartitionSequence::acked`).
    pub fn may_pipeline(&self, tp: &TopicPartition) -> bool {
        self.lock().sequences.get(tp).is_some_and(|st| st.acked)
    }

    /// A batch ended for good with `err`; `stamped` when it had a sequence number (which is now in doubt).
    pub fn handle_failed_batch(&self, tp: &TopicPartition, err: &Error, stamped: bool) {
        if !self.is_transactional() {
            if stamped {
                self.bump_partition_epoch(tp);
            }
            return;
        }
        let mut sh = self.lock();
        if stamped {
            sh.epoch_bump_required = true;
        }
        // INVALID_PRODUCER_EPOCH on produce means another producer took over, as Java reads it.
        if err.is_fatal_for_producer() {
            Self::to_fatal(&mut sh, err.clone());
        } else if matches!(sh.state, TransactionState::InTransaction | TransactionState::CommittingTransaction) {
            tracing::debug!(%tp, error = %err, "transaction must be aborted");
            sh.state = TransactionState::AbortableError;
            sh.last_error = Some(err.clone());
        }
    }

    /// The error that dooms the current transaction (ABORTABLE_ERROR) or the producer (FATAL_ERROR), if any.
    pub fn doomed(&self) -> Option<Error> {
        let sh = self.lock();
        match sh.state {
            TransactionState::AbortableError | TransactionState::FatalError => sh.last_error.clone(),
            _ => None,
        }
    }

    /// Records dropped before they were sent (their transaction is being aborted): when one had a sequence
    /// number the sequence has a gap, which only an epoch bump closes.
    pub fn dropped_stamped_batch(&self) {
        self.lock().epoch_bump_required = true;
    }

    /// Idempotent producer: restart `tp`'s sequence at 0 under a new epoch (callers stall the partition).
    fn bump_partition_epoch(&self, tp: &TopicPartition) {
        let mut sh = self.lock();
        let producer_id = sh.producer_id;
        let Some(st) = sh.sequences.get_mut(tp) else { return };
        match st.epoch.checked_add(1) {
            Some(e) => {
                st.epoch = e;
                st.next = 0;
                st.acked = false;
                tracing::debug!(%tp, epoch = e, "idempotent producer bumped the partition's epoch");
            }
            None => {
                let err = Error::Protocol(format!(
                    "producer {producer_id} exhausted its epochs on {tp}; recreate the producer"
                ));
                tracing::error!(error = %err, "cannot restart the partition's sequence");
                Self::to_fatal(&mut sh, err);
            }
        }
    }

    fn to_fatal(sh: &mut Shared, err: Error) {
        tracing::debug!(error = %err, "transactional producer failed fatally");
        sh.state = TransactionState::FatalError;
        sh.last_error = Some(err);
    }

    /// The error for an operation not allowed in the current state (the last error when there is one).
    fn state_error(sh: &Shared, operation: &str) -> Error {
        match (&sh.state, &sh.last_error) {
            (TransactionState::FatalError | TransactionState::AbortableError, Some(e)) => e.clone(),
            (state, _) => Error::TransactionState(format!("cannot {operation} in state {state:?}")),
        }
    }

    fn require_transactional(&self, operation: &str) -> Result<&str> {
        self.transactional_id
            .as_deref()
            .ok_or_else(|| Error::TransactionState(format!("cannot {operation}: the producer has no transactional.id")))
    }

    /// Checks that a record may be appended: always for an idempotent producer, inside a transaction otherwise.
    pub fn check_send(&self) -> Result<()> {
        let sh = self.lock();
        if !self.is_transactional() {
            return if sh.state == TransactionState::FatalError { Err(Self::state_error(&sh, "send")) } else { Ok(()) };
        }
        match sh.state {
            TransactionState::InTransaction => Ok(()),
            TransactionState::Uninitialized | TransactionState::Initializing => {
                Err(Error::TransactionState("cannot send before init_transactions completed".into()))
            }
            _ => Err(Self::state_error(&sh, "send")),
        }
    }

    // ------------------------------------------------------------------ coordinator round trips

    async fn transaction_coordinator(&self, slot: &mut Coordinators) -> Result<Arc<Connection>> {
        if let Some(c) = slot.transaction.clone().filter(|c| !c.is_closed()) {
            return Ok(c);
        }
        let id = self.require_transactional("find the transaction coordinator")?;
        let (_, addr) = coordinator::find_for(&self.cluster, id, coordinator::TRANSACTION).await?;
        let c = self.cluster.connect(&addr).await?;
        slot.transaction = Some(c.clone());
        Ok(c)
    }

    async fn group_coordinator(&self, slot: &mut Coordinators, group: &str) -> Result<Arc<Connection>> {
        if let Some((g, c)) = slot.group.clone() {
            if g == group && !c.is_closed() {
                return Ok(c);
            }
        }
        let (_, addr) = coordinator::find_for(&self.cluster, group, coordinator::GROUP).await?;
        let c = self.cluster.connect(&addr).await?;
        slot.group = Some((group.to_string(), c.clone()));
        Ok(c)
    }

    /// Sends `req` to a coordinator until `decide` is satisfied or `max.block.ms` passes. Lost connections and
    /// unknown coordinators are retried; `decide` classifies the broker's answer.
    async fn call_coordinator<R, F>(
        &self,
        slot: &mut Coordinators,
        group: Option<&str>,
        what: &str,
        cap: i16,
        req: &R,
        mut decide: F,
    ) -> Result<R::Response>
    where
        R: Request,
        F: FnMut(&R::Response) -> Next,
    {
        let deadline = Instant::now() + self.max_block;
        let mut last: Option<Error> = None;
        loop {
            if Instant::now() >= deadline {
                let why = last.map(|e| format!(" (last error: {e})")).unwrap_or_default();
                return Err(Error::Timeout(format!("{what}{why}"), self.max_block));
            }
            let conn = match group {
                Some(g) => self.group_coordinator(slot, g).await,
                None => self.transaction_coordinator(slot).await,
            };
            let result = match conn {
                Ok(c) => match c.version_at_most::<R>(cap) {
                    Ok(v) => c.call_version(req, v).await,
                    Err(e) => return Err(e),
                },
                Err(e) => Err(e),
            };
            let mut backoff = self.retry_backoff;
            let (refind, err) = match result {
                Ok(resp) => match decide(&resp) {
                    Next::Done => return Ok(resp),
                    Next::Fail(e) => return Err(e),
                    Next::Retry(refind) => (refind, None),
                    Next::RetrySoon => {
                        backoff = backoff.min(Duration::from_millis(20));
                        (false, None)
                    }
                },
                Err(e) if e.is_retriable() => (true, Some(e)),
                Err(e) => return Err(e),
            };
            if refind {
                match group {
                    Some(_) => slot.group = None,
                    None => slot.transaction = None,
                }
            }
            tracing::debug!(what, error = ?err, "coordinator request will be retried");
            last = err.or(last);
            tokio::time::sleep(backoff).await;
        }
    }

    /// How Java's handlers treat a transaction coordinator's error code.
    fn classify(code: i16, context: impl FnOnce() -> String) -> Next {
        match code {
            0 => Next::Done,
            // NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE: find it again.
            15 | 16 => Next::Retry(true),
            51 => Next::RetrySoon,
            // COORDINATOR_LOAD_IN_PROGRESS, UNKNOWN_TOPIC_OR_PARTITION (metadata propagating), REQUEST_TIMED_OUT.
            14 | 3 | 7 => Next::Retry(false),
            code => Next::Fail(Error::kafka(code, context(), None)),
        }
    }

    /// Moves to the state an operation's error leaves the producer in: fatal for fencing (and unexpected) errors,
    /// abortable for the rest (with an epoch bump when the producer id is unknown to the broker).
    fn fail_operation(&self, err: Error) -> Error {
        let mut sh = self.lock();
        match err.code() {
            _ if err.is_fatal_for_producer() => Self::to_fatal(&mut sh, err.clone()),
            // INVALID_TXN_STATE: the coordinator and the client disagree; Java gives up on the producer.
            Some(48) => Self::to_fatal(&mut sh, err.clone()),
            // Transactions v2 (Java 4.x): INVALID_PRODUCER_ID_MAPPING is fatal, UNKNOWN_PRODUCER_ID abortable (the
            // aborting EndTxn bumps the epoch).
            Some(49) if sh.transaction_v2 => Self::to_fatal(&mut sh, err.clone()),
            Some(59) if sh.transaction_v2 => {
                sh.state = TransactionState::AbortableError;
                sh.last_error = Some(err.clone());
            }
            // v1: UNKNOWN_PRODUCER_ID, INVALID_PRODUCER_ID_MAPPING: abortable, after which InitProducerId bumps the epoch.
            Some(59 | 49) => {
                sh.epoch_bump_required = true;
                sh.state = TransactionState::AbortableError;
                sh.last_error = Some(err.clone());
            }
            // Timeouts leave the state as it is: the application may call the operation again.
            _ if matches!(err, Error::Timeout(..)) => {}
            _ if matches!(sh.state, TransactionState::InTransaction | TransactionState::CommittingTransaction) => {
                sh.state = TransactionState::AbortableError;
                sh.last_error = Some(err.clone());
            }
            _ => {}
        }
        err
    }

    /// InitProducerId with the transactional id: a fresh id/epoch (`bump` false) or, after an abortable error with
    /// a sequence in doubt, the current ones bumped (KIP-360).
    async fn init_producer_id(&self, slot: &mut Coordinators, bump: bool) -> Result<()> {
        let id = self.require_transactional("init_transactions")?;
        let (pid, epoch) = if bump { (self.producer_id(), self.producer_epoch()) } else { (-1, -1) };
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s(id))))
            .with_transaction_timeout_ms(self.transaction_timeout_ms)
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch);
        let resp = self
            .call_coordinator(slot, None, "InitProducerId", i16::MAX, &req, |r| {
                Self::classify(r.error_code, || format!("InitProducerId for transactional id {id}"))
            })
            .await?;
        let mut sh = self.lock();
        sh.producer_id = resp.producer_id.0;
        sh.epoch = resp.producer_epoch;
        sh.sequences.clear();
        sh.epoch_bump_required = false;
        tracing::debug!(
            transactional_id = id,
            producer_id = sh.producer_id,
            epoch = sh.epoch,
            "transactional producer initialised"
        );
        Ok(())
    }

    pub async fn init_transactions(&self) -> Result<()> {
        self.require_transactional("init_transactions")?;
        let mut slot = self.ops.lock().await;
        {
            let mut sh = self.lock();
            match sh.state {
                TransactionState::Uninitialized | TransactionState::Initializing => {
                    sh.state = TransactionState::Initializing
                }
                _ => return Err(Self::state_error(&sh, "init_transactions")),
            }
        }
        match self.init_producer_id(&mut slot, false).await {
            Ok(()) => {
                self.lock().state = TransactionState::Ready;
                // The coordinator's connection is open now, so its features are known.
                self.maybe_update_transaction_v2(true);
                Ok(())
            }
            Err(e) if matches!(e, Error::Timeout(..)) => Err(e),
            Err(e) => {
                Self::to_fatal(&mut self.lock(), e.clone());
                Err(e)
            }
        }
    }

    pub fn begin_transaction(&self) -> Result<()> {
        self.require_transactional("begin_transaction")?;
        let mut sh = self.lock();
        match sh.state {
            TransactionState::Ready => {
                sh.state = TransactionState::InTransaction;
                Ok(())
            }
            _ => Err(Self::state_error(&sh, "begin_transaction")),
        }
    }

    /// Adds `tp` to the transaction unless it already is, before the first write to it: with AddPartitionsToTxn
    /// under v1; under v2 only here (the Produce adds it on the broker).
    pub async fn maybe_add_partition(&self, tp: &TopicPartition) -> Result<()> {
        let Some(id) = self.transactional_id.as_deref() else { return Ok(()) };
        {
            let mut sh = self.lock();
            if sh.partitions_in_transaction.contains(tp) {
                return Ok(());
            }
            if sh.transaction_v2 {
                if sh.state != TransactionState::InTransaction {
                    return Err(Self::state_error(&sh, "send"));
                }
                sh.partitions_in_transaction.insert(tp.clone());
                sh.transaction_started = true;
                return Ok(());
            }
        }
        let mut slot = self.ops.lock().await;
        let (pid, epoch) = {
            let sh = self.lock();
            if sh.partitions_in_transaction.contains(tp) {
                return Ok(());
            }
            if sh.state != TransactionState::InTransaction {
                return Err(Self::state_error(&sh, "send"));
            }
            (sh.producer_id, sh.epoch)
        };
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s(id)))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s(&tp.topic)))
                .with_partitions(vec![tp.partition])]);
        let result = self
            .call_coordinator(&mut slot, None, "AddPartitionsToTxn", ADD_PARTITIONS_CLIENT_MAX, &req, |r| {
                let code = r
                    .results_by_topic_v3_and_below
                    .iter()
                    .flat_map(|t| t.results_by_partition.iter())
                    .map(|p| p.partition_error_code)
                    .find(|c| *c != 0)
                    .unwrap_or(r.error_code);
                Self::classify(code, || format!("AddPartitionsToTxn of {tp}"))
            })
            .await;
        match result {
            Ok(_) => {
                let mut sh = self.lock();
                sh.partitions_in_transaction.insert(tp.clone());
                sh.transaction_started = true;
                Ok(())
            }
            Err(e) => Err(self.fail_operation(e)),
        }
    }

    /// AddOffsetsToTxn to the transaction coordinator (v1 only), then TxnOffsetCommit to the group coordinator (v5
    /// under v2, which adds the offsets to the transaction itself): the offsets become the group's committed offsets
    /// when (and only if) the transaction commits.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        let id = self.require_transactional("send_offsets_to_transaction")?;
        let mut slot = self.ops.lock().await;
        let (pid, epoch, v2) = {
            let mut sh = self.lock();
            if sh.state != TransactionState::InTransaction {
                return Err(Self::state_error(&sh, "send_offsets_to_transaction"));
            }
            if sh.transaction_v2 {
                // Java marks the transaction started before the TxnOffsetCommit: its outcome may be unknown.
                sh.transaction_started = true;
            }
            (sh.producer_id, sh.epoch, sh.transaction_v2)
        };
        if !v2 {
            self.add_offsets_to_txn(&mut slot, id, pid, epoch, &group.group_id).await?;
        }
        let mut topics: BTreeMap<&str, Vec<TxnOffsetCommitRequestPartition>> = BTreeMap::new();
        for (tp, o) in offsets {
            topics.entry(&tp.topic).or_default().push(
                TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(tp.partition)
                    .with_committed_offset(o.offset)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(Some(s(&o.metadata))),
            );
        }
        let commit = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(s(id)))
            .with_group_id(GroupId(s(&group.group_id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_generation_id(group.generation_id)
            .with_member_id(s(&group.member_id))
            .with_group_instance_id(group.group_instance_id.as_deref().map(s))
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        TxnOffsetCommitRequestTopic::default().with_name(TopicName(s(t))).with_partitions(ps)
                    })
                    .collect(),
            );
        let cap = if v2 { TXN_OFFSET_COMMIT_V2_MAX } else { TXN_OFFSET_COMMIT_V1_MAX };
        let result = self
            .call_coordinator(&mut slot, Some(&group.group_id), "TxnOffsetCommit", cap, &commit, |r| {
                let code = r
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .map(|p| p.error_code)
                    .find(|c| *c != 0)
                    .unwrap_or(0);
                match code {
                    // The group coordinator moved, or is loading.
                    15 | 16 | 7 => Next::Retry(true),
                    14 | 3 => Next::Retry(false),
                    51 => Next::RetrySoon,
                    0 => Next::Done,
                    // Any other retriable error, as Java (e.g. NOT_ENOUGH_REPLICAS while the broker adds the
                    // offsets partition to the transaction under v2).
                    code if ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable()) => Next::Retry(false),
                    // UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, FENCED_INSTANCE_ID and the rest: abortable or fatal below.
                    code => {
                        Next::Fail(Error::kafka(code, format!("TxnOffsetCommit for group {}", group.group_id), None))
                    }
                }
            })
            .await;
        result.map(|_| ()).map_err(|e| self.fail_operation(e))
    }

    /// AddOffsetsToTxn (transactions v1): the group's offsets partition joins the transaction.
    async fn add_offsets_to_txn(
        &self,
        slot: &mut Coordinators,
        id: &str,
        pid: i64,
        epoch: i16,
        group_id: &str,
    ) -> Result<()> {
        let add = AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(s(id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(s(group_id)));
        if let Err(e) = self
            .call_coordinator(slot, None, "AddOffsetsToTxn", i16::MAX, &add, |r| {
                Self::classify(r.error_code, || format!("AddOffsetsToTxn for group {group_id}"))
            })
            .await
        {
            return Err(self.fail_operation(e));
        }
        self.lock().transaction_started = true;
        Ok(())
    }

    /// Moves to COMMITTING_TRANSACTION (or stays there when a commit is retried).
    pub fn begin_commit(&self) -> Result<()> {
        self.require_transactional("commit_transaction")?;
        let mut sh = self.lock();
        match sh.state {
            TransactionState::InTransaction | TransactionState::CommittingTransaction => {
                sh.state = TransactionState::CommittingTransaction;
                Ok(())
            }
            _ => Err(Self::state_error(&sh, "commit_transaction")),
        }
    }

    /// Moves to ABORTING_TRANSACTION; allowed after an abortable error too.
    pub fn begin_abort(&self) -> Result<()> {
        self.require_transactional("abort_transaction")?;
        let mut sh = self.lock();
        match sh.state {
            TransactionState::InTransaction
            | TransactionState::AbortableError
            | TransactionState::AbortingTransaction => {
                sh.state = TransactionState::AbortingTransaction;
                Ok(())
            }
            _ => Err(Self::state_error(&sh, "abort_transaction")),
        }
    }

    /// Ends the transaction after the producer's records are flushed: EndTxn, then under v1, for an abort with a
    /// sequence in doubt, InitProducerId with an epoch bump (Java's order: the coordinator fences a producer that
    /// bumps its epoch over an ongoing transaction). Back to READY on success.
    pub async fn end_transaction(&self, committed: bool) -> Result<()> {
        let id = self.require_transactional("end the transaction")?;
        let mut slot = self.ops.lock().await;
        let (pid, epoch, started, bump, v2, unknown_mapping) = {
            let sh = self.lock();
            let expected =
                if committed { TransactionState::CommittingTransaction } else { TransactionState::AbortingTransaction };
            if sh.state != expected {
                // A batch failed during the flush before a commit: the application must abort.
                return Err(Self::state_error(&sh, if committed { "commit_transaction" } else { "abort_transaction" }));
            }
            let unknown_mapping = sh.last_error.as_ref().and_then(Error::code) == Some(49);
            (
                sh.producer_id,
                sh.epoch,
                sh.transaction_started,
                sh.epoch_bump_required,
                sh.transaction_v2,
                unknown_mapping,
            )
        };
        let client_bump = !committed && bump && !v2;
        // INVALID_PRODUCER_ID_MAPPING: the coordinator would refuse the EndTxn too; the bump alone aborts.
        if started && !(client_bump && unknown_mapping) {
            if let Err(e) = self.end_txn(&mut slot, id, pid, epoch, committed, v2).await {
                return Err(self.fail_operation(e));
            }
        }
        if client_bump {
            if let Err(e) = self.init_producer_id(&mut slot, true).await {
                return Err(self.fail_operation(e));
            }
        }
        {
            let mut sh = self.lock();
            sh.state = TransactionState::Ready;
            sh.last_error = None;
            sh.partitions_in_transaction.clear();
            sh.transaction_started = false;
        }
        // The transaction ended under the protocol it began with; the next one may be v2 (Java reads the features
        // as each transaction completes). Moving up to v2 bumps the epoch first.
        if self.maybe_update_transaction_v2(false) {
            if let Err(e) = self.init_producer_id(&mut slot, true).await {
                return Err(self.fail_operation(e));
            }
        }
        Ok(())
    }

    /// EndTxn: v5+ under transactions v2, whose answer carries the producer id and epoch to go on with (the epoch
    /// bumped, or a new producer id when the epoch is exhausted); every sequence restarts at 0 under them.
    async fn end_txn(
        &self,
        slot: &mut Coordinators,
        id: &str,
        pid: i64,
        epoch: i16,
        committed: bool,
        v2: bool,
    ) -> Result<()> {
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s(id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(committed);
        let cap = if v2 { i16::MAX } else { END_TXN_V1_MAX };
        let resp = self
            .call_coordinator(slot, None, "EndTxn", cap, &req, |r| {
                Self::classify(r.error_code, || {
                    format!("EndTxn ({}) of transactional id {id}", if committed { "commit" } else { "abort" })
                })
            })
            .await?;
        // Below v5 the response has no producer id (decoded as -1): the producer keeps its id and epoch.
        if resp.producer_id.0 != -1 {
            let mut sh = self.lock();
            sh.producer_id = resp.producer_id.0;
            sh.epoch = resp.producer_epoch;
            sh.sequences.clear();
            sh.epoch_bump_required = false;
            tracing::debug!(producer_id = sh.producer_id, epoch = sh.epoch, "transaction ended; epoch bumped");
        }
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

    fn manager(transactional: bool) -> TransactionManager {
        let cluster = Cluster::new(crate::config::ClientConfig::default()).unwrap();
        let id = transactional.then(|| "tx".to_string());
        let mut m = TransactionManager::new(cluster, id, Duration::from_secs(60), Duration::from_secs(1), 7, 0);
        if transactional {
            m.shared.get_mut().unwrap().state = TransactionState::Ready;
        }
        m
    }

    #[test]
    fn sequences_advance_per_partition_and_wrap() {
        let i = manager(false);
        let a = TopicPartition::new("t", 0);
        let b = TopicPartition::new("t", 1);
        assert_eq!(i.next(&a, 3).base_sequence, 0);
        assert_eq!(i.next(&a, 2).base_sequence, 3);
        assert_eq!(i.next(&b, 1).base_sequence, 0);
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert_eq!(next_sequence(i32::MAX - 1, 3), 1);
    }

    #[test]
    fn idempotent_failure_bumps_only_that_partitions_epoch() {
        let i = manager(false);
        let a = TopicPartition::new("t", 0);
        let b = TopicPartition::new("t", 1);
        let old = i.next(&a, 5);
        i.next(&b, 5);
        i.handle_failed_batch(&a, &Error::kafka(45, "produce", None), true);
        assert!(i.is_stale(&a, old));
        assert_eq!(i.next(&a, 1), ProducerStamp { producer_id: 7, epoch: 1, base_sequence: 0 });
        assert_eq!(i.next(&b, 1), ProducerStamp { producer_id: 7, epoch: 0, base_sequence: 5 });
    }

    fn features(epoch: i64, transaction_version: Option<i16>) -> crate::connection::FinalizedFeatures {
        crate::connection::FinalizedFeatures {
            epoch,
            levels: transaction_version.map(|v| (TRANSACTION_VERSION_FEATURE.to_string(), v)).into_iter().collect(),
        }
    }

    #[test]
    fn the_finalized_transaction_version_picks_the_protocol() {
        let t = manager(true);
        // No features known, or the feature below 2: v1.
        assert!(!t.maybe_update_transaction_v2(true));
        assert!(!t.is_transaction_v2());
        t.cluster.note_features(features(3, Some(1)));
        assert!(!t.maybe_update_transaction_v2(true));
        assert!(!t.is_transaction_v2());
        // An older epoch is ignored; a newer one at level 2 moves to v2, and outside init asks for an epoch bump.
        t.cluster.note_features(features(2, Some(2)));
        assert!(!t.maybe_update_transaction_v2(false));
        assert!(!t.is_transaction_v2());
        t.cluster.note_features(features(4, Some(2)));
        assert!(t.maybe_update_transaction_v2(false), "v1 to v2 between transactions bumps the epoch");
        assert!(t.is_transaction_v2());
        // Read at init, the same move needs no bump.
        let i = manager(true);
        i.cluster.note_features(features(1, Some(2)));
        assert!(!i.maybe_update_transaction_v2(true));
        assert!(i.is_transaction_v2());
    }

    #[tokio::test]
    async fn under_v2_a_partition_joins_the_transaction_without_a_request() {
        let t = manager(true);
        t.cluster.note_features(features(1, Some(2)));
        t.maybe_update_transaction_v2(true);
        let tp = TopicPartition::new("t", 0);
        assert!(t.maybe_add_partition(&tp).await.is_err(), "outside a transaction");
        t.begin_transaction().unwrap();
        // The manager has no coordinator to reach: this only works because v2 sends nothing.
        t.maybe_add_partition(&tp).await.unwrap();
        let sh = t.lock();
        assert!(sh.partitions_in_transaction.contains(&tp));
        assert!(sh.transaction_started, "any send makes the transaction need an EndTxn");
    }

    #[test]
    fn transaction_states_follow_javas_transitions() {
        let t = manager(true);
        assert!(matches!(t.check_send(), Err(Error::TransactionState(_))), "send outside a transaction");
        t.begin_transaction().unwrap();
        assert!(t.begin_transaction().is_err(), "nested begin");
        t.check_send().unwrap();
        let tp = TopicPartition::new("t", 0);
        // A failed batch makes the transaction abortable: commit refuses, abort is allowed.
        t.handle_failed_batch(&tp, &Error::kafka(87, "produce", None), true);
        assert_eq!(t.state(), TransactionState::AbortableError);
        assert_eq!(t.begin_commit().unwrap_err().code(), Some(87));
        t.begin_abort().unwrap();
        assert!(t.lock().epoch_bump_required);
        // Fencing is fatal: nothing but close is left.
        let f = manager(true);
        f.begin_transaction().unwrap();
        f.handle_failed_batch(&tp, &Error::kafka(90, "produce", None), false);
        assert_eq!(f.state(), TransactionState::FatalError);
        assert!(f.begin_abort().unwrap_err().is_producer_fenced());
        assert!(f.check_send().unwrap_err().is_producer_fenced());
    }
}
