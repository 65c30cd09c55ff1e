//! ReplicaManager: the partitions this broker hosts, created and deleted by following the metadata image
//! (like Kafka's BrokerMetadataPublisher feeding its ReplicaManager).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use kafka_protocol::ResponseError;
use strom_log::{FileCache, Log, RecoveryReport};
use uuid::Uuid;

use crate::config::{BrokerConfig, TopicConfig};
use crate::metadata::{MetadataImage, TopicImage};
use crate::partition::Partition;

type PartitionMap = HashMap<String, BTreeMap<i32, Arc<Partition>>>;

pub struct ReplicaManager {
    log_dir: PathBuf,
    broker: BrokerConfig,
    partitions: RwLock<PartitionMap>,
    /// Partitions this broker should host whose log could not be opened (the error is logged when it happens).
    offline: RwLock<HashSet<(String, i32)>>,
    /// Where every partition's inactive segments keep their files open (`log.segment.open.files.max`).
    open_files: Arc<FileCache>,
    /// Logs opened by `prepare` for a change about to be committed, taken when the change is applied.
    prepared: Mutex<HashMap<(Uuid, i32), Prepared>>,
}

struct Prepared {
    log: Log,
    report: RecoveryReport,
    dir: PathBuf,
    /// The directory did not exist before: discarding the log removes it.
    created: bool,
}

/// The partitions `prepare` opened for one change.
#[must_use]
pub struct PreparedPartitions(Vec<(Uuid, i32)>);

/// Kafka's partition directory name.
pub fn partition_dir_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

