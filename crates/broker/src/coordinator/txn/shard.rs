//! One transaction coordinator shard per hosted `__transaction_state` partition: a single task owns the state of
//! every transactional id that hashes to the partition and handles requests one at a time, so a transition never
//! races another.
//!
//! A change is prepared (the id's `pending_state` blocks others: CONCURRENT_TRANSACTIONS), its record appended,
//! and the change completed when the record is durable (the coordinator runtime, `coordinator/runtime.rs`, runs the
//! write's completion on this shard: `on_appended`). EndTxn
//! writes PrepareCommit/PrepareAbort, answers the client, has the markers written (`markers.rs`), then writes
//! CompleteCommit/CompleteAbort. Loading replays the partition; prepared transactions found there are completed,
//! ongoing ones time out.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use tokio::sync::{mpsc, oneshot};

use super::config::TxnConfig;
use super::markers;
use super::metadata::{
    is_epoch_exhausted, TopicPartition, TransactionMetadata, TxnTransit, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};
use super::records::{decode_key, encode_key, TransactionLogValue, TxnState};
use super::BrokerRef;
use crate::clock::now_ms;
use crate::coordinator::runtime::{CoordinatorRecord, CoordinatorShard, Writes};

/// An InitProducerId or EndTxn answer: (producer id, epoch) or an error, or a request for a fresh producer id,
/// which the handler allocates off this task (it may commit a new id block to the metadata log) and sends again.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Done(Result<(i64, i16), ResponseError>),
    NeedProducerId,
}

/// DescribeTransactions' view of one transactional id.
#[derive(Clone, Debug)]
pub struct DescribedTransaction {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub state: TxnState,
    pub timeout_ms: i32,
    pub start_timestamp: i64,
    pub partitions: BTreeSet<TopicPartition>,
}

/// ListTransactions' view of one transactional id.
#[derive(Clone, Debug)]
pub struct ListedTransaction {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: TxnState,
}

/// ListTransactions' filters; empty sets match everything, a negative duration too.
#[derive(Default)]
pub struct ListFilter {
    pub states: BTreeSet<TxnState>,
    pub producer_ids: BTreeSet<i64>,
    pub min_duration_ms: i64,
    /// Matched against the whole transactional id.
    pub pattern: Option<regex_automata::meta::Regex>,
}

pub enum Request {
    InitProducerId {
        transactional_id: String,
        timeout_ms: i32,
        /// KIP-360: the producer's current id and epoch, when it asks for a bump.
        expected: Option<(i64, i16)>,
        fresh_producer_id: Option<i64>,
        tx: oneshot::Sender<Answer>,
    },
    AddPartitions {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        partitions: BTreeSet<TopicPartition>,
        client_transaction_version: i16,
        /// Wait (up to the park time) while the producer's previous transaction completes, instead of answering
        /// CONCURRENT_TRANSACTIONS at once. Not for callers holding the producer's append guard, which the
        /// completion's markers wait for.
        wait: bool,
        tx: oneshot::Sender<Option<ResponseError>>,
    },
    /// KIP-890 part 1: are these partitions in the producer's ongoing transaction?
    VerifyPartitions {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<TopicPartition>,
        tx: oneshot::Sender<Vec<(TopicPartition, Option<ResponseError>)>>,
    },
    EndTxn {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        client_transaction_version: i16,
        next_producer_id: Option<i64>,
        tx: oneshot::Sender<Answer>,
    },
    Describe {
        transactional_id: String,
        tx: oneshot::Sender<Result<DescribedTransaction, ResponseError>>,
    },
    List {
        filter: Arc<ListFilter>,
        tx: oneshot::Sender<Vec<ListedTransaction>>,
    },
    /// Every marker of a prepared transaction is written: persist its completion.
    MarkersWritten {
        transactional_id: String,
        transit: TxnTransit,
    },
}

/// What to do once a transition's record is durable.
pub enum After {
    InitProducerId(oneshot::Sender<Answer>),
    AddPartitions(oneshot::Sender<Option<ResponseError>>),
    /// PrepareCommit/PrepareAbort: answer, then write the markers.
    Prepared {
        commit: bool,
        producer_id: i64,
        producer_epoch: i16,
        client_transaction_version: i16,
        is_epoch_fence: bool,
        reply: EndReply,
    },
    Completed,
    Dead,
}

/// Who waits for an EndTxn-like transition.
pub enum EndReply {
    Client(oneshot::Sender<Answer>),
    /// InitProducerId fencing an ongoing transaction: answered CONCURRENT_TRANSACTIONS once the abort is prepared,
    /// so the producer retries and gets the next epoch.
    Fence(oneshot::Sender<Answer>),
    /// The coordinator aborting a timed-out transaction.
    Timeout,
}

impl EndReply {
    fn send(self, result: Result<(i64, i16), ResponseError>) {
        match self {
            EndReply::Client(tx) => {
                let _ = tx.send(Answer::Done(result));
            }
            EndReply::Fence(tx) => {
                let result = match result {
                    Ok(_) => Err(ResponseError::ConcurrentTransactions),
                    Err(e) => Err(e),
                };
                let _ = tx.send(Answer::Done(result));
            }
            EndReply::Timeout => {
                if let Err(e) = result {
                    tracing::debug!(error = ?e, "rollback of a timed-out transaction did not start");
                }
            }
        }
    }

    fn need_producer_id(self) {
        match self {
            EndReply::Client(tx) | EndReply::Fence(tx) => {
                let _ = tx.send(Answer::NeedProducerId);
            }
            EndReply::Timeout => {}
        }
    }
}

