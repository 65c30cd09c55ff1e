//! A consumer's membership in a classic group: JoinGroup (with KIP-394's MEMBER_ID_REQUIRED step), the leader's
//! assignment with a client-side assignor, SyncGroup, and heartbeats from a background task. As in the Java
//! client, rebalances themselves run inside `poll` (so the rebalance listener runs on the application's task),
//! while the heartbeat task keeps the session alive, notices rebalances, and leaves the group when `poll` has not
//! been called for `max.poll.interval.ms`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use regex_automata::meta::Regex;

use super::assignor::{
    decode_assignment, decode_subscription, diff, encode_assignment, encode_subscription, Assignor, Subscription,
};
use super::coordinator;
use super::offsets::{self, Committer, OffsetAndMetadata};
use crate::cluster::Cluster;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::record::TopicPartition;

/// What a rebalance did to this consumer's partitions, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// Given up in an orderly way (its offsets can still be committed).
    Revoked(Vec<TopicPartition>),
    Assigned(Vec<TopicPartition>),
    /// Taken away without a chance to commit (the member was fenced or its session expired).
    Lost(Vec<TopicPartition>),
}

/// Kafka's ConsumerRebalanceListener.
pub trait RebalanceListener: Send {
    fn on_partitions_revoked(&mut self, _partitions: &[TopicPartition]) {}
    fn on_partitions_assigned(&mut self, _partitions: &[TopicPartition]) {}
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.on_partitions_revoked(partitions);
    }
}

#[derive(Debug, Clone)]
pub enum Topics {
    Names(Vec<String>),
    /// Matched against the whole topic name, internal topics excluded.
    Pattern(String),
}

#[derive(Debug, Clone)]
pub struct MembershipConfig {
    pub group_id: String,
    pub instance_id: Option<String>,
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// Also the rebalance timeout sent in JoinGroup, as the Java client does.
    pub max_poll_interval: Duration,
    pub assignors: Vec<Assignor>,
}

/// State shared with the heartbeat task.
struct Shared {
    coordinator: Option<Arc<Connection>>,
    member_id: String,
    generation: i32,
    stable: bool,
    rejoin_needed: bool,
    /// The member was fenced or expired: its partitions are lost, not revoked.
    lost: bool,
    last_poll: Instant,
    stopped: bool,
}

