//! Per-partition log configuration (the subset of Kafka topic configs the storage engine uses).

use std::fmt;
use std::str::FromStr;

/// `message.timestamp.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

impl TimestampType {
    /// The Kafka config value (`CreateTime` / `LogAppendTime`).
    pub fn as_str(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
    }
}

impl fmt::Display for TimestampType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TimestampType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "CreateTime" => Ok(TimestampType::CreateTime),
            "LogAppendTime" => Ok(TimestampType::LogAppendTime),
            other => Err(format!("invalid message.timestamp.type {other:?}")),
        }
    }
}

/// `cleanup.policy`: `delete`, `compact`, or both (`compact,delete`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CleanupPolicy {
    /// Retention (retention.ms / retention.bytes) deletes old segments.
    pub delete: bool,
    /// The log cleaner keeps only the latest record per key.
    pub compact: bool,
}

impl CleanupPolicy {
    pub const DELETE: CleanupPolicy = CleanupPolicy { delete: true, compact: false };
    pub const COMPACT: CleanupPolicy = CleanupPolicy { delete: false, compact: true };
}

impl Default for CleanupPolicy {
    fn default() -> Self {
        CleanupPolicy::DELETE
    }
}

impl FromStr for CleanupPolicy {
    type Err = String;

    /// Parses Kafka's list syntax (`compact,delete`, any order, spaces allowed).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut policy = CleanupPolicy { delete: false, compact: false };
        for p in s.split(',').map(str::trim) {
            match p {
                "delete" => policy.delete = true,
                "compact" => policy.compact = true,
                other => return Err(format!("invalid cleanup.policy {other:?}")),
            }
        }
        Ok(policy)
    }
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// `segment.bytes`
    pub segment_bytes: u64,
    /// `segment.ms`
    pub segment_ms: i64,
    /// `retention.ms`; -1 = unlimited
    pub retention_ms: i64,
    /// `retention.bytes`; -1 = unlimited
    pub retention_bytes: i64,
    /// `index.interval.bytes`
    pub index_interval_bytes: u32,
    /// `max.message.bytes`: largest batch including its 12-byte log overhead
    pub max_message_bytes: u32,
    /// `message.timestamp.type`
    pub message_timestamp_type: TimestampType,
    /// `cleanup.policy`
    pub cleanup_policy: CleanupPolicy,
    /// `min.cleanable.dirty.ratio`: clean once dirty bytes / total bytes reach this.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this stay uncompacted.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a dirty record older than this makes the log eligible regardless of the ratio.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long a tombstone survives once the cleaner has first passed over it.
    pub delete_retention_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1_073_741_824,
            segment_ms: 604_800_000,
            retention_ms: 604_800_000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            message_timestamp_type: TimestampType::CreateTime,
            cleanup_policy: CleanupPolicy::DELETE,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 86_400_000,
        }
    }
}

impl LogConfig {
    /// Segment size actually enforced: index positions are 32-bit and Kafka treats segment.bytes
    /// as an int, so larger values are capped.
    pub(crate) fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.min(i32::MAX as u64)
    }

    /// How long the active segment may stay open: segment.ms, or for compacted logs max.compaction.lag.ms if that
    /// is sooner, since the cleaner never touches the active segment (Kafka's LogConfig.maxSegmentMs).
    pub(crate) fn max_segment_ms(&self) -> i64 {
        if self.cleanup_policy.compact && self.max_compaction_lag_ms > 0 {
            self.segment_ms.min(self.max_compaction_lag_ms)
        } else {
            self.segment_ms
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_kafka() {
        let c = LogConfig::default();
        assert_eq!(c.segment_bytes, 1 << 30);
        assert_eq!(c.retention_bytes, -1);
        assert_eq!(c.max_message_bytes, 1_048_588);
        assert_eq!(c.message_timestamp_type, TimestampType::CreateTime);
    }

    #[test]
    fn timestamp_type_round_trips_through_config_strings() {
        for t in [TimestampType::CreateTime, TimestampType::LogAppendTime] {
            assert_eq!(t.as_str().parse::<TimestampType>().unwrap(), t);
        }
        assert!("createtime".parse::<TimestampType>().is_err());
    }

    #[test]
    fn cleanup_policy_parses_kafka_lists() {
        assert_eq!("delete".parse::<CleanupPolicy>().unwrap(), CleanupPolicy::DELETE);
        assert_eq!("compact".parse::<CleanupPolicy>().unwrap(), CleanupPolicy::COMPACT);
        let both = CleanupPolicy { delete: true, compact: true };
        assert_eq!("compact,delete".parse::<CleanupPolicy>().unwrap(), both);
        assert_eq!("delete, compact".parse::<CleanupPolicy>().unwrap(), both);
        assert!("compact,bogus".parse::<CleanupPolicy>().is_err());
        assert!("".parse::<CleanupPolicy>().is_err());
    }
}
