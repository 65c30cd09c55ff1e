//! ReplicaManager: the partitions this broker hosts, created and deleted by following the metadata image
//! (like Kafka's BrokerMetadataPublisher feeding its ReplicaManager).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use strom_log::Log;

use crate::config::{BrokerConfig, TopicConfig};
use crate::metadata::{MetadataImage, TopicImage};
use crate::partition::Partition;

type PartitionMap = HashMap<String, BTreeMap<i32, Arc<Partition>>>;

pub struct ReplicaManager {
    log_dir: PathBuf,
    broker: BrokerConfig,
    partitions: RwLock<PartitionMap>,
}

/// Kafka's partition directory name.
pub fn partition_dir_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

impl ReplicaManager {
    pub fn new(broker: BrokerConfig) -> Self {
        ReplicaManager { log_dir: broker.log_dir.clone(), broker, partitions: RwLock::new(HashMap::new()) }
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.partitions.read().ok()?.get(topic)?.get(&partition).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        match self.partitions.read() {
            Ok(m) => m.values().flat_map(|ps| ps.values().cloned()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Opens every partition of the image (recovering its log) and removes directories that belong to no topic of
    /// the image (left by a deletion that a crash interrupted). Blocking.
    pub fn load(&self, image: &MetadataImage) -> std::io::Result<()> {
        let mut wanted = std::collections::HashSet::new();
        for t in image.topics.values() {
            for p in t.partitions.keys() {
                wanted.insert(partition_dir_name(&t.name, *p));
            }
        }
        for entry in std::fs::read_dir(&self.log_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name == "meta" || !entry.file_type()?.is_dir() || wanted.contains(&name) {
                continue;
            }
            tracing::warn!(dir = %entry.path().display(), "removing partition directory that belongs to no topic");
            std::fs::remove_dir_all(entry.path())?;
        }
        self.apply_change(&MetadataImage::default(), image)
    }

    /// Brings the hosted partitions in line with a new image. Blocking (opens and recovers logs).
    pub fn apply_change(&self, old: &MetadataImage, new: &MetadataImage) -> std::io::Result<()> {
        for (id, name) in &old.ids {
            if !new.ids.contains_key(id) {
                self.remove_topic(name);
            }
        }
        // Dynamic broker configs are the defaults of every topic config, so a change to them reaches every partition.
        let broker = crate::broker::effective_config(&self.broker, new);
        let broker_changed = old.broker_configs != new.broker_configs;
        for topic in new.topics.values() {
            let before = old.topic_by_id(&topic.topic_id);
            let config = TopicConfig::resolve(&broker, &topic.configs);
            for (&index, p) in &topic.partitions {
                let exists =
                    before.is_some_and(|b| b.partitions.contains_key(&index)) && self.get(&topic.name, index).is_some();
                if !exists && p.leader == self.broker.node_id {
                    self.open_partition(topic, index, p.leader_epoch, config.clone())?;
                }
            }
            if let Some(b) = before {
                if broker_changed || b.configs != topic.configs {
                    if let Ok(m) = self.partitions.read() {
                        for p in m.get(&topic.name).into_iter().flat_map(|ps| ps.values()) {
                            p.update_config(config.clone());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn open_partition(
        &self,
        topic: &TopicImage,
        index: i32,
        leader_epoch: i32,
        config: TopicConfig,
    ) -> std::io::Result<()> {
        let dir = self.log_dir.join(partition_dir_name(&topic.name, index));
        let (log, report) = Log::open(&dir, config.log.clone()).map_err(std::io::Error::other)?;
        if !report.clean_shutdown && (report.truncated_bytes > 0 || report.rebuilt_indexes > 0) {
            tracing::warn!(
                topic = %topic.name, partition = index, truncated_bytes = report.truncated_bytes,
                rebuilt_indexes = report.rebuilt_indexes, log_end_offset = report.log_end_offset,
                "recovered partition after unclean shutdown"
            );
        }
        let partition = Partition::start(topic.name.clone(), topic.topic_id, index, log, leader_epoch, config);
        if let Ok(mut m) = self.partitions.write() {
            m.entry(topic.name.clone()).or_default().insert(index, partition);
        }
        Ok(())
    }

    fn remove_topic(&self, name: &str) {
        let removed = self.partitions.write().ok().and_then(|mut m| m.remove(name));
        for p in removed.into_iter().flat_map(|ps| ps.into_values()) {
            p.close();
            let dir = p.log().dir().to_path_buf();
            // Rename first so that a topic re-created under the same name never sees old files, then delete.
            let doomed = dir.with_file_name(format!(
                "{}.{}-delete",
                dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(),
                uuid::Uuid::new_v4().simple()
            ));
            match std::fs::rename(&dir, &doomed) {
                Ok(()) => remove_dir_in_background(doomed),
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot rename deleted partition directory")
                }
            }
        }
    }

    /// Applies retention to every partition (called on `log.retention.check.interval.ms`). Blocking.
    pub fn apply_retention(&self, now_ms: i64) {
        for p in self.all() {
            match p.log().apply_retention(now_ms) {
                Ok(r) if r.deleted_segments > 0 => tracing::info!(
                    topic = %p.topic, partition = p.index, deleted_segments = r.deleted_segments,
                    deleted_bytes = r.deleted_bytes, log_start_offset = r.log_start_offset, "retention deleted segments"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(topic = %p.topic, partition = p.index, error = %e, "retention failed"),
            }
        }
    }

    /// Forgets idempotent producers idle longer than `producer.id.expiration.ms` on every partition. Blocking.
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: i64) {
        for p in self.all() {
            let removed = p.log().remove_expired_producers(now_ms, expiration_ms);
            if removed > 0 {
                tracing::debug!(topic = %p.topic, partition = p.index, removed, "expired idle producer state");
            }
        }
    }

    /// Clean shutdown of every log, so the next start skips recovery. Blocking.
    pub fn shutdown(&self) {
        for p in self.all() {
            p.close();
            if let Err(e) = p.log().close() {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "closing log failed");
            }
        }
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

fn remove_dir_in_background(dir: PathBuf) {
    std::thread::spawn(move || {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::error!(dir = %dir.display(), error = %e, "cannot remove deleted partition directory");
        }
    });
}