pub struct GroupMember {
    cluster: Arc<Cluster>,
    config: MembershipConfig,
    topics: Topics,
    shared: Arc<Mutex<Shared>>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    owned: Vec<TopicPartition>,
    /// Topics a pattern matched at the last join, to notice new matching topics.
    matched: Vec<String>,
    last_metadata_check: Instant,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// LeaveGroup names the member at the top level before v3 and in the members list from v3 on.
async fn send_leave(conn: &Connection, group: &str, member_id: &str, reason: &str) -> Result<()> {
    let version = conn.version::<LeaveGroupRequest>()?;
    let mut req = LeaveGroupRequest::default().with_group_id(GroupId(s(group)));
    if version >= 3 {
        let mut m = MemberIdentity::default().with_member_id(s(member_id));
        if version >= 5 {
            m.reason = Some(s(reason));
        }
        req.members = vec![m];
    } else {
        req.member_id = s(member_id);
    }
    let resp = conn.call_version(&req, version).await?;
    crate::error::check(resp.error_code, || format!("LeaveGroup of group {group}"), None)?;
    for m in resp.members {
        crate::error::check(m.error_code, || format!("LeaveGroup of member {member_id}"), None)?;
    }
    Ok(())
}

fn code_of(e: &Error) -> Option<ResponseError> {
    e.response_error()
}

impl GroupMember {
    pub fn new(cluster: Arc<Cluster>, config: MembershipConfig, topics: Topics) -> Result<GroupMember> {
        if let Topics::Pattern(p) = &topics {
            Regex::new(p).map_err(|e| Error::Config(format!("invalid subscription pattern '{p}': {e}")))?;
        }
        if config.assignors.is_empty() {
            return Err(Error::Config("partition.assignment.strategy names no assignor".into()));
        }
        Ok(GroupMember {
            cluster,
            config,
            topics,
            shared: Arc::new(Mutex::new(Shared {
                coordinator: None,
                member_id: String::new(),
                generation: -1,
                stable: false,
                rejoin_needed: true,
                lost: false,
                last_poll: Instant::now(),
                stopped: false,
            })),
            heartbeat: None,
            owned: Vec::new(),
            matched: Vec::new(),
            last_metadata_check: Instant::now(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn owned(&self) -> &[TopicPartition] {
        &self.owned
    }

    pub fn generation(&self) -> (i32, String) {
        let s = self.lock();
        (s.generation, s.member_id.clone())
    }

    async fn coordinator(&self) -> Result<Arc<Connection>> {
        if let Some(c) = self.lock().coordinator.clone().filter(|c| !c.is_closed()) {
            return Ok(c);
        }
        let c = coordinator::connect(&self.cluster, &self.config.group_id).await?;
        self.lock().coordinator = Some(c.clone());
        Ok(c)
    }

    fn forget_coordinator(&self) {
        self.lock().coordinator = None;
    }

    /// The topics subscribed right now (a pattern resolved against fresh metadata).
    async fn subscribed_topics(&mut self) -> Result<Vec<String>> {
        match &self.topics {
            Topics::Names(n) => Ok(n.clone()),
            Topics::Pattern(p) => {
                let re = Regex::new(&format!("^(?:{p})$")).map_err(|e| Error::Config(e.to_string()))?;
                let md = self.cluster.fetch_metadata(None, false).await?;
                let mut out: Vec<String> = md
                    .topics
                    .iter()
                    .filter(|t| !t.is_internal)
                    .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
                    .filter(|n| re.is_match(n))
                    .collect();
                out.sort();
                Ok(out)
            }
        }
    }

    /// Called from `poll`: records the poll, and runs a rebalance when one is needed. Returns what changed.
    pub async fn poll(&mut self) -> Result<Vec<RebalanceEvent>> {
        self.lock().last_poll = Instant::now();
        // A pattern subscription notices new matching topics on each metadata check.
        if matches!(self.topics, Topics::Pattern(_)) && self.last_metadata_check.elapsed() >= Duration::from_secs(5) {
            self.last_metadata_check = Instant::now();
            if self.subscribed_topics().await? != self.matched {
                self.lock().rejoin_needed = true;
            }
        }
        let mut events = Vec::new();
        {
            let mut sh = self.lock();
            if sh.lost {
                sh.lost = false;
                sh.member_id.clear();
                sh.generation = -1;
                drop(sh);
                if !self.owned.is_empty() {
                    events.push(RebalanceEvent::Lost(std::mem::take(&mut self.owned)));
                }
            } else if !sh.rejoin_needed {
                return Ok(events);
            }
        }
        self.rebalance(&mut events).await?;
        Ok(events)
    }

    async fn rebalance(&mut self, events: &mut Vec<RebalanceEvent>) -> Result<()> {
        let cooperative = self.config.assignors.iter().all(|a| a.is_cooperative());
        if !cooperative && !self.owned.is_empty() {
            // Eager protocol: everything is given up before joining.
            events.push(RebalanceEvent::Revoked(std::mem::take(&mut self.owned)));
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.join_and_sync(cooperative, events).await {
                Ok(()) => break,
                Err(e) => {
                    let code = code_of(&e);
                    let retry = match code {
                        Some(ResponseError::UnknownMemberId) | Some(ResponseError::IllegalGeneration) => {
                            let mut sh = self.lock();
                            sh.member_id.clear();
                            sh.generation = -1;
                            drop(sh);
                            if !self.owned.is_empty() {
                                events.push(RebalanceEvent::Lost(std::mem::take(&mut self.owned)));
                            }
                            true
                        }
                        Some(ResponseError::RebalanceInProgress) => true,
                        Some(ResponseError::NotCoordinator)
                        | Some(ResponseError::CoordinatorNotAvailable)
                        | Some(ResponseError::CoordinatorLoadInProgress) => {
                            self.forget_coordinator();
                            true
                        }
                        _ => matches!(e, Error::Disconnected { .. } | Error::Connect { .. }),
                    };
                    if matches!(e, Error::Disconnected { .. }) {
                        self.forget_coordinator();
                    }
                    if !retry || attempts >= 50 {
                        return Err(e);
                    }
                    tokio::time::sleep(self.cluster.config().retry_backoff).await;
                }
            }
        }
        self.start_heartbeat();
        Ok(())
    }

    async fn join_and_sync(&mut self, cooperative: bool, events: &mut Vec<RebalanceEvent>) -> Result<()> {
        let conn = self.coordinator().await?;
        let topics = self.subscribed_topics().await?;
        self.matched = topics.clone();
        let (generation, mut member_id) = self.generation();
        let subscription = Subscription { topics: topics.clone(), owned: self.owned.clone(), generation };
        let protocols: Vec<JoinGroupRequestProtocol> = self
            .config
            .assignors
            .iter()
            .map(|a| {
                JoinGroupRequestProtocol::default()
                    .with_name(s(a.name()))
                    .with_metadata(encode_subscription(&subscription))
            })
            .collect();
        {
            let mut sh = self.lock();
            sh.stable = false;
            sh.rejoin_needed = false;
        }
        let join = loop {
            let req = JoinGroupRequest::default()
                .with_group_id(GroupId(s(&self.config.group_id)))
                .with_session_timeout_ms(self.config.session_timeout.as_millis() as i32)
                .with_rebalance_timeout_ms(self.config.max_poll_interval.as_millis() as i32)
                .with_member_id(s(&member_id))
                .with_group_instance_id(self.config.instance_id.as_deref().map(s))
                .with_protocol_type(s("consumer"))
                .with_protocols(protocols.clone());
            let resp = conn.call(&req).await?;
            if resp.error_code == ResponseError::MemberIdRequired.code() {
                member_id = resp.member_id.to_string();
                self.lock().member_id = member_id.clone();
                continue;
            }
            crate::error::check(resp.error_code, || format!("JoinGroup of group {}", self.config.group_id), None)?;
            break resp;
        };
        member_id = join.member_id.to_string();
        let generation = join.generation_id;
        let protocol = join.protocol_name.as_ref().map(|p| p.to_string()).unwrap_or_default();
        {
            let mut sh = self.lock();
            sh.member_id = member_id.clone();
            sh.generation = generation;
        }
        let mut assignments = Vec::new();
        if join.leader.as_str() == member_id && !join.skip_assignment {
            let assignor = Assignor::parse(&protocol)
                .ok_or_else(|| Error::Protocol(format!("the group chose unknown assignor '{protocol}'")))?;
            let members: Vec<(String, Subscription)> = join
                .members
                .iter()
                .map(|m| (m.member_id.to_string(), decode_subscription(&m.metadata).unwrap_or_default()))
                .collect();
            let mut partitions = BTreeMap::new();
            for t in members.iter().flat_map(|(_, s)| s.topics.iter()) {
                if partitions.contains_key(t) {
                    continue;
                }
                if let Ok(info) = self.cluster.topic(t, false, self.cluster.config().request_timeout).await {
                    partitions.insert(t.clone(), info.partitions.len() as i32);
                }
            }
            for (m, parts) in assignor.assign(&members, &partitions) {
                assignments.push(
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(&m))
                        .with_assignment(encode_assignment(&parts)),
                );
            }
        }
        let version = conn.version::<SyncGroupRequest>()?;
        let mut sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&self.config.group_id)))
            .with_generation_id(generation)
            .with_member_id(s(&member_id))
            .with_group_instance_id(self.config.instance_id.as_deref().map(s))
            .with_assignments(assignments);
        if version >= 5 {
            sync.protocol_type = Some(s("consumer"));
            sync.protocol_name = Some(s(&protocol));
        }
        let resp = conn.call_version(&sync, version).await?;
        crate::error::check(resp.error_code, || format!("SyncGroup of group {}", self.config.group_id), None)?;
        let assigned =
            decode_assignment(&resp.assignment).ok_or_else(|| Error::Protocol("undecodable assignment".into()))?;
        let (revoked, added) = diff(&self.owned, &assigned);
        if !revoked.is_empty() {
            events.push(RebalanceEvent::Revoked(revoked.clone()));
            if cooperative {
                // The revoked partitions go to another member in a follow-up rebalance, which we trigger.
                self.lock().rejoin_needed = true;
            }
        }
        self.owned = assigned;
        events.push(RebalanceEvent::Assigned(added));
        self.lock().stable = true;
        tracing::debug!(group = %self.config.group_id, generation, member = %member_id, partitions = self.owned.len(), "joined group");
        Ok(())
    }