/// What an EndTxn-like request leads to.
enum EndDecision {
    Write(TxnTransit),
    /// Answered without a write: an error, or success for a retry of an end that is already done.
    Answer(Result<(i64, i16), ResponseError>),
    /// The epoch is exhausted and the transition needs the next producer id.
    NeedProducerId,
}

/// Records to append and the transitions waiting on them (the runtime's `Writes`).
pub type Effects = Writes<Shard>;

impl Writes<Shard> {
    /// Writes the transition's record; once it is durable (or failed) the transition completes in `on_appended`.
    fn write(&mut self, transactional_id: &str, transit: TxnTransit, then: After) {
        let value = if transit.state == TxnState::Dead { None } else { Some(transit.to_record().encode()) };
        self.append_record(encode_key(transactional_id), value);
        let id = transactional_id.to_string();
        self.on_complete(move |shard: &mut Shard, result, fx| shard.on_appended(&id, transit, result.err(), then, fx));
    }
}

pub struct Shard {
    pub partition_index: i32,
    config: Arc<TxnConfig>,
    broker: BrokerRef,
    self_tx: mpsc::WeakUnboundedSender<Request>,
    /// The `__transaction_state` partition's leader epoch when this shard loaded it (Kafka's coordinator epoch),
    /// carried by the markers so that a stale coordinator's markers can be told apart.
    coordinator_epoch: i32,
    pub txns: HashMap<String, TransactionMetadata>,
    /// AddPartitionsToTxn requests that arrived while the same producer's previous transaction was still being
    /// completed (markers and CompleteCommit/CompleteAbort being written), with their deadline. Kafka answers them
    /// CONCURRENT_TRANSACTIONS at once and clients retry after 20 ms or more, which bounded back-to-back
    /// transactions at ~40/s; holding them for the few milliseconds the completion takes answers them as soon as it
    /// is done. Past the deadline they get Kafka's CONCURRENT_TRANSACTIONS.
    parked: HashMap<String, Vec<(Instant, Request)>>,
    /// When the two periodic jobs run next (Kafka's abortTimedOutTransactions and removeExpiredTransactionalIds).
    next_abort: tokio::time::Instant,
    next_expire: tokio::time::Instant,
}

/// How long an AddPartitionsToTxn waits for the previous transaction's completion before CONCURRENT_TRANSACTIONS.
const PARK_WAIT: Duration = Duration::from_millis(200);

/// Kafka's appendTransactionToLog error mapping: what a client is told when the coordinator's write failed.
fn append_error_to_client(e: ResponseError) -> ResponseError {
    match e {
        ResponseError::UnknownTopicOrPartition
        | ResponseError::NotEnoughReplicas
        | ResponseError::NotEnoughReplicasAfterAppend
        | ResponseError::RequestTimedOut
        | ResponseError::KafkaStorageError => ResponseError::CoordinatorNotAvailable,
        ResponseError::NotLeaderOrFollower => ResponseError::NotCoordinator,
        ResponseError::CoordinatorNotAvailable | ResponseError::NotCoordinator => e,
        _ => ResponseError::UnknownServerError,
    }
}

impl Shard {
    pub fn new(
        partition_index: i32,
        config: Arc<TxnConfig>,
        broker: BrokerRef,
        self_tx: mpsc::WeakUnboundedSender<Request>,
        coordinator_epoch: i32,
    ) -> Shard {
        Shard {
            partition_index,
            config,
            broker,
            self_tx,
            coordinator_epoch,
            txns: HashMap::new(),
            parked: HashMap::new(),
            next_abort: tokio::time::Instant::now(),
            next_expire: tokio::time::Instant::now(),
        }
    }

