//! The broker's shared state: configuration, the metadata image and its log, and the hosted partitions.

use std::sync::{Arc, Mutex, RwLock};

use crate::config::BrokerConfig;
use crate::coordinator::group::GroupCoordinator;
use crate::coordinator::txn::TransactionCoordinator;
use crate::metadata::{MetadataImage, MetadataLog, MetadataRecord};
use crate::producer_ids::ProducerIdManager;
use crate::replica_manager::ReplicaManager;

pub struct Broker {
    pub config: BrokerConfig,
    pub cluster_id: String,
    /// The metadata log and the image of everything appended to it; `commit` decides against that image.
    committed: Mutex<Committed>,
    /// The image the replica manager last followed. Its lock serializes following, and is never taken while
    /// `committed` is held, so logs are opened without the metadata lock.
    applied: Mutex<Arc<MetadataImage>>,
    /// The image readers see: published once the partitions it names are opened.
    image: RwLock<Arc<MetadataImage>>,
    pub replicas: ReplicaManager,
    pub groups: GroupCoordinator,
    pub txns: TransactionCoordinator,
    pub producer_ids: ProducerIdManager,
    /// The effective config, republished when a dynamic broker config changes, for parts that apply them live.
    config_changes: tokio::sync::watch::Sender<Arc<BrokerConfig>>,
}