    fn start_heartbeat(&mut self) {
        if self.heartbeat.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let shared = self.shared.clone();
        let config = self.config.clone();
        self.heartbeat = Some(tokio::spawn(heartbeat_loop(shared, config)));
    }

    pub async fn commit(&self, offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let conn = self.coordinator().await?;
        let (generation, member_id) = self.generation();
        let who = Committer { generation, member_id, instance_id: self.config.instance_id.clone() };
        let r = offsets::commit(&conn, &self.config.group_id, &who, offsets).await;
        if let Err(e) = &r {
            if matches!(
                code_of(e),
                Some(ResponseError::RebalanceInProgress)
                    | Some(ResponseError::IllegalGeneration)
                    | Some(ResponseError::UnknownMemberId)
            ) {
                self.lock().rejoin_needed = true;
            }
        }
        r
    }

    /// A commit that runs on its own (for `commit_async`), with the generation as of now.
    pub fn commit_future(
        &self,
        offsets: BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        let cluster = self.cluster.clone();
        let shared = self.shared.clone();
        let group = self.config.group_id.clone();
        let instance_id = self.config.instance_id.clone();
        async move {
            if offsets.is_empty() {
                return Ok(());
            }
            let (conn, generation, member_id) = {
                let sh = shared.lock().unwrap_or_else(|e| e.into_inner());
                (sh.coordinator.clone(), sh.generation, sh.member_id.clone())
            };
            let conn = match conn {
                Some(c) => c,
                None => coordinator::connect(&cluster, &group).await?,
            };
            offsets::commit(&conn, &group, &Committer { generation, member_id, instance_id }, &offsets).await
        }
    }

    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
        let conn = self.coordinator().await?;
        offsets::fetch(&conn, &self.config.group_id, Some(partitions)).await
    }

