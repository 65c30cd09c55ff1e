//! The transaction coordinator (Kafka's TransactionCoordinator, TransactionStateManager and
//! TransactionMarkerChannelManager).
//!
//! A transactional id belongs to the `__transaction_state` partition its id hashes to (the same Java-hash rule as
//! groups), and is served by that partition's shard (`shard.rs`), which keeps every state change in the partition
//! and rebuilds its state from it on start. The shards run on the coordinator runtime (`coordinator/runtime.rs`);
//! this type creates the topic on first use, says which partitions it hosts, and hands requests to the runtime.

pub mod config;
mod markers;
pub mod metadata;
pub mod records;
mod shard;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

pub use config::TxnConfig;
pub use shard::{DescribedTransaction, ListFilter, ListedTransaction, Request};

use crate::broker::Broker;
use crate::controller::{ensure_internal_topic, ApiError};
use crate::coordinator::runtime::{partition_for, CoordinatorLog, CoordinatorRuntime, ShardRef};

/// Kafka's internal topic for transaction state.
pub use crate::topic_name::TRANSACTION_STATE_TOPIC_NAME;

/// The highest transaction version (KIP-890) this broker supports, and the level it finalizes unless the
/// `transaction.version` override lowers it: 2, as a new Apache Kafka 4.x cluster. Clients that see it finalized use
/// EndTxn v5 (the epoch moves on with every transaction) and let the broker add partitions implicitly.
pub const TRANSACTION_VERSION: i16 = 2;

pub struct TransactionCoordinator {
    config: Arc<TxnConfig>,
    runtime: CoordinatorRuntime<shard::Shard>,
    /// Kafka's verification guard, coordinator side: a verified transactional append holds its producer's stripe
    /// for reading from the check to the end of the append, and markers are written holding it for writing. So a
    /// marker never lands between a write's verification and the write itself (which would leave the write
    /// outside any transaction the coordinator knows of: a hanging transaction).
    append_guards: Vec<Arc<tokio::sync::RwLock<()>>>,
    /// `transaction.partition.verification.enable`, which Kafka lets operators change at run time.
    partition_verification: AtomicBool,
}

/// Stripes of `append_guards`: producers share a stripe only by hash, and only markers take it exclusively.
const APPEND_GUARD_STRIPES: usize = 1024;

/// Held by a transactional append from its verification to the end of the append.
pub type AppendGuard = tokio::sync::OwnedRwLockReadGuard<()>;

impl TransactionCoordinator {
    pub fn new(broker: &crate::config::BrokerConfig) -> TransactionCoordinator {
        TransactionCoordinator {
            config: Arc::new(TxnConfig::from_broker(broker)),
            runtime: CoordinatorRuntime::default(),
            append_guards: (0..APPEND_GUARD_STRIPES).map(|_| Arc::new(tokio::sync::RwLock::new(()))).collect(),
            partition_verification: AtomicBool::new(config::partition_verification(broker)),
        }
    }

    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    /// Whether transactional writes are verified with the coordinator (KIP-890 part 1) right now.
    pub fn partition_verification(&self) -> bool {
        self.partition_verification.load(Ordering::Relaxed)
    }

    /// Takes up the dynamic settings of a changed broker configuration.
    pub fn apply_dynamic_config(&self, broker: &crate::config::BrokerConfig) {
        let enabled = config::partition_verification(broker);
        if self.partition_verification.swap(enabled, Ordering::Relaxed) != enabled {
            tracing::info!(enabled, "transaction.partition.verification.enable changed");
        }
    }

    fn append_guard_stripe(&self, producer_id: i64) -> Arc<tokio::sync::RwLock<()>> {
        self.append_guards[(producer_id as u64 % APPEND_GUARD_STRIPES as u64) as usize].clone()
    }

    /// Taken by the produce path before it verifies the producers' transactional batches; hold them until the
    /// batches are appended. Stripes are taken in ascending order (markers take one at a time), so two requests
    /// can never wait on each other.
    pub async fn guard_append(&self, producer_ids: impl IntoIterator<Item = i64>) -> Vec<AppendGuard> {
        let mut stripes: Vec<usize> =
            producer_ids.into_iter().map(|p| (p as u64 % APPEND_GUARD_STRIPES as u64) as usize).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for s in stripes {
            guards.push(self.append_guards[s].clone().read_owned().await);
        }
        guards
    }