struct Committed {
    log: MetadataLog,
    image: Arc<MetadataImage>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError<E> {
    #[error("{0}")]
    Rejected(E),
    #[error("metadata log write failed: {0}")]
    Io(#[from] std::io::Error),
}

impl Broker {
    /// Opens the data directory: cluster identity, metadata log replay, and every partition's log. Blocking.
    pub fn open(config: BrokerConfig) -> anyhow::Result<Broker> {
        std::fs::create_dir_all(&config.log_dir)?;
        let meta_dir = config.log_dir.join("meta");
        std::fs::create_dir_all(&meta_dir)?;
        let cluster_id = load_or_create_cluster_id(&meta_dir, config.node_id)?;
        let (log, image, count) = MetadataLog::open(&meta_dir)?;
        tracing::info!(records = count, topics = image.topics.len(), "metadata log replayed");
        let replicas = ReplicaManager::new(config.clone());
        replicas.load(&image)?;
        let image = Arc::new(image);
        let effective = Arc::new(effective_config(&config, &image));
        Ok(Broker {
            groups: GroupCoordinator::new(&config),
            txns: TransactionCoordinator::new(&effective),
            config,
            cluster_id,
            committed: Mutex::new(Committed { log, image: image.clone() }),
            applied: Mutex::new(image.clone()),
            image: RwLock::new(image),
            replicas,
            producer_ids: ProducerIdManager::default(),
            config_changes: tokio::sync::watch::Sender::new(effective),
        })
    }

    /// The current metadata image (a cheap snapshot).
    pub fn image(&self) -> Arc<MetadataImage> {
        match self.image.read() {
            Ok(i) => i.clone(),
            Err(e) => e.into_inner().clone(),
        }
    }

    /// Follows the effective config as dynamic broker configs change.
    pub fn subscribe_config(&self) -> tokio::sync::watch::Receiver<Arc<BrokerConfig>> {
        self.config_changes.subscribe()
    }

    /// The broker config with the image's dynamic broker configs layered over the static ones.
    pub fn effective_config(&self) -> BrokerConfig {
        effective_config(&self.config, &self.image())
    }

    /// Atomically decides and commits a metadata change: `decide` sees the latest committed image under the
    /// metadata lock and returns the records to append (or a rejection). The records are made durable as one change,
    /// then the lock is released and the replica manager follows the new image; the image is published to readers
    /// once its partitions are open. The logs of partitions the change creates are opened before it is made durable
    /// (`ReplicaManager::prepare`): if one cannot be, nothing is committed and the directories made for it are
    /// removed (after a crash in between, the next start sets them aside as strays, as it does any unowned one). Once
    /// durable a change is always applied: a partition whose log cannot be opened later (at a restart) goes offline
    /// rather than failing the change (which would fail again on every restart). Blocking: call from a blocking
    /// thread.
    pub fn commit<T, E>(
        &self,
        decide: impl FnOnce(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), E>,
    ) -> Result<T, CommitError<E>> {
        let out = {
            let mut committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
            let (records, out) = decide(&committed.image).map_err(CommitError::Rejected)?;
            if !records.is_empty() {
                let mut new = (*committed.image).clone();
                for r in &records {
                    new.apply(r);
                }
                // New partitions get their logs before the change is durable, so that a creation is all or nothing.
                let prepared = self.replicas.prepare(&committed.image, &new)?;
                if let Err(e) = committed.log.append(&records) {
                    self.replicas.discard_prepared(prepared);
                    return Err(e.into());
                }
                // Taken by the replica manager when it follows this image.
                let _ = prepared;
                committed.image = Arc::new(new);
            }
            out
        };
        // Also when nothing was appended: `decide` may have seen a change another commit has not published yet.
        self.follow_committed();
        Ok(out)
    }

    /// Brings the replica manager and the published image up to the latest committed image. Whoever holds the
    /// `applied` lock follows every change committed so far, so when this returns the caller's change is published.
    fn follow_committed(&self) {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let latest = self.committed.lock().unwrap_or_else(|e| e.into_inner()).image.clone();
        if Arc::ptr_eq(&applied, &latest) {
            return;
        }
        // Partitions exist before clients can see the topic in the image.
        self.replicas.apply_change(&applied, &latest);
        if applied.broker_configs != latest.broker_configs {
            let effective = effective_config(&self.config, &latest);
            self.txns.apply_dynamic_config(&effective);
            self.config_changes.send_replace(Arc::new(effective));
        }
        *self.image.write().unwrap_or_else(|e| e.into_inner()) = latest.clone();
        // After the image, so commits that follow see the topic gone and cannot bring its offsets back.
        let deleted: std::collections::BTreeSet<String> =
            applied.ids.iter().filter(|(id, _)| !latest.ids.contains_key(*id)).map(|(_, name)| name.clone()).collect();
        if !deleted.is_empty() {
            self.groups.on_topics_deleted(&deleted);
        }
        *applied = latest;
    }
}

/// `config` with the dynamic configs of `image` for this node and the cluster default layered in.
pub fn effective_config(config: &BrokerConfig, image: &MetadataImage) -> BrokerConfig {
    config.with_dynamic(image.broker_config(&config.node_id.to_string()), image.broker_config(""))
}

/// Kafka keeps the cluster id in `meta.properties`; so does Strom, generated on first start.
fn load_or_create_cluster_id(meta_dir: &std::path::Path, node_id: i32) -> anyhow::Result<String> {
    let path = meta_dir.join("meta.properties");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let props = BrokerConfig::parse_properties(&text)?;
        if let Some(id) = props.get("cluster.id") {
            return Ok(id.clone());
        }
    }
    let id = base64_url(uuid::Uuid::new_v4().as_bytes());
    let tmp = meta_dir.join("meta.properties.tmp");
    std::fs::write(&tmp, format!("version=1\ncluster.id={id}\nnode.id={node_id}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(meta_dir)?.sync_all()?;
    Ok(id)
}

/// Kafka prints cluster ids as URL-safe base64 without padding (22 characters for 16 bytes).
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::controller::{create_test_topic as create_topic, ApiError};

    #[test]
    fn cluster_id_is_22_chars() {
        assert_eq!(super::base64_url(&[0u8; 16]).len(), 22);
        assert_eq!(super::base64_url(b"Man"), "TWFu");
    }

    fn open(dir: &Path) -> Broker {
        let values = BTreeMap::from([("log.dirs".to_string(), dir.display().to_string())]);
        Broker::open(BrokerConfig::from_values(values).unwrap()).unwrap()
    }

    /// A durable change whose partition cannot be opened (at a restart) is still applied: the topic exists with that
    /// partition offline, the broker restarts, the other topics serve, and Metadata reports the storage error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partition_that_cannot_open_goes_offline() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path());
        create_topic(&broker, "good");
        create_topic(&broker, "bad");
        broker.replicas.shutdown();
        drop(broker);
        // A file where the partition's directory was: its log cannot be opened.
        std::fs::remove_dir_all(dir.path().join("bad-0")).unwrap();
        std::fs::write(dir.path().join("bad-0"), b"not a directory").unwrap();
        let broker = open(dir.path());
        assert!(broker.image().topic("bad").is_some());
        assert!(broker.replicas.get("bad", 0).is_none() && broker.replicas.is_offline("bad", 0));
        let image = broker.image();
        let described = crate::handlers::metadata::describe_topic(12, image.topic("bad").unwrap(), &broker);
        let p = &described.partitions[0];
        assert_eq!(p.error_code, kafka_protocol::ResponseError::KafkaStorageError.code());
        assert_eq!((p.leader_id.0, p.offline_replicas.iter().map(|r| r.0).collect::<Vec<_>>()), (-1, vec![1]));
        let described = crate::handlers::metadata::describe_topic(12, image.topic("good").unwrap(), &broker);
        assert_eq!((described.partitions[0].error_code, described.partitions[0].leader_id.0), (0, 1));
        // The next change commits as usual and does not retry the offline partition.
        create_topic(&broker, "later");
        assert!(broker.replicas.get("later", 0).is_some() && broker.replicas.is_offline("bad", 0));
        broker.replicas.shutdown();
        drop(broker);

        let broker = open(dir.path());
        assert!(broker.replicas.get("good", 0).is_some() && broker.replicas.get("later", 0).is_some());
        assert!(broker.replicas.is_offline("bad", 0) && !broker.replicas.is_offline("good", 0));
        assert_eq!(broker.replicas.not_served_error("bad", 0), kafka_protocol::ResponseError::KafkaStorageError);
        assert_eq!(std::fs::read(dir.path().join("bad-0")).unwrap(), b"not a directory");

        // Deleting the topic takes the offline partition with it; a new topic of that name starts empty.
        broker
            .commit(|image| {
                let id = image.topic("bad").unwrap().topic_id;
                Ok::<_, ApiError>((vec![MetadataRecord::RemoveTopicRecord { topic_id: id }], ()))
            })
            .unwrap();
        assert!(!broker.replicas.is_offline("bad", 0));
        create_topic(&broker, "bad");
        assert_eq!(broker.replicas.get("bad", 0).unwrap().high_watermark(), 0);
        broker.replicas.shutdown();
    }

    /// A creation whose partitions cannot all get their logs is refused whole with the storage error: no topic, no
    /// directory left of it (a file that was in the way stays), also after a restart; then it succeeds once the way
    /// is clear, and other creations are unaffected.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_creation_whose_storage_fails_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path());
        let create = |broker: &Broker, name: &str, partitions: i32| {
            broker.commit(|image| {
                let t = crate::controller::NewTopic {
                    name,
                    num_partitions: partitions,
                    replication_factor: -1,
                    assignments: Vec::new(),
                    configs: BTreeMap::new(),
                };
                Ok::<_, ApiError>((crate::controller::plan_create_topic(image, &broker.config, &t)?.records, ()))
            })
        };
        let entries = |dir: &Path| {
            let mut names: Vec<String> =
                std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
            names.sort();
            names
        };
        // Partition 7 of 10 cannot be created: a file is where its directory goes.
        std::fs::write(dir.path().join("many-7"), b"in the way").unwrap();
        let before = entries(dir.path());
        let err = create(&broker, "many", 10).unwrap_err();
        assert!(
            matches!(&err, crate::broker::CommitError::Io(e) if e.to_string().contains("partition 7 of topic many"))
        );
        assert!(broker.image().topic("many").is_none());
        assert!((0..10).all(|p| broker.replicas.get("many", p).is_none() && !broker.replicas.is_offline("many", p)));
        assert_eq!(entries(dir.path()), before);
        create(&broker, "other", 3).unwrap();
        broker.replicas.shutdown();
        drop(broker);

        let broker = open(dir.path());
        assert!(broker.image().topic("many").is_none());
        assert!(broker.replicas.get("other", 2).is_some());
        assert_eq!(std::fs::read(dir.path().join("many-7")).unwrap(), b"in the way");
        assert!(entries(dir.path()).iter().all(|n| !n.starts_with("many-") || n == "many-7"));
        std::fs::remove_file(dir.path().join("many-7")).unwrap();
        create(&broker, "many", 10).unwrap();
        assert_eq!(broker.image().topic("many").unwrap().partitions.len(), 10);
        assert!((0..10).all(|p| broker.replicas.get("many", p).is_some()));
        broker.replicas.shutdown();
    }

