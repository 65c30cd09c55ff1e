//! The client's view of the cluster: brokers, topics, partition leaders (the metadata cache), and one connection
//! per broker. Anything that finds the view stale (NOT_LEADER_OR_FOLLOWER, unknown topic, a lost connection)
//! calls `refresh`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::{Request, StrBytes};

use crate::config::ClientConfig;
use crate::connection::{Connection, FinalizedFeatures};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub id: i32,
    /// -1 while no leader is known.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    pub error_code: i16,
}

#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub id: uuid::Uuid,
    pub internal: bool,
    /// Sorted by partition id.
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Debug, Default)]
struct Snapshot {
    cluster_id: Option<String>,
    controller_id: i32,
    brokers: HashMap<i32, BrokerInfo>,
    topics: HashMap<String, Arc<TopicInfo>>,
    refreshed: Option<Instant>,
}

pub struct Cluster {
    config: ClientConfig,
    snapshot: RwLock<Snapshot>,
    // Keyed by broker id; the bootstrap connection is kept under -1 until the broker ids are known.
    conns: tokio::sync::Mutex<HashMap<i32, Arc<Connection>>>,
    /// The finalized features of the ApiVersions answer with the highest features epoch seen on any connection
    /// (Java's ApiVersions.getFinalizedFeaturesInfo): the cluster-wide levels, e.g. `transaction.version`.
    features: RwLock<FinalizedFeatures>,
}

const BOOTSTRAP: i32 = -1;

