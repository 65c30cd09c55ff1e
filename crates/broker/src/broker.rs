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
    metadata_log: Mutex<MetadataLog>,
    image: RwLock<Arc<MetadataImage>>,
    pub replicas: ReplicaManager,
    pub groups: GroupCoordinator,
    pub txns: TransactionCoordinator,
    pub producer_ids: ProducerIdManager,
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
        Ok(Broker {
            groups: GroupCoordinator::new(&config),
            txns: TransactionCoordinator::new(&effective_config(&config, &image)),
            config,
            cluster_id,
            metadata_log: Mutex::new(log),
            image: RwLock::new(Arc::new(image)),
            replicas,
            producer_ids: ProducerIdManager::default(),
        })
    }

    /// The current metadata image (a cheap snapshot).
    pub fn image(&self) -> Arc<MetadataImage> {
        match self.image.read() {
            Ok(i) => i.clone(),
            Err(e) => e.into_inner().clone(),
        }
    }

    /// The broker config with the image's dynamic broker configs layered over the static ones.
    pub fn effective_config(&self) -> BrokerConfig {
        effective_config(&self.config, &self.image())
    }

    /// Atomically decides and commits a metadata change: `decide` sees the latest image under the metadata lock and
    /// returns the records to append (or a rejection). The records are made durable, applied to the image, and the
    /// replica manager follows the new image. Blocking: call from a blocking thread.
    pub fn commit<T, E>(
        &self,
        decide: impl FnOnce(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), E>,
    ) -> Result<T, CommitError<E>> {
        let mut log = self.metadata_log.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.image();
        let (records, out) = decide(&old).map_err(CommitError::Rejected)?;
        if records.is_empty() {
            return Ok(out);
        }
        log.append(&records)?;
        let mut new = (*old).clone();
        for r in &records {
            new.apply(r);
        }
        let new = Arc::new(new);
        // Partitions exist before clients can see the topic in the image.
        self.replicas.apply_change(&old, &new)?;
        if records.iter().any(|r| matches!(r, MetadataRecord::BrokerConfigRecord { .. })) {
            self.txns.apply_dynamic_config(&effective_config(&self.config, &new));
        }
        *self.image.write().unwrap_or_else(|e| e.into_inner()) = new;
        // After the image, so commits that follow see the topic gone and cannot bring its offsets back.
        let deleted: std::collections::BTreeSet<String> = records
            .iter()
            .filter_map(|r| match r {
                MetadataRecord::RemoveTopicRecord { topic_id } => old.topic_by_id(topic_id).map(|t| t.name.clone()),
                _ => None,
            })
            .collect();
        self.groups.on_topics_deleted(&deleted);
        Ok(out)
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
    #[test]
    fn cluster_id_is_22_chars() {
        assert_eq!(super::base64_url(&[0u8; 16]).len(), 22);
        assert_eq!(super::base64_url(b"Man"), "TWFu");
    }
}