    /// Applies one record of the partition while loading: the latest record of an id is its state.
    pub fn replay(&mut self, key: &[u8], value: Option<&[u8]>) {
        let id = match decode_key(key) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(partition = self.partition_index, error = %e, "skipping unreadable __transaction_state key");
                return;
            }
        };
        match value {
            None => {
                self.txns.remove(&id);
            }
            Some(v) => match TransactionLogValue::decode(v) {
                Ok(v) => {
                    self.txns.insert(id.clone(), TransactionMetadata::from_record(&id, &v));
                }
                Err(e) => {
                    tracing::warn!(transactional_id = %id, error = %e, "skipping unreadable transaction state value")
                }
            },
        }
    }

    /// After loading: transactions whose PrepareCommit/PrepareAbort is in the log get their markers written and
    /// are completed (Kafka's loadTransactionsForTxnTopicPartition). Ongoing ones are left to the timeout.
    fn complete_prepared_after_load(&mut self) {
        let now = now_ms();
        let prepared: Vec<String> = self
            .txns
            .iter()
            .filter(|(_, m)| matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort))
            .map(|(id, _)| id.clone())
            .collect();
        for id in prepared {
            let Some(m) = self.txns.get_mut(&id) else { continue };
            let commit = m.state == TxnState::PrepareCommit;
            match m.prepare_complete(now) {
                Ok(transit) => {
                    tracing::info!(transactional_id = %id, commit, "completing a prepared transaction found while loading");
                    self.send_markers(&id, commit, transit);
                }
                Err(e) => {
                    tracing::error!(transactional_id = %id, error = ?e, "cannot complete a loaded prepared transaction")
                }
            }
        }
    }

    fn send_markers(&self, id: &str, commit: bool, transit: TxnTransit) {
        let Some(m) = self.txns.get(id) else { return };
        let job = markers::MarkerJob {
            transactional_id: id.to_string(),
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
            coordinator_epoch: self.coordinator_epoch,
            commit,
            partitions: m.partitions.clone(),
            transit,
        };
        tokio::spawn(markers::run(self.broker.clone(), self.self_tx.clone(), job));
    }

    fn handle(&mut self, r: Request, fx: &mut Effects) {
        match r {
            Request::InitProducerId { transactional_id, timeout_ms, expected, fresh_producer_id, tx } => {
                self.init_producer_id(&transactional_id, timeout_ms, expected, fresh_producer_id, tx, fx)
            }
            r @ Request::AddPartitions { .. } if self.completing(&r) => self.park(r),
            Request::AddPartitions {
                transactional_id,
                producer_id,
                producer_epoch,
                partitions,
                client_transaction_version,
                tx,
                ..
            } => {
                match self.add_partitions(
                    &transactional_id,
                    producer_id,
                    producer_epoch,
                    &partitions,
                    client_transaction_version,
                ) {
                    Ok(Some(transit)) => fx.write(&transactional_id, transit, After::AddPartitions(tx)),
                    Ok(None) => {
                        let _ = tx.send(None);
                    }
                    Err(e) => {
                        let _ = tx.send(Some(e));
                    }
                }
            }
            Request::VerifyPartitions { transactional_id, producer_id, producer_epoch, partitions, tx } => {
                let _ = tx.send(self.verify_partitions(&transactional_id, producer_id, producer_epoch, partitions));
            }
            Request::EndTxn {
                transactional_id,
                producer_id,
                producer_epoch,
                commit,
                client_transaction_version,
                next_producer_id,
                tx,
            } => self.end_transaction(
                &transactional_id,
                producer_id,
                producer_epoch,
                commit,
                true,
                client_transaction_version,
                next_producer_id,
                EndReply::Client(tx),
                fx,
            ),
            Request::Describe { transactional_id, tx } => {
                let _ = tx.send(self.describe(&transactional_id));
            }
            Request::List { filter, tx } => {
                let _ = tx.send(self.list(&filter));
            }
            Request::MarkersWritten { transactional_id, transit } => {
                tracing::debug!(transactional_id = %transactional_id, state = transit.state.name(), "markers written; completing");
                fx.write(&transactional_id, transit, After::Completed);
            }
        }
    }

    fn init_producer_id(
        &mut self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        fresh_producer_id: Option<i64>,
        tx: oneshot::Sender<Answer>,
        fx: &mut Effects,
    ) {
        let now = now_ms();
        let done = |tx: oneshot::Sender<Answer>, r: Result<(i64, i16), ResponseError>| {
            let _ = tx.send(Answer::Done(r));
        };
        // The id is the key of its __transaction_state records, a string of at most i16::MAX bytes: refused rather
        // than truncated (which would give two ids one record key). Kafka fails to serialise such a record.
        if id.len() > i16::MAX as usize {
            return done(tx, Err(ResponseError::InvalidRequest));
        }
        let mut fresh = fresh_producer_id;
        if !self.txns.contains_key(id) {
            let Some(pid) = fresh.take() else {
                let _ = tx.send(Answer::NeedProducerId);
                return;
            };
            self.txns.insert(id.to_string(), TransactionMetadata::new(id, pid, timeout_ms, now));
        }
        let Some(m) = self.txns.get_mut(id) else { return };
        // Kafka's isValidProducerId: a just-created id, the current id, or the previous one with an exhausted epoch
        // (a retry of a bump that rotated the id).
        let valid = |(pid, epoch): (i64, i16)| {
            m.producer_epoch == NO_PRODUCER_EPOCH
                || pid == m.producer_id
                || (pid == m.previous_producer_id && is_epoch_exhausted(epoch))
        };
        if m.pending_transition_in_progress() {
            return done(tx, Err(ResponseError::ConcurrentTransactions));
        }
        if !expected.is_none_or(valid) {
            return done(tx, Err(ResponseError::ProducerFenced));
        }
        let transit = match m.state {
            TxnState::PrepareAbort | TxnState::PrepareCommit => {
                return done(tx, Err(ResponseError::ConcurrentTransactions))
            }
            TxnState::CompleteAbort | TxnState::CompleteCommit | TxnState::Empty => {
                if m.is_producer_epoch_exhausted() && expected.is_none_or(|(_, e)| e == m.producer_epoch) {
                    let Some(pid) = fresh else {
                        let _ = tx.send(Answer::NeedProducerId);
                        return;
                    };
                    m.prepare_producer_id_rotation(pid, timeout_ms, now, expected.is_some())
                } else {
                    m.prepare_increment_producer_epoch(timeout_ms, expected.map(|(_, e)| e), now)
                }
            }
            TxnState::Ongoing => {
                // Fence the old producer: abort its transaction with a bumped epoch it never sees, and have this
                // one retry (it then gets the epoch after that).
                match m.prepare_fence_producer_epoch() {
                    Ok(t) => {
                        // The abort follows the transaction's own version (as Kafka 4.3 does): a v1 client's
                        // transaction is aborted at the fencing epoch, a v2 one's one further.
                        let (pid, epoch, tv) = (t.producer_id, t.producer_epoch, t.client_transaction_version);
                        self.end_transaction(id, pid, epoch, false, false, tv, None, EndReply::Fence(tx), fx);
                        return;
                    }
                    Err(e) => Err(e),
                }
            }
            TxnState::Dead | TxnState::PrepareEpochFence => {
                tracing::error!(transactional_id = %id, state = m.state.name(), "InitProducerId found an illegal state");
                Err(ResponseError::UnknownServerError)
            }
        };
        match transit {
            Ok(t) => fx.write(id, t, After::InitProducerId(tx)),
            Err(e) => done(tx, Err(e)),
        }
    }

    /// Ok(None): nothing to write (the partitions are already in the ongoing transaction).
    fn add_partitions(
        &mut self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &BTreeSet<TopicPartition>,
        client_transaction_version: i16,
    ) -> Result<Option<TxnTransit>, ResponseError> {
        if id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        let m = self.txns.get_mut(id).ok_or(ResponseError::InvalidProducerIdMapping)?;
        // A pending transition first: with transactions v2 the producer may already use the id or epoch that the
        // pending completion is about to make current.
        if m.pending_transition_in_progress() {
            return Err(ResponseError::ConcurrentTransactions);
        }
        if m.producer_id != producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if m.producer_epoch != producer_epoch {
            return Err(ResponseError::ProducerFenced);
        }
        if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return Err(ResponseError::ConcurrentTransactions);
        }
        if m.state == TxnState::Ongoing && partitions.is_subset(&m.partitions) {
            return Ok(None);
        }
        m.prepare_add_partitions(partitions, now_ms(), client_transaction_version).map(Some)
    }

    fn verify_partitions(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<TopicPartition>,
    ) -> Vec<(TopicPartition, Option<ResponseError>)> {
        let all = |e: ResponseError| partitions.iter().map(|p| (p.clone(), Some(e))).collect::<Vec<_>>();
        if id.is_empty() {
            return all(ResponseError::InvalidRequest);
        }
        let Some(m) = self.txns.get(id) else { return all(ResponseError::InvalidProducerIdMapping) };
        if m.producer_id != producer_id {
            return all(ResponseError::InvalidProducerIdMapping);
        }
        if m.producer_epoch != producer_epoch {
            return all(ResponseError::ProducerFenced);
        }
        if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return all(ResponseError::ConcurrentTransactions);
        }
        // Partitions join the state when their AddPartitions record is durable and leave it with the completion.
        let in_txn = m.state == TxnState::Ongoing;
        partitions
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    if in_txn && m.partitions.contains(p) { None } else { Some(ResponseError::TransactionAbortable) },
                )
            })
            .collect()
    }

    /// Kafka's endTransaction, in both flavours: transactions v1 (the epoch stays) and v2 (the epoch moves on at
    /// every end, and a retried EndTxn is recognised by its epoch being one behind).
    #[allow(clippy::too_many_arguments)]
    fn end_transaction(
        &mut self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        is_from_client: bool,
        client_transaction_version: i16,
        next_producer_id: Option<i64>,
        reply: EndReply,
        fx: &mut Effects,
    ) {
        if id.is_empty() {
            return reply.send(Err(ResponseError::InvalidRequest));
        }
        let Some(m) = self.txns.get_mut(id) else {
            return reply.send(Err(ResponseError::InvalidProducerIdMapping));
        };
        let now = now_ms();
        let invalid_state = |m: &TransactionMetadata| {
            tracing::warn!(transactional_id = %m.transactional_id, state = m.state.name(), commit, "EndTxn in a state that does not allow it");
            Err(ResponseError::InvalidTxnState)
        };
        let target = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
        let is_epoch_fence = m.pending_state == Some(TxnState::PrepareEpochFence);

        let v2 = client_transaction_version >= 2;
        let decision: EndDecision = if !v2 {
            if m.producer_id != producer_id {
                EndDecision::Answer(Err(ResponseError::InvalidProducerIdMapping))
            } else if (is_from_client && producer_epoch != m.producer_epoch) || producer_epoch < m.producer_epoch {
                EndDecision::Answer(Err(ResponseError::ProducerFenced))
            } else if m.pending_transition_in_progress() && !is_epoch_fence {
                EndDecision::Answer(Err(ResponseError::ConcurrentTransactions))
            } else {
                match m.state {
                    TxnState::Ongoing => {
                        if !commit && is_epoch_fence {
                            m.pending_state = None;
                            // The fenced epoch stays the "last" one: a producer re-initialising with it (KIP-360,
                            // the abort of a transaction with a sequence in doubt) gets the fencing epoch, as
                            // Kafka 4.3.1 answers, rather than PRODUCER_FENCED.
                            m.last_producer_epoch = m.producer_epoch;
                            m.producer_epoch = producer_epoch;
                        }
                        m.prepare_abort_or_commit(target, 0, NO_PRODUCER_ID, now, false, is_epoch_fence)
                            .map_or_else(|e| EndDecision::Answer(Err(e)), EndDecision::Write)
                    }
                    TxnState::CompleteCommit if commit => EndDecision::Answer(Ok((NO_PRODUCER_ID, NO_PRODUCER_EPOCH))),
                    TxnState::CompleteAbort if !commit => EndDecision::Answer(Ok((NO_PRODUCER_ID, NO_PRODUCER_EPOCH))),
                    TxnState::PrepareCommit if commit => {
                        EndDecision::Answer(Err(ResponseError::ConcurrentTransactions))
                    }
                    TxnState::PrepareAbort if !commit => {
                        EndDecision::Answer(Err(ResponseError::ConcurrentTransactions))
                    }
                    TxnState::Dead | TxnState::PrepareEpochFence => {
                        EndDecision::Answer(Err(ResponseError::UnknownServerError))
                    }
                    _ => EndDecision::Answer(invalid_state(m)),
                }
            }
        } else {
            let (current_pid, current_epoch) = (m.producer_id, m.producer_epoch);
            let retry_on_overflow = !is_epoch_fence
                && m.previous_producer_id == producer_id
                && producer_epoch == i16::MAX - 1
                && m.producer_epoch == 0;
            let retry_on_epoch_bump = !is_epoch_fence && m.producer_epoch as i32 == producer_epoch as i32 + 1;
            let valid_epoch = if !is_epoch_fence {
                match m.state {
                    TxnState::Ongoing | TxnState::Empty | TxnState::Dead | TxnState::PrepareEpochFence => {
                        producer_epoch == m.producer_epoch
                    }
                    TxnState::PrepareCommit | TxnState::PrepareAbort => retry_on_epoch_bump,
                    TxnState::CompleteCommit | TxnState::CompleteAbort => {
                        retry_on_epoch_bump || retry_on_overflow || producer_epoch == m.producer_epoch
                    }
                }
            } else {
                (!is_from_client || producer_epoch == m.producer_epoch) && producer_epoch >= m.producer_epoch
            };
            let is_retry = retry_on_epoch_bump || retry_on_overflow;
            // A pending transition is checked first, as in Kafka's v2 path: while the previous transaction completes
            // (PrepareCommit/PrepareAbort with the epoch already bumped), the producer's next EndTxn carries the new
            // epoch, which the epoch checks below would call fenced; it must retry instead. With an exhausted epoch
            // the producer may also use the new producer id that is still only pending.
            if m.pending_transition_in_progress() && !is_epoch_fence {
                EndDecision::Answer(Err(ResponseError::ConcurrentTransactions))
            } else if m.producer_id != producer_id && !retry_on_overflow {
                EndDecision::Answer(Err(ResponseError::InvalidProducerIdMapping))
            } else if !valid_epoch {
                EndDecision::Answer(Err(ResponseError::ProducerFenced))
            } else {
                // The transition, with a new producer id when this end exhausts the epoch.
                let complete = |m: &mut TransactionMetadata, state: TxnState, no_partition_added: bool| {
                    let next = if !is_epoch_fence && m.is_producer_epoch_exhausted() {
                        match next_producer_id {
                            Some(p) => p,
                            None => return EndDecision::NeedProducerId,
                        }
                    } else {
                        NO_PRODUCER_ID
                    };
                    if state == TxnState::PrepareAbort && is_epoch_fence {
                        m.pending_state = None;
                        m.last_producer_epoch = m.producer_epoch;
                        m.producer_epoch = producer_epoch;
                    }
                    m.prepare_abort_or_commit(
                        state,
                        client_transaction_version,
                        next,
                        now,
                        no_partition_added,
                        is_epoch_fence,
                    )
                    .map_or_else(|e| EndDecision::Answer(Err(e)), EndDecision::Write)
                };
                match m.state {
                    TxnState::Ongoing => complete(m, target, false),
                    TxnState::CompleteCommit if commit => {
                        if is_retry {
                            EndDecision::Answer(Ok((current_pid, current_epoch)))
                        } else {
                            EndDecision::Answer(invalid_state(m))
                        }
                    }
                    TxnState::CompleteCommit => {
                        if is_retry {
                            EndDecision::Answer(invalid_state(m))
                        } else {
                            complete(m, TxnState::PrepareAbort, true)
                        }
                    }
                    TxnState::CompleteAbort if !commit => {
                        if is_retry {
                            EndDecision::Answer(Ok((current_pid, current_epoch)))
                        } else {
                            complete(m, TxnState::PrepareAbort, true)
                        }
                    }
                    TxnState::PrepareCommit if commit => {
                        EndDecision::Answer(Err(ResponseError::ConcurrentTransactions))
                    }
                    TxnState::PrepareAbort if !commit => {
                        EndDecision::Answer(Err(ResponseError::ConcurrentTransactions))
                    }
                    TxnState::Empty if !commit => complete(m, TxnState::PrepareAbort, true),
                    TxnState::Dead | TxnState::PrepareEpochFence => {
                        EndDecision::Answer(Err(ResponseError::UnknownServerError))
                    }
                    _ => EndDecision::Answer(invalid_state(m)),
                }
            }
        };
        match decision {
            EndDecision::Write(transit) => {
                let then = After::Prepared {
                    commit,
                    producer_id,
                    producer_epoch,
                    client_transaction_version,
                    is_epoch_fence,
                    reply,
                };
                fx.write(id, transit, then);
            }
            EndDecision::NeedProducerId => reply.need_producer_id(),
            EndDecision::Answer(answer) => {
                if is_epoch_fence {
                    // The fence did not go ahead: the epoch it prepared is dropped with its pending state.
                    if let Some(m) = self.txns.get_mut(id) {
                        if m.pending_state == Some(TxnState::PrepareEpochFence) {
                            m.abort_transition();
                        }
                    }
                }
                reply.send(answer)
            }
        }
    }

    fn on_appended(
        &mut self,
        id: &str,
        transit: TxnTransit,
        error: Option<ResponseError>,
        then: After,
        fx: &mut Effects,
    ) {
        let Some(m) = self.txns.get_mut(id) else {
            tracing::warn!(transactional_id = %id, "append completed for a transactional id no longer loaded");
            return;
        };
        if let Some(e) = error {
            tracing::warn!(transactional_id = %id, state = transit.state.name(), error = ?e, "writing transaction state failed");
            match then {
                After::Completed => {
                    // Kafka retries the completion until it is written; the id stays pending meanwhile.
                    let weak = self.self_tx.clone();
                    let id = id.to_string();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if let Some(tx) = weak.upgrade() {
                            let _ = tx.send(Request::MarkersWritten { transactional_id: id, transit });
                        }
                    });
                    return;
                }
                After::InitProducerId(tx) => {
                    m.abort_transition();
                    let _ = tx.send(Answer::Done(Err(append_error_to_client(e))));
                }
                After::AddPartitions(tx) => {
                    m.abort_transition();
                    let _ = tx.send(Some(append_error_to_client(e)));
                }
                After::Prepared { is_epoch_fence, reply, .. } => {
                    m.abort_transition();
                    if is_epoch_fence {
                        m.has_failed_epoch_fence = true;
                    }
                    reply.send(Err(append_error_to_client(e)));
                }
                After::Dead => m.abort_transition(),
            }
            return;
        }
        if transit.state == TxnState::Dead {
            if m.pending_state == Some(TxnState::Dead) {
                self.txns.remove(id);
                tracing::info!(transactional_id = %id, "expired transactional id");
            }
            return;
        }
        m.complete_transition(&transit);
        match then {
            After::InitProducerId(tx) => {
                tracing::info!(
                    transactional_id = %id, producer_id = transit.producer_id, epoch = transit.producer_epoch,
                    partition = self.partition_index, "initialized transactional id"
                );
                let _ = tx.send(Answer::Done(Ok((transit.producer_id, transit.producer_epoch))));
            }
            After::AddPartitions(tx) => {
                let _ = tx.send(None);
            }
            After::Prepared { commit, producer_id, producer_epoch, client_transaction_version, reply, .. } => {
                // Kafka's preSend checks: the state is still the one this request prepared.
                let v2 = client_transaction_version >= 2;
                let check = if m.producer_id != producer_id {
                    Err(ResponseError::InvalidProducerIdMapping)
                } else if m.producer_epoch != producer_epoch
                    && !(v2 && m.producer_epoch as i32 == producer_epoch as i32 + 1)
                {
                    Err(ResponseError::ProducerFenced)
                } else if m.pending_transition_in_progress() {
                    Err(ResponseError::ConcurrentTransactions)
                } else if (commit && m.state == TxnState::PrepareCommit)
                    || (!commit && m.state == TxnState::PrepareAbort)
                {
                    m.prepare_complete(now_ms())
                } else {
                    Err(ResponseError::InvalidTxnState)
                };
                match check {
                    Ok(complete) => {
                        // The client may go on as soon as the decision is durable; markers follow.
                        let answer = if m.next_producer_id != NO_PRODUCER_ID && m.client_transaction_version >= 2 {
                            (m.next_producer_id, 0)
                        } else if v2 {
                            (m.producer_id, m.producer_epoch)
                        } else {
                            (NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
                        };
                        reply.send(Ok(answer));
                        self.send_markers(id, commit, complete);
                    }
                    Err(e) => reply.send(Err(e)),
                }
            }
            After::Completed => {
                tracing::debug!(transactional_id = %id, state = transit.state.name(), "transaction completed");
                for (_, r) in self.parked.remove(id).unwrap_or_default() {
                    self.handle(r, fx);
                }
            }
            After::Dead => {}
        }
        let _ = fx;
    }

    /// An AddPartitionsToTxn that may wait, of a producer whose previous transaction is being completed.
    fn completing(&self, r: &Request) -> bool {
        let Request::AddPartitions { transactional_id, producer_id, wait: true, .. } = r else { return false };
        self.txns.get(transactional_id.as_str()).is_some_and(|m| {
            matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) && m.producer_id == *producer_id
        })
    }

    fn park(&mut self, r: Request) {
        let Request::AddPartitions { transactional_id, .. } = &r else { return };
        let id = transactional_id.clone();
        // Answered by `on_timers` past the deadline, if the completion has not released it by then.
        self.parked.entry(id).or_default().push((Instant::now() + PARK_WAIT, r));
    }

    /// The earliest deadline of a parked request.
    fn next_park_deadline(&self) -> Option<Instant> {
        self.parked.values().flatten().map(|(deadline, _)| *deadline).min()
    }

    fn expire_parked(&mut self, id: &str) {
        let Some(list) = self.parked.get_mut(id) else { return };
        let now = Instant::now();
        // `now` is read after the timer's: a request due at the timer is due here.
        let (expired, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(list).into_iter().partition(|(deadline, _)| *deadline <= now);
        *list = waiting;
        if list.is_empty() {
            self.parked.remove(id);
        }
        for (_, r) in expired {
            if let Request::AddPartitions { tx, .. } = r {
                let _ = tx.send(Some(ResponseError::ConcurrentTransactions));
            }
        }
    }

    fn describe(&self, id: &str) -> Result<DescribedTransaction, ResponseError> {
        if id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        match self.txns.get(id) {
            Some(m) if m.state != TxnState::Dead => Ok(DescribedTransaction {
                producer_id: m.producer_id,
                producer_epoch: m.producer_epoch,
                state: m.state,
                timeout_ms: m.timeout_ms,
                start_timestamp: m.start_timestamp,
                partitions: m.partitions.clone(),
            }),
            _ => Err(ResponseError::TransactionalIdNotFound),
        }
    }

    fn list(&self, f: &ListFilter) -> Vec<ListedTransaction> {
        let now = now_ms();
        self.txns
            .values()
            .filter(|m| m.state != TxnState::Dead)
            .filter(|m| f.producer_ids.is_empty() || f.producer_ids.contains(&m.producer_id))
            .filter(|m| f.states.is_empty() || f.states.contains(&m.state))
            .filter(|m| f.min_duration_ms < 0 || now - m.start_timestamp > f.min_duration_ms)
            .filter(|m| f.pattern.as_ref().is_none_or(|re| re.is_match(&m.transactional_id)))
            .map(|m| ListedTransaction {
                transactional_id: m.transactional_id.clone(),
                producer_id: m.producer_id,
                state: m.state,
            })
            .collect()
    }

    /// Kafka's abortTimedOutTransactions: an ongoing transaction past its timeout is aborted with a bumped epoch,
    /// which fences the producer that let it time out.
    fn abort_timed_out(&mut self, fx: &mut Effects) {
        let now = now_ms();
        let timed_out: Vec<String> = self
            .txns
            .values()
            .filter(|m| !m.pending_transition_in_progress() && m.state == TxnState::Ongoing)
            .filter(|m| m.start_timestamp + (m.timeout_ms as i64) < now)
            .map(|m| m.transactional_id.clone())
            .collect();
        for id in timed_out {
            let Some(m) = self.txns.get_mut(&id) else { continue };
            match m.prepare_fence_producer_epoch() {
                Ok(t) => {
                    tracing::info!(transactional_id = %id, producer_id = t.producer_id, epoch = t.producer_epoch, "aborting a timed-out transaction");
                    let (pid, epoch, tv) = (t.producer_id, t.producer_epoch, t.client_transaction_version);
                    self.end_transaction(&id, pid, epoch, false, false, tv, None, EndReply::Timeout, fx);
                }
                Err(e) => tracing::warn!(transactional_id = %id, error = ?e, "cannot fence a timed-out transaction"),
            }
        }
    }

    /// Kafka's removeExpiredTransactionalIds: idle ids in a completed state are tombstoned.
    fn remove_expired(&mut self, fx: &mut Effects) {
        let now = now_ms();
        let expiry = self.config.transactional_id_expiration_ms;
        let expired: Vec<String> = self
            .txns
            .values()
            .filter(|m| !m.pending_transition_in_progress())
            .filter(|m| matches!(m.state, TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort))
            .filter(|m| m.last_update_timestamp <= now - expiry)
            .map(|m| m.transactional_id.clone())
            .collect();
        for id in expired {
            let Some(m) = self.txns.get_mut(&id) else { continue };
            if let Ok(t) = m.prepare_dead() {
                fx.write(&id, t, After::Dead);
            }
        }
    }
}