    /// Taken by the marker writer: waits for verified appends of the producer in flight.
    pub(crate) async fn guard_markers(&self, producer_id: i64) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.append_guard_stripe(producer_id).write_owned().await
    }

    /// Partitions of `__transaction_state`: the topic's, once it exists.
    pub fn num_partitions(&self, broker: &Broker) -> i32 {
        broker
            .image()
            .topic(TRANSACTION_STATE_TOPIC_NAME)
            .map(|t| t.partitions.len() as i32)
            .unwrap_or(self.config.num_partitions)
    }

    pub fn partition_of(&self, broker: &Broker, transactional_id: &str) -> i32 {
        partition_for(transactional_id, self.num_partitions(broker))
    }

    /// Creates `__transaction_state` if it does not exist yet (Kafka does so on the first FindCoordinator for a
    /// transaction). Blocking: call from a blocking thread.
    pub fn ensure_topic(&self, broker: &Broker) -> Result<(), ApiError> {
        if broker.image().topic(TRANSACTION_STATE_TOPIC_NAME).is_some() {
            return Ok(());
        }
        // Kafka's transactionTopicConfigs: compacted, the configured segment size and min ISR (capped by the one
        // replica a single node has). Compression stays `producer`, the only one Strom serves; the coordinator
        // writes uncompressed batches, as Kafka's does.
        let mut configs = BTreeMap::new();
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert("compression.type".to_string(), "producer".to_string());
        configs.insert("unclean.leader.election.enable".to_string(), "false".to_string());
        configs.insert("min.insync.replicas".to_string(), self.config.min_isr.min(1).to_string());
        configs.insert("segment.bytes".to_string(), self.config.segment_bytes.to_string());
        ensure_internal_topic(broker, TRANSACTION_STATE_TOPIC_NAME, self.config.num_partitions, configs)
    }

    /// Starts a shard for every hosted `__transaction_state` partition, so that prepared transactions are completed
    /// and ongoing ones time out after a restart without waiting for a request. Called when the broker starts.
    pub fn start_hosted(&self, broker: &Arc<Broker>) {
        if broker.image().topic(TRANSACTION_STATE_TOPIC_NAME).is_none() {
            return;
        }
        for p in 0..self.num_partitions(broker) {
            let _ = self.shard_for_partition(broker, p);
        }
    }

    fn shard_for_partition(&self, broker: &Arc<Broker>, p: i32) -> Result<ShardRef<Request>, ResponseError> {
        let current = broker.replicas.get(TRANSACTION_STATE_TOPIC_NAME, p);
        let epoch = current.as_ref().map_or(0, |l| l.leader_epoch());
        let current = current.map(|l| l as Arc<dyn CoordinatorLog>);
        let config = self.config.clone();
        let shard = self
            .runtime
            .shard(p, current, |self_tx| shard::Shard::new(p, config, Arc::downgrade(broker), self_tx, epoch))?;
        // The request that started the shard waits in its queue for the load; later ones are told to retry until
        // it is done, as Kafka answers while it loads a partition.
        if !shard.loaded && !shard.started {
            return Err(ResponseError::CoordinatorLoadInProgress);
        }
        Ok(shard)
    }

    /// This broker no longer coordinates partition `p` of `__transaction_state`: its shard stops and its state is
    /// dropped from memory (rebuilt from the partition wherever it is loaded next). The shard's task, to wait for it.
    pub fn unload(&self, p: i32) -> Option<tokio::task::JoinHandle<()>> {
        self.runtime.unload(p)
    }

    /// Sends a request to the transactional id's shard and waits for its answer. The error is Kafka's answer when
    /// the coordinator cannot serve yet: COORDINATOR_LOAD_IN_PROGRESS while the partition loads, NOT_COORDINATOR when
    /// this broker does not host it.
    pub async fn call<T>(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, ResponseError> {
        if broker.image().topic(TRANSACTION_STATE_TOPIC_NAME).is_none() {
            return Err(ResponseError::NotCoordinator);
        }
        let p = self.partition_of(broker, transactional_id);
        let shard = self.shard_for_partition(broker, p)?;
        let (otx, orx) = oneshot::channel();
        shard.send(make(otx)).await?;
        crate::dispatch::handed_off();
        orx.await.map_err(|_| ResponseError::NotCoordinator)
    }

    /// Every transaction on every hosted shard that passes the filters (ListTransactions). Err while a shard loads.
    pub async fn list(
        &self,
        broker: &Arc<Broker>,
        filter: shard::ListFilter,
    ) -> Result<Vec<ListedTransaction>, ResponseError> {
        if broker.image().topic(TRANSACTION_STATE_TOPIC_NAME).is_none() {
            return Ok(Vec::new());
        }
        let filter = Arc::new(filter);
        let mut receivers = Vec::new();
        let mut loading = false;
        for p in 0..self.num_partitions(broker) {
            match self.shard_for_partition(broker, p) {
                Ok(shard) => {
                    let (otx, orx) = oneshot::channel();
                    if shard.send(Request::List { filter: filter.clone(), tx: otx }).await.is_ok() {
                        receivers.push(orx);
                    }
                }
                Err(ResponseError::CoordinatorLoadInProgress) => loading = true,
                Err(_) => {}
            }
        }
        if loading {
            return Err(ResponseError::CoordinatorLoadInProgress);
        }
        let mut out = Vec::new();
        for r in receivers {
            if let Ok(list) = r.await {
                out.extend(list);
            }
        }
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(out)
    }
}