    /// Directories under log.dirs that the image does not name: partition-like ones are renamed aside with their
    /// contents, others are left alone, and a deletion that a crash interrupted is completed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stray_directories_are_renamed_aside_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path());
        create_topic(&broker, "kept");
        broker.replicas.shutdown();
        drop(broker);
        for d in ["foo-0", "kept-7", "notes", "foo-x", "kept-0.0123456789abcdef0123456789abcdef-delete"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
            std::fs::write(dir.path().join(d).join("data"), d).unwrap();
        }

        let broker = open(dir.path());
        assert!(broker.replicas.get("kept", 0).is_some());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let names = loop {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect();
            names.sort();
            if !names.iter().any(|n| n.ends_with("-delete")) || std::time::Instant::now() > deadline {
                break names;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let strays: Vec<&String> = names.iter().filter(|n| n.ends_with("-stray")).collect();
        assert_eq!(strays.len(), 2, "{names:?}");
        for (stray, original) in strays.iter().zip(["foo-0", "kept-7"]) {
            assert!(stray.starts_with(&format!("{original}.")), "{names:?}");
            assert_eq!(std::fs::read_to_string(dir.path().join(stray).join("data")).unwrap(), original);
        }
        for kept in ["foo-x", "kept-0", "meta", "notes"] {
            assert!(names.iter().any(|n| n == kept), "{kept} missing from {names:?}");
        }
        assert_eq!(names.len(), 6, "{names:?}");
        broker.replicas.shutdown();
        drop(broker);
        // Strays stay as they are on the next start.
        let broker = open(dir.path());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 6);
        broker.replicas.shutdown();
    }
}
