//! Transaction administration on the admin client (kafka-transactions.sh's `list`, `describe` and
//! `describe-producers`): ListTransactions goes to every broker (each knows the transactions it coordinates),
//! DescribeTransactions to the coordinator of each transactional id, DescribeProducers to a partition's leader.

use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::admin::Admin;
use crate::connection::Connection;
use crate::error::{check, Error, Result};
use crate::group::coordinator;
use crate::record::TopicPartition;

/// One transactional id as ListTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionListing {
    pub transactional_id: String,
    pub producer_id: i64,
    /// Kafka's state names: Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort, Dead,
    /// PrepareEpochFence.
    pub state: String,
    /// The coordinator that answered.
    pub coordinator_id: i32,
}

/// One transactional id as DescribeTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionDescription {
    pub transactional_id: String,
    pub coordinator_id: i32,
    pub state: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub transaction_timeout_ms: i32,
    /// -1 when no transaction is open.
    pub transaction_start_time_ms: i64,
    /// The partitions of the open transaction, sorted.
    pub partitions: Vec<TopicPartition>,
}

/// One producer with state on a partition, as DescribeProducers reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerState {
    pub producer_id: i64,
    pub producer_epoch: i32,
    /// -1 when the partition keeps no batch of this producer's epoch.
    pub last_sequence: i32,
    pub last_timestamp: i64,
    /// The coordinator epoch of the producer's last transaction marker here (-1 before any).
    pub coordinator_epoch: i32,
    /// First offset of the producer's open transaction on this partition; None when none is open.
    pub current_transaction_start_offset: Option<i64>,
}

/// Filters of ListTransactions (all optional; empty lists match everything).
#[derive(Debug, Clone, Default)]
pub struct ListTransactionsOptions {
    pub states: Vec<String>,
    pub producer_ids: Vec<i64>,
    /// Only transactions running longer than this (ListTransactions v1+), in ms.
    pub duration_filter_ms: Option<i64>,
}

impl Admin {
    /// Every transactional id known to any broker's transaction coordinator, sorted by id.
    pub async fn list_transactions(&self, options: &ListTransactionsOptions) -> Result<Vec<TransactionListing>> {
        let cluster = self.cluster();
        cluster.fetch_metadata(Some(&[]), false).await?;
        let req = ListTransactionsRequest::default()
            .with_state_filters(options.states.iter().map(|s| StrBytes::from_string(s.clone())).collect())
            .with_producer_id_filters(
                options.producer_ids.iter().map(|p| kafka_protocol::messages::ProducerId(*p)).collect(),
            )
            .with_duration_filter(options.duration_filter_ms.unwrap_or(-1));
        let mut out = Vec::new();
        for b in cluster.brokers() {
            let conn = cluster.connection(b.id).await?;
            let version = conn.version::<ListTransactionsRequest>()?;
            if options.duration_filter_ms.is_some() && version < 1 {
                return Err(Error::UnsupportedApi {
                    addr: conn.addr().to_string(),
                    api: "ListTransactions v1 (duration filter)",
                    key: 66,
                });
            }
            let resp = conn.call_version(&req, version).await?;
            check(resp.error_code, || format!("ListTransactions on broker {}", b.id), None)?;
            out.extend(resp.transaction_states.into_iter().map(|t| TransactionListing {
                transactional_id: t.transactional_id.0.to_string(),
                producer_id: t.producer_id.0,
                state: t.transaction_state.to_string(),
                coordinator_id: b.id,
            }));
        }
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(out)
    }

