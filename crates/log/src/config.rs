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
        }
    }
}

impl LogConfig {
    /// Segment size actually enforced: index positions are 32-bit and Kafka treats segment.bytes
    /// as an int, so larger values are capped.
    pub(crate) fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.min(i32::MAX as u64)
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
}