impl CoordinatorShard for Shard {
    type Request = Request;

    fn replay(&mut self, record: CoordinatorRecord) {
        if let CoordinatorRecord::Record { key, value } = record {
            Shard::replay(self, &key, value.as_deref());
        }
    }

    fn on_loaded(&mut self, _writes: &mut Effects) {
        self.complete_prepared_after_load();
        let now = tokio::time::Instant::now();
        self.next_abort = now + Duration::from_millis(self.config.abort_timed_out_interval_ms);
        self.next_expire = now + Duration::from_millis(self.config.remove_expired_interval_ms);
    }

    fn handle(&mut self, request: Request, writes: &mut Effects) {
        Shard::handle(self, request, writes)
    }

    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        let periodic = self.next_abort.min(self.next_expire);
        Some(self.next_park_deadline().map_or(periodic, |d| periodic.min(tokio::time::Instant::from_std(d))))
    }

    fn on_timers(&mut self, now: tokio::time::Instant, writes: &mut Effects) {
        let due: Vec<String> = self
            .parked
            .iter()
            .filter(|(_, list)| list.iter().any(|(deadline, _)| *deadline <= now.into_std()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.expire_parked(&id);
        }
        if self.next_abort <= now {
            self.abort_timed_out(writes);
            self.next_abort = now + Duration::from_millis(self.config.abort_timed_out_interval_ms);
        }
        if self.next_expire <= now {
            self.remove_expired(writes);
            self.next_expire = now + Duration::from_millis(self.config.remove_expired_interval_ms);
        }
    }

    fn loaded_summary(&self) -> String {
        format!("transactional_ids={}", self.txns.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard() -> Shard {
        let (tx, _rx) = mpsc::unbounded_channel();
        Shard::new(0, Arc::new(TxnConfig::default()), std::sync::Weak::new(), tx.downgrade(), 0)
    }

    fn init(
        s: &mut Shard,
        fx: &mut Effects,
        fresh: Option<i64>,
        expected: Option<(i64, i16)>,
    ) -> oneshot::Receiver<Answer> {
        let (tx, rx) = oneshot::channel();
        s.handle(
            Request::InitProducerId {
                transactional_id: "t".into(),
                timeout_ms: 60000,
                expected,
                fresh_producer_id: fresh,
                tx,
            },
            fx,
        );
        rx
    }

    /// Completes every write of `fx` as if it were durable.
    fn durable(s: &mut Shard, fx: Effects) -> Effects {
        fx.complete(s, Ok(()))
    }

    #[test]
    fn init_asks_for_a_producer_id_for_a_new_id_and_when_the_epoch_is_exhausted() {
        let mut s = shard();
        let mut fx = Effects::default();
        let mut rx = init(&mut s, &mut fx, None, None);
        assert_eq!(rx.try_recv().unwrap(), Answer::NeedProducerId);
        let mut rx = init(&mut s, &mut fx, Some(7), None);
        assert_eq!(fx.records().len(), 1);
        durable(&mut s, fx);
        assert_eq!(rx.try_recv().unwrap(), Answer::Done(Ok((7, 0))));

        // Exhausted: the next init rotates to a new producer id at epoch 0.
        s.txns.get_mut("t").unwrap().producer_epoch = i16::MAX - 1;
        let mut fx = Effects::default();
        let mut rx = init(&mut s, &mut fx, None, Some((7, i16::MAX - 1)));
        assert_eq!(rx.try_recv().unwrap(), Answer::NeedProducerId);
        let mut rx = init(&mut s, &mut fx, Some(8), Some((7, i16::MAX - 1)));
        durable(&mut s, fx);
        assert_eq!(rx.try_recv().unwrap(), Answer::Done(Ok((8, 0))));
        let m = &s.txns["t"];
        assert_eq!((m.previous_producer_id, m.last_producer_epoch), (7, i16::MAX - 1));
    }

    fn end_txn(s: &mut Shard, fx: &mut Effects, epoch: i16, commit: bool) -> oneshot::Receiver<Answer> {
        let (tx, rx) = oneshot::channel();
        let r = Request::EndTxn {
            transactional_id: "t".into(),
            producer_id: 7,
            producer_epoch: epoch,
            commit,
            client_transaction_version: 2,
            next_producer_id: None,
            tx,
        };
        s.handle(r, fx);
        rx
    }

    /// Transactions v2: the commit's answer carries the bumped epoch while its markers are still being written; an
    /// EndTxn (abort of an empty transaction) with that epoch right then is retriable, never fenced, and succeeds
    /// once the commit is complete.
    #[tokio::test]
    async fn v2_end_txn_while_the_previous_one_completes_is_concurrent_not_fenced() {
        let mut s = shard();
        let mut fx = Effects::default();
        let mut rx = init(&mut s, &mut fx, Some(7), None);
        durable(&mut s, fx);
        assert_eq!(rx.try_recv().unwrap(), Answer::Done(Ok((7, 0))));

        let (tx, mut added) = oneshot::channel();
        let mut fx = Effects::default();
        let partitions = BTreeSet::from([("topic".to_string(), 0)]);
        let r = Request::AddPartitions {
            transactional_id: "t".into(),
            producer_id: 7,
            producer_epoch: 0,
            partitions,
            client_transaction_version: 2,
            wait: false,
            tx,
        };
        s.handle(r, &mut fx);
        durable(&mut s, fx);
        assert_eq!(added.try_recv().unwrap(), None);

        let mut fx = Effects::default();
        let mut commit = end_txn(&mut s, &mut fx, 0, true);
        durable(&mut s, fx);
        assert_eq!(commit.try_recv().unwrap(), Answer::Done(Ok((7, 1))));
        assert_eq!(s.txns["t"].state, TxnState::PrepareCommit);

        // The markers are not written yet: the completion is pending.
        let mut abort = end_txn(&mut s, &mut Effects::default(), 1, false);
        assert_eq!(abort.try_recv().unwrap(), Answer::Done(Err(ResponseError::ConcurrentTransactions)));

        // The commit completes; the retried abort goes ahead.
        // The markers task (which has no broker here) would hand back the completion prepared when the commit was
        // answered: prepare the same one again.
        let m = s.txns.get_mut("t").unwrap();
        assert_eq!(m.pending_state, Some(TxnState::CompleteCommit));
        m.abort_transition();
        let transit = m.prepare_complete(now_ms()).unwrap();
        let mut fx = Effects::default();
        s.handle(Request::MarkersWritten { transactional_id: "t".into(), transit }, &mut fx);
        durable(&mut s, fx);
        assert_eq!(s.txns["t"].state, TxnState::CompleteCommit);
        let mut fx = Effects::default();
        let mut abort = end_txn(&mut s, &mut fx, 1, false);
        durable(&mut s, fx);
        assert_eq!(abort.try_recv().unwrap(), Answer::Done(Ok((7, 2))));
    }

    #[test]
    fn a_transactional_id_longer_than_a_record_string_is_refused() {
        let mut s = shard();
        let (tx, mut rx) = oneshot::channel();
        let mut fx = Effects::default();
        let id = "t".repeat(i16::MAX as usize + 1);
        let r = Request::InitProducerId {
            transactional_id: id.clone(),
            timeout_ms: 60000,
            expected: None,
            fresh_producer_id: Some(7),
            tx,
        };
        s.handle(r, &mut fx);
        assert_eq!(rx.try_recv().unwrap(), Answer::Done(Err(ResponseError::InvalidRequest)));
        assert!(fx.records().is_empty() && !s.txns.contains_key(&id));
    }

    #[test]
    fn a_failed_write_changes_nothing_and_a_pending_one_is_concurrent() {
        let mut s = shard();
        let mut fx = Effects::default();
        let mut first = init(&mut s, &mut fx, Some(7), None);
        let mut second = init(&mut s, &mut Effects::default(), None, None);
        assert_eq!(second.try_recv().unwrap(), Answer::Done(Err(ResponseError::ConcurrentTransactions)));
        fx.complete(&mut s, Err(ResponseError::NotEnoughReplicas));
        assert_eq!(first.try_recv().unwrap(), Answer::Done(Err(ResponseError::CoordinatorNotAvailable)));
        let m = &s.txns["t"];
        assert_eq!((m.producer_epoch, m.pending_state), (NO_PRODUCER_EPOCH, None));
    }
}