    /// The producers with state on one partition, asked of its leader (an open transaction that never ends shows
    /// here with its start offset: it holds read_committed consumers back).
    pub async fn describe_producers(&self, tp: &TopicPartition) -> Result<Vec<ProducerState>> {
        let cluster = self.cluster();
        let mut last = None;
        for _ in 0..5 {
            let topic = cluster.topic(&tp.topic, false, cluster.config().request_timeout).await?;
            if !topic.partitions.iter().any(|p| p.id == tp.partition) {
                return Err(Error::UnknownPartition(tp.topic.clone(), tp.partition));
            }
            let leader = cluster.leader(&tp.topic, tp.partition).unwrap_or(-1);
            let conn = if leader >= 0 { cluster.connection(leader).await? } else { cluster.any_connection().await? };
            let req = DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
                .with_name(TopicName(StrBytes::from_string(tp.topic.clone())))
                .with_partition_indexes(vec![tp.partition])]);
            let resp = conn.call(&req).await?;
            let p = resp
                .topics
                .into_iter()
                .flat_map(|t| t.partitions)
                .next()
                .ok_or_else(|| Error::Protocol("DescribeProducers answered no partition".into()))?;
            let what = || format!("DescribeProducers of {tp}");
            // NOT_LEADER_OR_FOLLOWER: the leader moved; look it up again.
            if p.error_code == 6 {
                cluster.invalidate(&tp.topic);
                last = Some(Error::kafka(p.error_code, what(), None));
                tokio::time::sleep(cluster.config().retry_backoff).await;
                continue;
            }
            check(p.error_code, what, p.error_message.as_deref())?;
            return Ok(p
                .active_producers
                .into_iter()
                .map(|s| ProducerState {
                    producer_id: s.producer_id.0,
                    producer_epoch: s.producer_epoch,
                    last_sequence: s.last_sequence,
                    last_timestamp: s.last_timestamp,
                    coordinator_epoch: s.coordinator_epoch,
                    current_transaction_start_offset: (s.current_txn_start_offset >= 0)
                        .then_some(s.current_txn_start_offset),
                })
                .collect());
        }
        Err(last.unwrap_or(Error::Closed))
    }

    /// Describes transactional ids at their coordinators, one result per id in the order given (an unknown id is
    /// TRANSACTIONAL_ID_NOT_FOUND).
    pub async fn describe_transactions(&self, ids: &[String]) -> Result<Vec<(String, Result<TransactionDescription>)>> {
        let mut out = Vec::new();
        for id in ids {
            out.push((id.clone(), self.describe_transaction(id).await));
        }
        Ok(out)
    }

    async fn describe_transaction(&self, id: &str) -> Result<TransactionDescription> {
        let cluster = self.cluster();
        let mut last = None;
        for _ in 0..20 {
            let (node, addr) = match coordinator::find_for(cluster, id, coordinator::TRANSACTION).await {
                Ok(c) => c,
                Err(e) if e.is_retriable() => {
                    last = Some(e);
                    tokio::time::sleep(cluster.config().retry_backoff).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let conn = Connection::connect(&addr, cluster.config()).await?;
            let req = DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(StrBytes::from_string(id.to_string()))]);
            let resp = conn.call(&req).await?;
            let t = resp
                .transaction_states
                .into_iter()
                .next()
                .ok_or_else(|| Error::Protocol("DescribeTransactions answered no state".into()))?;
            // NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS: ask again.
            if matches!(t.error_code, 14..=16) {
                last = Some(Error::kafka(t.error_code, format!("DescribeTransactions of {id}"), None));
                tokio::time::sleep(cluster.config().retry_backoff).await;
                continue;
            }
            check(t.error_code, || format!("DescribeTransactions of {id}"), None)?;
            let mut partitions: Vec<TopicPartition> = t
                .topics
                .iter()
                .flat_map(|topic| topic.partitions.iter().map(|p| TopicPartition::new(topic.topic.0.to_string(), *p)))
                .collect();
            partitions.sort();
            return Ok(TransactionDescription {
                transactional_id: t.transactional_id.0.to_string(),
                coordinator_id: node,
                state: t.transaction_state.to_string(),
                producer_id: t.producer_id.0,
                producer_epoch: t.producer_epoch,
                transaction_timeout_ms: t.transaction_timeout_ms,
                transaction_start_time_ms: t.transaction_start_time_ms,
                partitions,
            });
        }
        Err(last.unwrap_or(Error::Closed))
    }
}