impl ReplicaManager {
    pub fn new(broker: BrokerConfig) -> Self {
        ReplicaManager {
            log_dir: broker.log_dir.clone(),
            open_files: FileCache::new(broker.segment_open_files_max),
            prepared: Mutex::new(HashMap::new()),
            broker,
            partitions: RwLock::new(HashMap::new()),
            offline: RwLock::new(HashSet::new()),
        }
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

    /// Opens every partition of the image (recovering its log). Directories under `log.dirs` that look like a
    /// partition's but belong to no partition of the image are renamed aside with Kafka's `-stray` suffix, never
    /// deleted: the image may be older than the data (a restored or downgraded metadata log, or `log.dirs` pointed
    /// at someone else's directory). Directories of deleted topics whose removal a crash interrupted are removed.
    /// Anything else is left alone. Blocking.
    pub fn load(&self, image: &MetadataImage) -> std::io::Result<()> {
        let mut wanted = HashSet::new();
        for t in image.topics.values() {
            for p in t.partitions.keys() {
                wanted.insert(partition_dir_name(&t.name, *p));
            }
        }
        for entry in std::fs::read_dir(&self.log_dir)? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if name == "meta" || wanted.contains(&name) || !entry.file_type()?.is_dir() {
                continue;
            }
            match classify_dir(&name) {
                DirKind::Partition => {
                    let aside = path.with_file_name(format!("{name}.{}-stray", uuid::Uuid::new_v4().simple()));
                    std::fs::rename(&path, &aside).map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("cannot rename stray partition directory {} aside: {e}", path.display()),
                        )
                    })?;
                    tracing::warn!(
                        dir = %path.display(), renamed_to = %aside.display(),
                        "partition directory belongs to no partition of the metadata image; renamed aside, not deleted"
                    );
                }
                DirKind::Deleted => {
                    tracing::info!(dir = %path.display(), "removing directory of a deleted partition");
                    remove_dir_in_background(path);
                }
                DirKind::Stray => tracing::info!(dir = %path.display(), "stray partition directory kept"),
                DirKind::Other => tracing::info!(dir = %path.display(), "not a partition directory; left alone"),
            }
        }
        self.apply_change(&MetadataImage::default(), image);
        Ok(())
    }

    /// Brings the hosted partitions in line with a new image. A partition whose log cannot be opened is logged
    /// and marked offline (as Kafka marks a failed log directory offline) until the broker restarts; the other
    /// partitions serve. Blocking (opens and recovers logs).
    pub fn apply_change(&self, old: &MetadataImage, new: &MetadataImage) {
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
                let exists = before.is_some_and(|b| b.partitions.contains_key(&index))
                    && (self.get(&topic.name, index).is_some() || self.is_offline(&topic.name, index));
                if !exists && p.leader == self.broker.node_id {
                    if let Err(e) = self.open_partition(topic, index, p.leader_epoch, config.clone()) {
                        let dir = self.log_dir.join(partition_dir_name(&topic.name, index));
                        tracing::error!(
                            topic = %topic.name, partition = index, dir = %dir.display(), error = %e,
                            "cannot open the partition's log; the partition is offline until the broker restarts"
                        );
                        if let Ok(mut m) = self.offline.write() {
                            m.insert((topic.name.clone(), index));
                        }
                    }
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
    }

    /// Opens (creating their directories) the logs of the partitions that `new` adds to `old` and this broker
    /// leads, before the change is committed: a change whose partitions cannot have their storage (no space, no
    /// descriptors left, a file in the way) is refused whole, instead of committing a topic whose partitions are
    /// offline. On failure the logs opened so far are closed and the directories this call created removed, and the
    /// error names the partition. Blocking.
    pub fn prepare(&self, old: &MetadataImage, new: &MetadataImage) -> std::io::Result<PreparedPartitions> {
        let broker = crate::broker::effective_config(&self.broker, new);
        let mut opened: Vec<((Uuid, i32), Prepared)> = Vec::new();
        for topic in new.topics.values() {
            let before = old.topic_by_id(&topic.topic_id);
            let mut config = None;
            for (&index, p) in &topic.partitions {
                if before.is_some_and(|b| b.partitions.contains_key(&index)) || p.leader != self.broker.node_id {
                    continue;
                }
                let config = config.get_or_insert_with(|| TopicConfig::resolve(&broker, &topic.configs));
                let dir = self.log_dir.join(partition_dir_name(&topic.name, index));
                let created = std::fs::symlink_metadata(&dir).is_err();
                match Log::open_with_cache(&dir, config.log.clone(), self.open_files.clone()) {
                    Ok((log, report)) => opened.push(((topic.topic_id, index), Prepared { log, report, dir, created })),
                    Err(e) => {
                        tracing::error!(
                            topic = %topic.name, partition = index, dir = %dir.display(), error = %e,
                            "cannot create the partition's log; the change that adds it is not committed"
                        );
                        discard(opened.into_iter().map(|(_, p)| p).collect(), created.then(|| dir.clone()));
                        return Err(std::io::Error::other(format!(
                            "cannot create the log of partition {index} of topic {} in {}: {e}",
                            topic.name,
                            dir.display()
                        )));
                    }
                }
            }
        }
        let keys = opened.iter().map(|(k, _)| *k).collect();
        if let Ok(mut m) = self.prepared.lock() {
            m.extend(opened);
        }
        Ok(PreparedPartitions(keys))
    }

    /// Undoes `prepare` for a change that was not committed after all.
    pub fn discard_prepared(&self, prepared: PreparedPartitions) {
        let taken: Vec<Prepared> = match self.prepared.lock() {
            Ok(mut m) => prepared.0.iter().filter_map(|k| m.remove(k)).collect(),
            Err(_) => Vec::new(),
        };
        discard(taken, None);
    }

    /// Whether this broker should host the partition but could not open its log.
    pub fn is_offline(&self, topic: &str, partition: i32) -> bool {
        self.offline.read().is_ok_and(|m| m.contains(&(topic.to_string(), partition)))
    }

    /// The error for a partition this broker does not serve: KAFKA_STORAGE_ERROR when its log is offline (as
    /// Kafka answers for a replica in an offline log directory), else UNKNOWN_TOPIC_OR_PARTITION.
    pub fn not_served_error(&self, topic: &str, partition: i32) -> ResponseError {
        if self.is_offline(topic, partition) {
            ResponseError::KafkaStorageError
        } else {
            ResponseError::UnknownTopicOrPartition
        }
    }

    fn open_partition(
        &self,
        topic: &TopicImage,
        index: i32,
        leader_epoch: i32,
        config: TopicConfig,
    ) -> std::io::Result<()> {
        let dir = self.log_dir.join(partition_dir_name(&topic.name, index));
        let prepared = self.prepared.lock().ok().and_then(|mut m| m.remove(&(topic.topic_id, index)));
        let (log, report) = match prepared {
            Some(p) => {
                // A config change may have been committed since.
                p.log.update_config(config.log.clone());
                (p.log, p.report)
            }
            None => Log::open_with_cache(&dir, config.log.clone(), self.open_files.clone())
                .map_err(std::io::Error::other)?,
        };
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
        let mut dirs = Vec::new();
        for p in removed.into_iter().flat_map(|ps| ps.into_values()) {
            p.close();
            p.log().detach_files();
            dirs.push(p.log().dir().to_path_buf());
        }
        // An offline partition's directory goes too, so a topic created again under the name never opens it.
        if let Ok(mut m) = self.offline.write() {
            m.retain(|(topic, index)| {
                if topic == name {
                    dirs.push(self.log_dir.join(partition_dir_name(topic, *index)));
                }
                topic != name
            });
        }
        for dir in dirs {
            if !dir.exists() {
                continue;
            }
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

/// Closes prepared logs, then removes the directories created for them (and `also_created`, that of a log that
/// failed to open): a partition directory that was there before is never removed.
fn discard(prepared: Vec<Prepared>, also_created: Option<PathBuf>) {
    let mut dirs = Vec::new();
    for p in prepared {
        if p.created {
            dirs.push(p.dir);
        }
        // Dropped before the removals, which need descriptors too.
        drop(p.log);
    }
    dirs.extend(also_created);
    for dir in &dirs {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::error!(
                dir = %dir.display(), error = %e,
                "cannot remove the directory of a partition that was not created; it is set aside at the next start"
            ),
        }
    }
    if let Some(parent) = dirs.first().and_then(|d| d.parent()) {
        if let Err(e) = std::fs::File::open(parent).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %parent.display(), error = %e, "cannot sync the data directory");
        }
    }
}