impl Cluster {
    pub fn new(config: ClientConfig) -> Result<Arc<Cluster>> {
        if config.bootstrap_servers.is_empty() {
            return Err(Error::Config("bootstrap.servers is empty".into()));
        }
        Ok(Arc::new(Cluster {
            config,
            snapshot: RwLock::new(Snapshot::default()),
            conns: Default::default(),
            features: RwLock::new(FinalizedFeatures::default()),
        }))
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Opens a connection to `addr` and notes the features its broker finalizes.
    pub async fn connect(&self, addr: &str) -> Result<Arc<Connection>> {
        let c = Connection::connect(addr, &self.config).await?;
        self.note_features(c.finalized_features());
        Ok(c)
    }

    /// Keeps `seen` when its epoch is newer than that of the features known (Java's ApiVersions.update).
    pub(crate) fn note_features(&self, seen: FinalizedFeatures) {
        let mut features = self.features.write().unwrap_or_else(|e| e.into_inner());
        if seen.epoch > features.epoch {
            *features = seen;
        }
    }

    /// The finalized features with the highest epoch any broker answered so far.
    pub fn finalized_features(&self) -> FinalizedFeatures {
        self.features.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Any live connection: an existing one, else a known broker, else the bootstrap servers in order.
    pub async fn any_connection(&self) -> Result<Arc<Connection>> {
        let mut conns = self.conns.lock().await;
        conns.retain(|_, c| !c.is_closed());
        if let Some(c) = conns.values().next() {
            return Ok(c.clone());
        }
        let known: Vec<(i32, String)> =
            self.read().brokers.values().map(|b| (b.id, format!("{}:{}", b.host, b.port))).collect();
        let candidates = known.into_iter().chain(self.config.bootstrap_servers.iter().map(|a| (BOOTSTRAP, a.clone())));
        let mut first_err = None;
        for (id, addr) in candidates {
            match self.connect(&addr).await {
                Ok(c) => {
                    conns.insert(id, c.clone());
                    return Ok(c);
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "connect failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| Error::Config("no brokers to connect to".into())))
    }

    /// The connection to broker `id`, opened on first use.
    pub async fn connection(&self, id: i32) -> Result<Arc<Connection>> {
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(&id) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
            conns.remove(&id);
        }
        let addr = match self.read().brokers.get(&id) {
            Some(b) => format!("{}:{}", b.host, b.port),
            None => return Err(Error::Protocol(format!("broker {id} is not in the cluster metadata"))),
        };
        let c = self.connect(&addr).await?;
        conns.insert(id, c.clone());
        Ok(c)
    }

    /// Drops a connection known to be broken so the next use reconnects.
    pub async fn forget_connection(&self, id: i32) {
        self.conns.lock().await.remove(&id);
    }

    /// Fetches metadata for `topics` (all topics when `None`) and updates the cache.
    pub async fn fetch_metadata(&self, topics: Option<&[String]>, auto_create: bool) -> Result<MetadataResponse> {
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(auto_create);
        let mut last = None;
        // Two tries: a connection may have died since its last use.
        for _ in 0..2 {
            let conn = self.any_connection().await?;
            match conn.call(&req).await {
                Ok(resp) => {
                    self.apply(&resp, topics.is_none());
                    return Ok(resp);
                }
                Err(e) if e.is_retriable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::Closed))
    }

    fn apply(&self, resp: &MetadataResponse, all_topics: bool) {
        let mut s = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
        s.cluster_id = resp.cluster_id.as_ref().map(|c| c.to_string());
        s.controller_id = resp.controller_id.0;
        s.brokers = resp
            .brokers
            .iter()
            .map(|b| {
                let info = BrokerInfo {
                    id: b.node_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                };
                (b.node_id.0, info)
            })
            .collect();
        if all_topics {
            s.topics.clear();
        }
        for t in &resp.topics {
            let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else { continue };
            if t.error_code != 0 {
                s.topics.remove(&name);
                continue;
            }
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    id: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
                    error_code: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.id);
            s.topics.insert(
                name.clone(),
                Arc::new(TopicInfo { name, id: t.topic_id, internal: t.is_internal, partitions }),
            );
        }
        s.refreshed = Some(Instant::now());
    }

    /// The cached topic, if known and not older than metadata.max.age.
    pub fn cached_topic(&self, name: &str) -> Option<Arc<TopicInfo>> {
        let s = self.read();
        let fresh = s.refreshed.is_some_and(|r| r.elapsed() < self.config.metadata_max_age);
        if fresh {
            s.topics.get(name).cloned()
        } else {
            None
        }
    }

    /// The topic from the cache, or from the brokers, waiting up to `wait` while it is being created.
    pub async fn topic(&self, name: &str, auto_create: bool, wait: Duration) -> Result<Arc<TopicInfo>> {
        if let Some(t) = self.cached_topic(name) {
            return Ok(t);
        }
        let deadline = Instant::now() + wait;
        // A topic created a moment ago may be missing from a broker's metadata for a few milliseconds (Kafka applies
        // its metadata log asynchronously): UNKNOWN_TOPIC_OR_PARTITION is believed once it persisted for half a
        // second (or `wait`), not at the first answer.
        let mut unknown_since: Option<Instant> = None;
        loop {
            let resp = match self.fetch_metadata(Some(&[name.to_string()]), auto_create).await {
                Ok(r) => r,
                // Brokers unreachable for now (e.g. restarting): keep trying until `wait` is used up.
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    tracing::debug!(topic = name, error = %e, "metadata not available yet");
                    tokio::time::sleep(self.config.retry_backoff).await;
                    continue;
                }
                Err(e) if e.is_retriable() => {
                    return Err(Error::Timeout(format!("metadata for topic '{name}' (last error: {e})"), wait));
                }
                Err(e) => return Err(e),
            };
            let code = resp.topics.first().map(|t| t.error_code).unwrap_or(3);
            match code {
                0 => {
                    if let Some(t) = self.read().topics.get(name).cloned() {
                        return Ok(t);
                    }
                }
                3 if unknown_since.is_some_and(|t| t.elapsed() >= Duration::from_millis(500))
                    || Instant::now() >= deadline =>
                {
                    return Err(Error::UnknownTopic(name.to_string()))
                }
                3 => {
                    unknown_since.get_or_insert_with(Instant::now);
                }
                // LEADER_NOT_AVAILABLE while an auto-created topic gets its partitions: wait and ask again.
                5 if Instant::now() < deadline => {}
                code => return Err(Error::kafka(code, format!("metadata for topic '{name}'"), None)),
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!("metadata for topic '{name}'"), wait));
            }
            let pause = if code == 3 {
                self.config.retry_backoff.min(Duration::from_millis(50))
            } else {
                self.config.retry_backoff
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// The leader of a partition from the cache; `None` when unknown (refresh first).
    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        let s = self.read();
        let p = s.topics.get(topic)?.partitions.iter().find(|p| p.id == partition)?;
        (p.leader >= 0).then_some(p.leader)
    }

    /// Drops the cached topic so the next lookup goes to the brokers.
    pub fn invalidate(&self, topic: &str) {
        self.snapshot.write().unwrap_or_else(|e| e.into_inner()).topics.remove(topic);
    }

    pub fn brokers(&self) -> Vec<BrokerInfo> {
        let mut b: Vec<BrokerInfo> = self.read().brokers.values().cloned().collect();
        b.sort_by_key(|b| b.id);
        b
    }

    pub fn cluster_id(&self) -> Option<String> {
        self.read().cluster_id.clone()
    }

    pub fn controller_id(&self) -> i32 {
        self.read().controller_id
    }

    /// A connection to the controller if the metadata names one we know, else any broker (KRaft brokers forward
    /// admin requests to the controller themselves).
    pub async fn controller_connection(&self) -> Result<Arc<Connection>> {
        if self.read().refreshed.is_none() {
            self.fetch_metadata(Some(&[]), false).await?;
        }
        let id = self.controller_id();
        if self.read().brokers.contains_key(&id) {
            if let Ok(c) = self.connection(id).await {
                return Ok(c);
            }
        }
        self.any_connection().await
    }

    /// Sends `req` to any broker, retrying once on a lost connection.
    pub async fn call_any<R: Request + Clone>(&self, req: &R) -> Result<R::Response> {
        let mut last = None;
        for _ in 0..2 {
            let conn = self.any_connection().await?;
            match conn.call(req).await {
                Err(e @ Error::Disconnected { .. }) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or(Error::Closed))
    }
}