    /// Leaves the group (static members do not: their session keeps their partitions through a restart).
    pub async fn leave(&mut self) {
        let (member_id, conn) = {
            let mut sh = self.lock();
            sh.stopped = true;
            (sh.member_id.clone(), sh.coordinator.clone())
        };
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        if member_id.is_empty() || self.config.instance_id.is_some() {
            return;
        }
        if let Some(conn) = conn {
            if let Err(e) = send_leave(&conn, &self.config.group_id, &member_id, "the consumer is being closed").await {
                tracing::debug!(group = %self.config.group_id, error = %e, "LeaveGroup failed");
            }
        }
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

/// What the heartbeat task does next, decided under the lock and done without it.
enum Next {
    Skip,
    Stop,
    /// `max.poll.interval.ms` passed without a poll.
    PollTimeout(Option<Arc<Connection>>, String),
    Beat(Arc<Connection>, String, i32),
}

async fn heartbeat_loop(shared: Arc<Mutex<Shared>>, config: MembershipConfig) {
    let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        tokio::time::sleep(config.heartbeat_interval).await;
        let next = {
            let sh = lock();
            if sh.stopped {
                Next::Stop
            } else if !sh.stable || sh.rejoin_needed {
                Next::Skip
            } else if sh.last_poll.elapsed() > config.max_poll_interval {
                Next::PollTimeout(sh.coordinator.clone(), sh.member_id.clone())
            } else {
                match sh.coordinator.clone() {
                    Some(c) => Next::Beat(c, sh.member_id.clone(), sh.generation),
                    None => Next::Skip,
                }
            }
        };
        let (conn, member_id, generation) = match next {
            Next::Stop => return,
            Next::Skip => continue,
            Next::PollTimeout(conn, member_id) => {
                // The application stopped polling: give the partitions to a member that will (Java's behaviour).
                tracing::warn!(group = %config.group_id, "max.poll.interval.ms exceeded; leaving the group");
                if let (Some(c), false) = (conn, config.instance_id.is_some()) {
                    let _ = send_leave(&c, &config.group_id, &member_id, "consumer poll timeout has expired").await;
                }
                let mut sh = lock();
                sh.lost = true;
                sh.stable = false;
                sh.rejoin_needed = true;
                continue;
            }
            Next::Beat(c, m, g) => (c, m, g),
        };
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(s(&config.group_id)))
            .with_generation_id(generation)
            .with_member_id(s(&member_id))
            .with_group_instance_id(config.instance_id.as_deref().map(s));
        let result = conn.call(&req).await;
        let mut sh = lock();
        if sh.generation != generation {
            continue; // a rebalance happened meanwhile
        }
        match result.map(|r| ResponseError::try_from_code(r.error_code)) {
            Ok(None) => {}
            Ok(Some(ResponseError::RebalanceInProgress)) => sh.rejoin_needed = true,
            Ok(Some(
                ResponseError::UnknownMemberId | ResponseError::IllegalGeneration | ResponseError::FencedInstanceId,
            )) => {
                sh.lost = true;
                sh.stable = false;
                sh.rejoin_needed = true;
            }
            Ok(Some(ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable)) | Err(_) => {
                sh.coordinator = None;
                sh.rejoin_needed = true;
            }
            Ok(Some(e)) => tracing::warn!(group = %config.group_id, error = ?e, "heartbeat failed"),
        }
    }
}