enum DirKind {
    /// `<topic>-<partition>`
    Partition,
    /// `<topic>-<partition>.<uuid>-delete`: renamed by a topic deletion before its removal.
    Deleted,
    /// `<topic>-<partition>.<uuid>-stray`: set aside by an earlier start.
    Stray,
    Other,
}

fn classify_dir(name: &str) -> DirKind {
    let is_partition = |n: &str| {
        n.rsplit_once('-').is_some_and(|(topic, index)| {
            !index.is_empty()
                && index.bytes().all(|b| b.is_ascii_digit())
                && index.parse::<i32>().is_ok()
                && crate::topic_name::validate(topic).is_ok()
        })
    };
    let renamed = |suffix: &str| {
        name.strip_suffix(suffix)
            .and_then(|n| n.rsplit_once('.'))
            .is_some_and(|(dir, id)| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && is_partition(dir))
    };
    if is_partition(name) {
        DirKind::Partition
    } else if renamed("-delete") {
        DirKind::Deleted
    } else if renamed("-stray") {
        DirKind::Stray
    } else {
        DirKind::Other
    }
}

/// Removes deleted partitions' directories on one background thread, in the order they were deleted: deleting a
/// topic of many partitions must not start a thread per partition.
fn remove_dir_in_background(dir: PathBuf) {
    static DELETER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<PathBuf>>> =
        std::sync::OnceLock::new();
    let sender = DELETER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        let spawned = std::thread::Builder::new().name("partition-deleter".into()).spawn(move || {
            for dir in rx {
                remove_now(&dir);
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the partition deleter thread; deleting in the caller");
        }
        std::sync::Mutex::new(tx)
    });
    let sent = sender.lock().map_err(|_| ()).and_then(|tx| tx.send(dir.clone()).map_err(|_| ()));
    if sent.is_err() {
        remove_now(&dir);
    }
}

fn remove_now(dir: &Path) {
    // An offline partition's "directory" may be a file.
    let removed = if dir.is_dir() { std::fs::remove_dir_all(dir) } else { std::fs::remove_file(dir) };
    if let Err(e) = removed {
        tracing::error!(dir = %dir.display(), error = %e, "cannot remove deleted partition directory");
    }
}
