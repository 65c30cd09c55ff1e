//! The consumer: manual assignment (`assign`, `seek`) or group membership (`subscribe` to topics or a pattern),
//! with committed offsets (auto commit, `commit_sync`, `commit_async`) and a rebalance listener. Positions live
//! here; the group (`group::membership`) only says which partitions are ours, and committed offsets become
//! positions through the same path as `seek`.

mod fetcher;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::Stream;

use crate::cluster::Cluster;
use crate::config::{ConsumerConfig, OffsetReset};
use crate::error::{Error, Result};
use crate::group::membership::{GroupMember, MembershipConfig, RebalanceEvent, RebalanceListener, Topics};
use crate::group::offsets::OffsetAndMetadata;
use crate::offsets::{self, OffsetAndTimestamp};
use crate::record::{ConsumerRecord, TopicPartition};
use fetcher::PartitionFetch;

#[derive(Debug, Clone, Copy)]
enum Position {
    /// Fetch from this offset next.
    At(i64),
    /// Look the offset up (ListOffsets) before the next fetch.
    Reset(OffsetReset),
}

pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    positions: BTreeMap<TopicPartition, Position>,
    high_watermarks: HashMap<TopicPartition, i64>,
    buffer: VecDeque<ConsumerRecord>,
    group: Option<GroupMember>,
    listener: Option<Box<dyn RebalanceListener>>,
    last_auto_commit: Instant,
}

impl Consumer {
    /// Connects to a bootstrap server (to fail early when none answers).
    pub async fn new(config: ConsumerConfig) -> Result<Consumer> {
        let cluster = Cluster::new(config.client.clone())?;
        cluster.fetch_metadata(Some(&[]), false).await?;
        Ok(Consumer {
            cluster,
            config,
            positions: BTreeMap::new(),
            high_watermarks: HashMap::new(),
            buffer: VecDeque::new(),
            group: None,
            listener: None,
            last_auto_commit: Instant::now(),
        })
    }

    /// Joins the group (`group.id`) consuming these topics; partitions come and go with rebalances in `poll`.
    pub fn subscribe(&mut self, topics: &[&str]) -> Result<()> {
        self.subscribe_to(Topics::Names(topics.iter().map(|t| t.to_string()).collect()))
    }

