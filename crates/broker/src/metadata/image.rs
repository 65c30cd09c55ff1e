//! The in-memory view of topics, partitions and topic configs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use uuid::Uuid;

use super::MetadataRecord;

#[derive(Clone, Debug, PartialEq)]
pub struct PartitionImage {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: BTreeMap<i32, PartitionImage>,
    pub configs: BTreeMap<String, String>,
}

impl TopicImage {
    pub fn is_internal(&self) -> bool {
        crate::topic_name::is_internal(&self.name)
    }
}

/// Immutable snapshot; readers clone the `Arc` and never block writers.
#[derive(Clone, Debug, Default)]
pub struct MetadataImage {
    pub topics: BTreeMap<String, Arc<TopicImage>>,
    pub ids: HashMap<Uuid, String>,
    /// Dynamic broker configs by resource name: a broker id, or "" for the cluster-wide defaults.
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// The first producer id no broker has been given yet.
    pub next_producer_id: i64,
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicImage>> {
        self.ids.get(id).and_then(|n| self.topics.get(n))
    }

    /// Applies one record. Records that refer to unknown topics are ignored: the log may hold changes to a topic
    /// that a later record removed, and replay must be idempotent.
    pub fn apply(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::TopicRecord { name, topic_id } => {
                self.ids.insert(*topic_id, name.clone());
                self.topics.insert(
                    name.clone(),
                    Arc::new(TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: BTreeMap::new(),
                        configs: BTreeMap::new(),
                    }),
                );
            }
            MetadataRecord::PartitionRecord { topic_id, partition, replicas, isr, leader, leader_epoch } => {
                if let Some(t) = self.topic_mut(topic_id) {
                    t.partitions.insert(
                        *partition,
                        PartitionImage {
                            replicas: replicas.clone(),
                            isr: isr.clone(),
                            leader: *leader,
                            leader_epoch: *leader_epoch,
                        },
                    );
                }
            }
            MetadataRecord::ConfigRecord { topic_id, name, value } => {
                if let Some(t) = self.topic_mut(topic_id) {
                    match value {
                        Some(v) => t.configs.insert(name.clone(), v.clone()),
                        None => t.configs.remove(name),
                    };
                }
            }
            MetadataRecord::BrokerConfigRecord { resource, name, value } => {
                let configs = self.broker_configs.entry(resource.clone()).or_default();
                match value {
                    Some(v) => configs.insert(name.clone(), v.clone()),
                    None => configs.remove(name),
                };
                if configs.is_empty() {
                    self.broker_configs.remove(resource);
                }
            }
            MetadataRecord::RemoveTopicRecord { topic_id } => {
                if let Some(name) = self.ids.remove(topic_id) {
                    self.topics.remove(&name);
                }
            }
            MetadataRecord::ProducerIdsRecord { next_producer_id, .. } => {
                // Never backwards, so replaying an old record cannot hand out a block twice.
                self.next_producer_id = self.next_producer_id.max(*next_producer_id);
            }
        }
    }

    /// The dynamic configs of one broker resource ("" is the cluster default); empty if none are set.
    pub fn broker_config(&self, resource: &str) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.broker_configs.get(resource).unwrap_or(&EMPTY)
    }

    fn topic_mut(&mut self, id: &Uuid) -> Option<&mut TopicImage> {
        let name = self.ids.get(id)?;
        self.topics.get_mut(name).map(Arc::make_mut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_create_config_remove() {
        let id = Uuid::new_v4();
        let mut img = MetadataImage::default();
        img.apply(&MetadataRecord::TopicRecord { name: "t".into(), topic_id: id });
        img.apply(&MetadataRecord::PartitionRecord {
            topic_id: id,
            partition: 0,
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch: 0,
        });
        img.apply(&MetadataRecord::ConfigRecord { topic_id: id, name: "retention.ms".into(), value: Some("5".into()) });
        let t = img.topic("t").unwrap();
        assert_eq!(t.partitions.len(), 1);
        assert_eq!(t.configs.get("retention.ms").map(String::as_str), Some("5"));
        assert_eq!(img.topic_by_id(&id).unwrap().name, "t");
        img.apply(&MetadataRecord::RemoveTopicRecord { topic_id: id });
        assert!(img.topic("t").is_none());
        let set = |v: Option<&str>| MetadataRecord::BrokerConfigRecord {
            resource: "".into(),
            name: "log.retention.ms".into(),
            value: v.map(str::to_string),
        };
        img.apply(&set(Some("5")));
        assert_eq!(img.broker_config("").get("log.retention.ms").map(String::as_str), Some("5"));
        img.apply(&set(None));
        assert!(img.broker_configs.is_empty());
        assert!(img.topic_by_id(&id).is_none());
    }
}