/// The coordinator's operations, as the handlers (and the produce path) call them.
impl TransactionCoordinator {
    /// A producer id for a new id or a rotation, allocated off the async workers (a new id block is a metadata
    /// commit).
    async fn fresh_producer_id(broker: &Arc<Broker>) -> Result<i64, ResponseError> {
        let b = broker.clone();
        match tokio::task::spawn_blocking(move || b.producer_ids.generate(&b)).await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "producer id allocation failed");
                Err(e.error)
            }
            Err(_) => Err(ResponseError::UnknownServerError),
        }
    }

    /// InitProducerId for a transactional id (Kafka's handleInitProducerId).
    pub async fn init_producer_id(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), ResponseError> {
        if transactional_id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        let mut fresh = None;
        loop {
            let answer = self
                .call(broker, transactional_id, |tx| Request::InitProducerId {
                    transactional_id: transactional_id.to_string(),
                    timeout_ms,
                    expected,
                    fresh_producer_id: fresh,
                    tx,
                })
                .await?;
            match answer {
                shard::Answer::Done(r) => return r,
                shard::Answer::NeedProducerId if fresh.is_none() => {
                    fresh = Some(Self::fresh_producer_id(broker).await?)
                }
                shard::Answer::NeedProducerId => return Err(ResponseError::UnknownServerError),
            }
        }
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn, and the implicit add of transactions v2 (Kafka's
    /// handleAddPartitionsToTransaction). None: added. `wait`: while the producer's previous transaction completes,
    /// wait for it (up to the coordinator's park time) rather than answer CONCURRENT_TRANSACTIONS at once; never
    /// while holding the producer's append guard, which the completion's markers need.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_partitions(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: BTreeSet<metadata::TopicPartition>,
        client_transaction_version: i16,
        wait: bool,
    ) -> Option<ResponseError> {
        if transactional_id.is_empty() {
            return Some(ResponseError::InvalidRequest);
        }
        self.call(broker, transactional_id, |tx| Request::AddPartitions {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch,
            partitions,
            client_transaction_version,
            wait,
            tx,
        })
        .await
        .unwrap_or_else(Some)
    }

    /// AddPartitionsToTxn v4+ with verify_only (Kafka's handleVerifyPartitionsInTransaction).
    pub async fn verify_partitions(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<metadata::TopicPartition>,
    ) -> Vec<(metadata::TopicPartition, Option<ResponseError>)> {
        if transactional_id.is_empty() {
            return partitions.into_iter().map(|p| (p, Some(ResponseError::InvalidRequest))).collect();
        }
        let all = partitions.clone();
        match self
            .call(broker, transactional_id, |tx| Request::VerifyPartitions {
                transactional_id: transactional_id.to_string(),
                producer_id,
                producer_epoch,
                partitions,
                tx,
            })
            .await
        {
            Ok(r) => r,
            Err(e) => all.into_iter().map(|p| (p, Some(e))).collect(),
        }
    }

    /// EndTxn (Kafka's handleEndTransaction): the (producer id, epoch) the producer continues with under
    /// transactions v2, (-1, -1) under v1.
    pub async fn end_txn(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        client_transaction_version: i16,
    ) -> Result<(i64, i16), ResponseError> {
        if transactional_id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        let mut next = None;
        loop {
            let answer = self
                .call(broker, transactional_id, |tx| Request::EndTxn {
                    transactional_id: transactional_id.to_string(),
                    producer_id,
                    producer_epoch,
                    commit,
                    client_transaction_version,
                    next_producer_id: next,
                    tx,
                })
                .await?;
            match answer {
                shard::Answer::Done(r) => return r,
                shard::Answer::NeedProducerId if next.is_none() => next = Some(Self::fresh_producer_id(broker).await?),
                shard::Answer::NeedProducerId => return Err(ResponseError::UnknownServerError),
            }
        }
    }

    pub async fn describe(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
    ) -> Result<DescribedTransaction, ResponseError> {
        if transactional_id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        self.call(broker, transactional_id, |tx| Request::Describe {
            transactional_id: transactional_id.to_string(),
            tx,
        })
        .await?
    }

    /// The produce path's check before transactional batches are appended (KIP-890), for each (producer id, epoch,
    /// partitions): with `add` (Produce v12+ and TxnOffsetCommit v5+ under transactions v2) the partitions are
    /// added to the transaction implicitly, otherwise they must already be in it. The errors are the coordinator's;
    /// `produce_error` maps them for a Produce response. The guards returned keep the producers' markers out until
    /// the caller has appended (drop them after the append).
    ///
    /// CONCURRENT_TRANSACTIONS (the previous transaction's completion is still being written) is not answered at
    /// once. With `add`, the partitions are added without the guards, waiting for the completion as an
    /// AddPartitionsToTxn does, then checked again under the guards (already added: no write). A plain verification
    /// is retried briefly, as Kafka's AddPartitionsToTxnManager does (add.partitions.to.txn.retry.backoff.ms 20, up
    /// to 100 ms). Never while holding the guards, since the completion's markers wait for them.
    pub async fn verify_for_append(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        producers: &[(i64, i16, Vec<metadata::TopicPartition>)],
        add: bool,
    ) -> (Vec<Vec<(metadata::TopicPartition, Option<ResponseError>)>>, Vec<AppendGuard>) {
        let started = tokio::time::Instant::now();
        let mut waited = false;
        loop {
            let guards = self.guard_append(producers.iter().map(|(pid, _, _)| *pid)).await;
            let mut results = Vec::with_capacity(producers.len());
            for (pid, epoch, partitions) in producers {
                let r = if add {
                    let set: BTreeSet<_> = partitions.iter().cloned().collect();
                    let tv = TRANSACTION_VERSION;
                    let e = self.add_partitions(broker, transactional_id, *pid, *epoch, set, tv, false).await;
                    partitions.iter().map(|p| (p.clone(), e)).collect::<Vec<_>>()
                } else {
                    self.verify_partitions(broker, transactional_id, *pid, *epoch, partitions.clone()).await
                };
                results.push(r);
            }
            let concurrent = |r: &[(metadata::TopicPartition, Option<ResponseError>)]| {
                r.iter().any(|(_, e)| *e == Some(ResponseError::ConcurrentTransactions))
            };
            if !results.iter().any(|r| concurrent(r)) || started.elapsed() >= std::time::Duration::from_millis(100) {
                return (results, guards);
            }
            drop(guards);
            if add && !waited {
                waited = true;
                for ((pid, epoch, partitions), r) in producers.iter().zip(&results) {
                    if concurrent(r) {
                        let set: BTreeSet<_> = partitions.iter().cloned().collect();
                        let tv = TRANSACTION_VERSION;
                        self.add_partitions(broker, transactional_id, *pid, *epoch, set, tv, true).await;
                    }
                }
            } else {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}

/// How a coordinator error from the produce-path check is answered in a Produce (or TxnOffsetCommit) response, as
/// Kafka's AddPartitionsToTxnManager maps it: a fenced producer gets INVALID_PRODUCER_EPOCH; a partition that is
/// not in the transaction gets TRANSACTION_ABORTABLE where the client knows it (Produce v11+, TxnOffsetCommit v5+)
/// and INVALID_TXN_STATE otherwise; coordinator unavailability becomes NOT_ENOUGH_REPLICAS, which producers retry.
pub fn produce_error(e: ResponseError, supports_abortable: bool) -> ResponseError {
    match e {
        ResponseError::ProducerFenced => ResponseError::InvalidProducerEpoch,
        ResponseError::TransactionAbortable if !supports_abortable => ResponseError::InvalidTxnState,
        ResponseError::CoordinatorNotAvailable
        | ResponseError::NotCoordinator
        | ResponseError::CoordinatorLoadInProgress => ResponseError::NotEnoughReplicas,
        e => e,
    }
}

/// The broker, for shards and marker tasks that must not keep it alive after shutdown.
pub type BrokerRef = Weak<Broker>;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::controller::create_test_topic as create_topic;

    use super::metadata::{TransactionMetadata, TxnTransit};
    use super::records::{encode_key, TxnState};
    use super::*;
    use crate::config::BrokerConfig;

    fn open(dir: &std::path::Path) -> Arc<Broker> {
        let mut values = BTreeMap::new();
        values.insert("log.dirs".to_string(), dir.display().to_string());
        values.insert("transaction.state.log.num.partitions".to_string(), "2".to_string());
        Arc::new(Broker::open(BrokerConfig::from_values(values).unwrap()).unwrap())
    }

    /// A PrepareCommit in the log (the broker died after deciding, before every marker was written) is completed
    /// when the partition loads: the marker is written and CompleteCommit persisted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loading_completes_a_prepared_commit() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path());
        broker.txns.ensure_topic(&broker).unwrap();
        create_topic(&broker, "data");
        let id = "tx-crashed";
        let mut m = TransactionMetadata::new(id, 4242, 60000, 1);
        let t = m.prepare_increment_producer_epoch(60000, None, 1).unwrap();
        m.complete_transition(&t);
        let t = m.prepare_add_partitions(&std::collections::BTreeSet::from([("data".to_string(), 0)]), 2, 0).unwrap();
        m.complete_transition(&t);
        let prepared: TxnTransit = m.prepare_abort_or_commit(TxnState::PrepareCommit, 0, -1, 3, false, false).unwrap();
        let p = broker.replicas.get(TRANSACTION_STATE_TOPIC_NAME, broker.txns.partition_of(&broker, id)).unwrap();
        let records = vec![(encode_key(id), Some(prepared.to_record().encode()))];
        let end = tokio::task::spawn_blocking(move || crate::coordinator::runtime::append(&*p, &records, None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(end, 1);

        broker.txns.start_hosted(&broker);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let state = loop {
            match broker.txns.describe(&broker, id).await {
                Ok(d) if d.state == TxnState::CompleteCommit || tokio::time::Instant::now() > deadline => break d,
                _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        assert_eq!((state.state, state.producer_id, state.producer_epoch), (TxnState::CompleteCommit, 4242, 0));
        assert!(state.partitions.is_empty());
        // The COMMIT marker is the only batch of the data partition.
        assert_eq!(broker.replicas.get("data", 0).unwrap().high_watermark(), 1);
    }

    /// An AddPartitionsToTxn arriving while the producer's previous transaction completes waits for the completion
    /// instead of failing at once; past the wait it gets CONCURRENT_TRANSACTIONS, as Kafka answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn add_partitions_waits_while_the_previous_transaction_completes() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path());
        broker.txns.ensure_topic(&broker).unwrap();
        create_topic(&broker, "data");
        broker.txns.start_hosted(&broker);
        let id = "tx-park";
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let (pid, epoch) = loop {
            match broker.txns.init_producer_id(&broker, id, 60000, None).await {
                Ok(p) => break p,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    assert_eq!(e, ResponseError::CoordinatorLoadInProgress);
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("InitProducerId: {e:?}"),
            }
        };
        let partitions = BTreeSet::from([("data".to_string(), 0)]);
        let add = |broker: Arc<Broker>, partitions: BTreeSet<_>| async move {
            broker.txns.add_partitions(&broker, id, pid, epoch, partitions, 1, true).await
        };
        assert_eq!(add(broker.clone(), partitions.clone()).await, None);

        // Markers wait for this producer's verified appends: holding an append keeps the commit completing.
        let append = broker.txns.guard_append([pid]).await;
        broker.txns.end_txn(&broker, id, pid, epoch, true, 1).await.unwrap();
        let parked = tokio::spawn(add(broker.clone(), partitions.clone()));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!parked.is_finished(), "the add waits while the commit's markers are pending");
        drop(append);
        assert_eq!(parked.await.unwrap(), None, "added once the commit completed");

        let append = broker.txns.guard_append([pid]).await;
        broker.txns.end_txn(&broker, id, pid, epoch, false, 1).await.unwrap();
        let answer = add(broker.clone(), partitions).await;
        assert_eq!(answer, Some(ResponseError::ConcurrentTransactions), "the abort never completed in time");
        drop(append);
    }

    /// Markers for a producer wait until its verified appends are done; other producers are not held up.
    #[tokio::test]
    async fn markers_wait_for_verified_appends_of_their_producer() {
        let c = TransactionCoordinator::new(&BrokerConfig::default());
        let append = c.guard_append([5, 5 + APPEND_GUARD_STRIPES as i64, 7]).await;
        assert_eq!(append.len(), 2); // 5 and 5 + stripes share a stripe
        let short = std::time::Duration::from_millis(50);
        assert!(tokio::time::timeout(short, c.guard_markers(5)).await.is_err());
        assert!(tokio::time::timeout(short, c.guard_markers(6)).await.is_ok());
        drop(append);
        assert!(tokio::time::timeout(short, c.guard_markers(5)).await.is_ok());
    }

    #[test]
    fn transactional_ids_hash_like_kafka() {
        use super::partition_for;
        // Java: "my-txn".hashCode() = -1061187895 → 1061187895 % 50 = 45.
        assert_eq!(partition_for("my-txn", 50), 45);
    }
}