    /// Like `subscribe`, for every (non-internal) topic whose whole name matches the regular expression, including
    /// topics created later.
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        self.subscribe_to(Topics::Pattern(pattern.to_string()))
    }

    fn subscribe_to(&mut self, topics: Topics) -> Result<()> {
        let group_id = self.config.group_id.clone().ok_or_else(|| Error::Config("subscribe needs group.id".into()))?;
        if !self.positions.is_empty() && self.group.is_none() {
            return Err(Error::Config("subscribe after assign: a consumer uses one or the other".into()));
        }
        let config = MembershipConfig {
            group_id,
            instance_id: self.config.group_instance_id.clone(),
            session_timeout: self.config.session_timeout,
            heartbeat_interval: self.config.heartbeat_interval,
            max_poll_interval: self.config.max_poll_interval,
            assignors: self.config.assignors.clone(),
        };
        self.group = Some(GroupMember::new(self.cluster.clone(), config, topics)?);
        Ok(())
    }

    /// Called on every rebalance, from `poll`.
    pub fn set_rebalance_listener(&mut self, listener: Box<dyn RebalanceListener>) {
        self.listener = Some(listener);
    }

    /// The group's generation and this member's id (-1 and "" before the first join).
    pub fn group_metadata(&self) -> Option<(i32, String)> {
        self.group.as_ref().map(|g| g.generation())
    }

    /// What a transactional producer needs to commit this consumer's offsets in its transaction
    /// (`Producer::send_offsets_to_transaction`); `None` without `subscribe`.
    pub fn consumer_group_metadata(&self) -> Option<crate::group::ConsumerGroupMetadata> {
        let group = self.group.as_ref()?;
        let (generation_id, member_id) = group.generation();
        Some(crate::group::ConsumerGroupMetadata {
            group_id: self.config.group_id.clone().unwrap_or_default(),
            generation_id,
            member_id,
            group_instance_id: self.config.group_instance_id.clone(),
        })
    }

    /// Replaces the assignment. Partitions must exist; their position starts per `auto.offset.reset`.
    pub async fn assign(&mut self, partitions: Vec<TopicPartition>) -> Result<()> {
        if self.group.is_some() {
            return Err(Error::Config("assign after subscribe: a consumer uses one or the other".into()));
        }
        for tp in &partitions {
            let t = self
                .cluster
                .topic(&tp.topic, self.config.allow_auto_create_topics, self.config.client.request_timeout)
                .await?;
            if !t.partitions.iter().any(|p| p.id == tp.partition) {
                return Err(Error::UnknownPartition(tp.topic.clone(), tp.partition));
            }
        }
        let mut next = BTreeMap::new();
        for tp in partitions {
            let pos = self.positions.get(&tp).copied().unwrap_or(Position::Reset(self.config.auto_offset_reset));
            next.insert(tp, pos);
        }
        self.positions = next;
        let keep = &self.positions;
        self.buffer.retain(|r| keep.contains_key(&TopicPartition::new(r.topic.clone(), r.partition)));
        Ok(())
    }

    /// Every partition of `topic`, for tools that read a whole topic without a group.
    pub async fn partitions_for(&self, topic: &str) -> Result<Vec<TopicPartition>> {
        let t =
            self.cluster.topic(topic, self.config.allow_auto_create_topics, self.config.client.request_timeout).await?;
        Ok(t.partitions.iter().map(|p| TopicPartition::new(topic, p.id)).collect())
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.positions.keys().cloned().collect()
    }

    fn assigned(&self, tp: &TopicPartition) -> Result<()> {
        if self.positions.contains_key(tp) {
            Ok(())
        } else {
            Err(Error::Config(format!("{tp} is not assigned to this consumer")))
        }
    }

    fn drop_buffered(&mut self, tp: &TopicPartition) {
        self.buffer.retain(|r| !(r.topic == tp.topic && r.partition == tp.partition));
    }

    /// The next fetch of `tp` starts at `offset`.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        self.assigned(tp)?;
        self.drop_buffered(tp);
        self.positions.insert(tp.clone(), Position::At(offset));
        Ok(())
    }

    pub fn seek_to_beginning(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_reset(partitions, OffsetReset::Earliest)
    }

    pub fn seek_to_end(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_reset(partitions, OffsetReset::Latest)
    }

    fn seek_reset(&mut self, partitions: &[TopicPartition], to: OffsetReset) -> Result<()> {
        for tp in partitions {
            self.assigned(tp)?;
            self.drop_buffered(tp);
            self.positions.insert(tp.clone(), Position::Reset(to));
        }
        Ok(())
    }

    /// The offset of the next record `poll` returns for `tp` (looked up now if a reset is pending).
    pub async fn position(&mut self, tp: &TopicPartition) -> Result<i64> {
        self.assigned(tp)?;
        self.resolve_resets().await?;
        if let Some(r) = self.buffer.iter().find(|r| r.topic == tp.topic && r.partition == tp.partition) {
            return Ok(r.offset);
        }
        match self.positions.get(tp) {
            Some(Position::At(o)) => Ok(*o),
            _ => Err(Error::NoOffset(tp.topic.clone(), tp.partition)),
        }
    }

    /// The high watermark seen in the last fetch of `tp`.
    pub fn high_watermark(&self, tp: &TopicPartition) -> Option<i64> {
        self.high_watermarks.get(tp).copied()
    }

    /// For each partition, the earliest offset whose record timestamp is at or after the given time.
    pub async fn offsets_for_times(
        &self,
        times: &[(TopicPartition, i64)],
    ) -> Result<HashMap<TopicPartition, Option<OffsetAndTimestamp>>> {
        offsets::list_offsets(&self.cluster, times, self.config.read_committed).await
    }

    pub async fn beginning_offsets(&self, partitions: &[TopicPartition]) -> Result<HashMap<TopicPartition, i64>> {
        self.offsets_at(partitions, offsets::EARLIEST).await
    }

    pub async fn end_offsets(&self, partitions: &[TopicPartition]) -> Result<HashMap<TopicPartition, i64>> {
        self.offsets_at(partitions, offsets::LATEST).await
    }

    async fn offsets_at(&self, partitions: &[TopicPartition], ts: i64) -> Result<HashMap<TopicPartition, i64>> {
        let q: Vec<_> = partitions.iter().map(|tp| (tp.clone(), ts)).collect();
        let r = offsets::list_offsets(&self.cluster, &q, self.config.read_committed).await?;
        Ok(r.into_iter().map(|(tp, o)| (tp, o.map_or(-1, |o| o.offset))).collect())
    }

    async fn resolve_resets(&mut self) -> Result<()> {
        let mut queries = Vec::new();
        for (tp, pos) in &self.positions {
            if let Position::Reset(how) = pos {
                let ts = match how {
                    OffsetReset::Earliest => offsets::EARLIEST,
                    OffsetReset::Latest => offsets::LATEST,
                    OffsetReset::None => return Err(Error::NoOffset(tp.topic.clone(), tp.partition)),
                };
                queries.push((tp.clone(), ts));
            }
        }
        if queries.is_empty() {
            return Ok(());
        }
        let found = offsets::list_offsets(&self.cluster, &queries, self.config.read_committed).await?;
        for (tp, o) in found {
            if let Some(o) = o {
                self.positions.insert(tp, Position::At(o.offset));
            }
        }
        Ok(())
    }

    /// The offsets to commit for the current positions (the next record to read, per partition).
    fn consumed_offsets(&self, only: Option<&[TopicPartition]>) -> BTreeMap<TopicPartition, OffsetAndMetadata> {
        let mut out = BTreeMap::new();
        for (tp, pos) in &self.positions {
            if only.is_some_and(|o| !o.contains(tp)) {
                continue;
            }
            // Records fetched but not yet returned by poll are not consumed: commit the first of them.
            let next =
                self.buffer.iter().find(|r| r.topic == tp.topic && r.partition == tp.partition).map(|r| r.offset);
            if let Some(o) = next.or(match pos {
                Position::At(o) => Some(*o),
                Position::Reset(_) => None,
            }) {
                out.insert(tp.clone(), OffsetAndMetadata { offset: o, metadata: String::new() });
            }
        }
        out
    }

    /// Commits the positions of every assigned partition and waits for the answer.
    pub async fn commit_sync(&mut self) -> Result<()> {
        let offsets = self.consumed_offsets(None);
        self.commit_offsets(&offsets).await
    }

    /// Commits explicit offsets (the next offset to read, as Kafka expects).
    pub async fn commit_offsets(&mut self, offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>) -> Result<()> {
        let group =
            self.group.as_ref().ok_or_else(|| Error::Config("commits need subscribe (group membership)".into()))?;
        group.commit(offsets).await
    }

    /// Commits the positions in the background; the returned handle tells how it went.
    pub fn commit_async(&mut self) -> Result<tokio::task::JoinHandle<Result<()>>> {
        let group =
            self.group.as_ref().ok_or_else(|| Error::Config("commits need subscribe (group membership)".into()))?;
        let fut = group.commit_future(self.consumed_offsets(None));
        Ok(tokio::spawn(fut))
    }

    /// The group's committed offsets for these partitions (partitions without one are left out).
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
        let group =
            self.group.as_ref().ok_or_else(|| Error::Config("committed offsets need group.id and subscribe".into()))?;
        group.committed(partitions).await
    }

    /// Commits (when auto commit is on) and leaves the group, so its partitions move at once.
    pub async fn close(mut self) -> Result<()> {
        let mut result = Ok(());
        if self.config.enable_auto_commit && self.group.is_some() {
            result = self.commit_sync().await;
        }
        if let Some(g) = self.group.as_mut() {
            g.leave().await;
        }
        result
    }

    /// Group housekeeping at the start of `poll`: auto commit, and the rebalance (with the listener's callbacks)
    /// when one is due.
    async fn poll_group(&mut self) -> Result<()> {
        let Some(group) = self.group.as_mut() else { return Ok(()) };
        let events = group.poll().await?;
        for e in events {
            match e {
                RebalanceEvent::Revoked(parts) => {
                    if self.config.enable_auto_commit {
                        let offsets = self.consumed_offsets(Some(&parts));
                        if let Some(g) = self.group.as_ref() {
                            if let Err(err) = g.commit(&offsets).await {
                                tracing::warn!(error = %err, "commit of revoked partitions failed");
                            }
                        }
                    }
                    if let Some(l) = self.listener.as_mut() {
                        l.on_partitions_revoked(&parts);
                    }
                    self.remove_partitions(&parts);
                }
                RebalanceEvent::Lost(parts) => {
                    if let Some(l) = self.listener.as_mut() {
                        l.on_partitions_lost(&parts);
                    }
                    self.remove_partitions(&parts);
                }
                RebalanceEvent::Assigned(parts) => {
                    let committed = match self.group.as_ref() {
                        Some(g) if !parts.is_empty() => g.committed(&parts).await?,
                        _ => BTreeMap::new(),
                    };
                    for tp in &parts {
                        let pos = match committed.get(tp) {
                            Some(o) => Position::At(o.offset),
                            None => Position::Reset(self.config.auto_offset_reset),
                        };
                        self.positions.insert(tp.clone(), pos);
                    }
                    if let Some(l) = self.listener.as_mut() {
                        l.on_partitions_assigned(&parts);
                    }
                }
            }
        }
        if self.config.enable_auto_commit && self.last_auto_commit.elapsed() >= self.config.auto_commit_interval {
            self.last_auto_commit = Instant::now();
            let offsets = self.consumed_offsets(None);
            if let Some(g) = self.group.as_ref() {
                if let Err(e) = g.commit(&offsets).await {
                    tracing::warn!(error = %e, "auto commit failed");
                }
            }
        }
        Ok(())
    }

    fn remove_partitions(&mut self, parts: &[TopicPartition]) {
        for tp in parts {
            self.positions.remove(tp);
            self.drop_buffered(tp);
        }
    }

    /// Returns up to `max.poll.records` records, waiting up to `timeout` for some to arrive; empty on timeout.
    /// With a group subscription this is also where rebalances and auto commits happen.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        self.poll_group().await?;
        loop {
            if !self.buffer.is_empty() {
                let n = self.buffer.len().min(self.config.max_poll_records);
                return Ok(self.buffer.drain(..n).collect());
            }
            if self.positions.is_empty() {
                tokio::time::sleep_until(deadline.into()).await;
                return Ok(Vec::new());
            }
            self.resolve_resets().await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            self.fetch_once(remaining).await?;
            if self.buffer.is_empty() && Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// One round of fetches to every leader of an assigned partition, in parallel.
    async fn fetch_once(&mut self, remaining: Duration) -> Result<()> {
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        let mut unknown = Vec::new();
        for (tp, pos) in &self.positions {
            let Position::At(offset) = pos else { continue };
            match self.cluster.leader(&tp.topic, tp.partition) {
                Some(l) => by_leader.entry(l).or_default().push((tp.clone(), *offset)),
                None => unknown.push(tp.topic.clone()),
            }
        }
        if !unknown.is_empty() {
            unknown.sort();
            unknown.dedup();
            if let Err(e) = self.cluster.fetch_metadata(Some(&unknown), false).await {
                tracing::debug!(error = %e, "metadata refresh failed");
            }
            if by_leader.is_empty() {
                tokio::time::sleep(self.config.client.retry_backoff.min(remaining)).await;
                return Ok(());
            }
        }
        let wait = remaining.min(self.config.fetch_max_wait).as_millis() as i32;
        let cluster = &self.cluster;
        let config = &self.config;
        let results = futures_util::future::join_all(by_leader.iter().map(|(leader, parts)| async move {
            (*leader, fetcher::fetch(cluster, config, *leader, parts, wait).await)
        }))
        .await;
        let mut backoff = false;
        for (leader, result) in results {
            let parts = match result {
                Ok(p) => p,
                Err(e) if e.is_retriable() => {
                    tracing::debug!(leader, error = %e, "fetch failed; will retry");
                    self.cluster.forget_connection(leader).await;
                    for (tp, _) in &by_leader[&leader] {
                        self.cluster.invalidate(&tp.topic);
                    }
                    backoff = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for (tp, fetched) in parts {
                // A seek since the fetch was sent wins over what the fetch returned.
                let sent_at = by_leader[&leader].iter().find(|(q, _)| *q == tp).map(|(_, o)| *o);
                if !matches!(self.positions.get(&tp), Some(Position::At(o)) if Some(*o) == sent_at) {
                    continue;
                }
                match fetched {
                    PartitionFetch::Records { records, next_offset, high_watermark } => {
                        self.high_watermarks.insert(tp.clone(), high_watermark);
                        self.positions.insert(tp, Position::At(next_offset));
                        self.buffer.extend(records);
                    }
                    PartitionFetch::Error(e) if e.code() == Some(1) => {
                        // OFFSET_OUT_OF_RANGE: apply auto.offset.reset, or surface it when that is none.
                        match self.config.auto_offset_reset {
                            OffsetReset::None => return Err(e),
                            how => {
                                tracing::info!(%tp, "offset out of range; resetting to {how:?}");
                                self.positions.insert(tp, Position::Reset(how));
                            }
                        }
                    }
                    PartitionFetch::Error(e) if e.needs_metadata_refresh() || e.is_retriable() => {
                        self.cluster.invalidate(&tp.topic);
                        backoff = true;
                    }
                    PartitionFetch::Error(e) => return Err(e),
                }
            }
        }
        if backoff && self.buffer.is_empty() {
            tokio::time::sleep(self.config.client.retry_backoff.min(remaining)).await;
        }
        Ok(())
    }

    /// The consumer as an endless stream of records (each `poll` waits up to `fetch.max.wait.ms`).
    pub fn into_stream(self) -> impl Stream<Item = Result<ConsumerRecord>> {
        futures_util::stream::unfold((self, VecDeque::new()), |(mut c, mut pending)| async move {
            loop {
                if let Some(r) = pending.pop_front() {
                    return Some((Ok(r), (c, pending)));
                }
                let wait = c.config.fetch_max_wait;
                match c.poll(wait).await {
                    Ok(rs) => pending.extend(rs),
                    Err(e) => return Some((Err(e), (c, pending))),
                }
            }
        })
    }
}
