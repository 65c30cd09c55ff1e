//! The group coordinator's settings, read once from the broker configuration (Kafka's GroupCoordinatorConfig).

use crate::config::BrokerConfig;

#[derive(Clone, Debug)]
pub struct GroupConfig {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub initial_rebalance_delay_ms: i32,
    pub max_size: usize,
    /// Kafka's `classic.group.new.member.join.timeout.ms` (not configurable there either): a new member whose
    /// JoinGroup is parked for this long is dropped, so clients that gave up do not pile up as defunct members.
    pub new_member_join_timeout_ms: i32,
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_interval_ms: u64,
    pub offsets_topic_num_partitions: i32,
    pub offsets_topic_segment_bytes: i32,
    pub offset_metadata_max_bytes: usize,
    pub classic_enabled: bool,
    pub consumer_enabled: bool,
    pub consumer_session_timeout_ms: i32,
    pub consumer_min_session_timeout_ms: i32,
    pub consumer_max_session_timeout_ms: i32,
    pub consumer_heartbeat_interval_ms: i32,
    pub consumer_max_size: usize,
    /// Server-side assignor names; the first is the default.
    pub consumer_assignors: Vec<String>,
    /// `group.consumer.migration.policy` allows converting a classic group when a consumer-protocol member joins.
    pub consumer_upgrade_enabled: bool,
    /// ... and converting a consumer group back once only classic members are left.
    pub consumer_downgrade_enabled: bool,
}

impl GroupConfig {
    pub fn from_broker(b: &BrokerConfig) -> GroupConfig {
        let int = |k: &str| -> i64 { b.broker_value(k).0.and_then(|v| v.trim().parse().ok()).unwrap_or(0) };
        let list = |k: &str| -> Vec<String> {
            b.broker_value(k)
                .0
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let protocols = list("group.coordinator.rebalance.protocols");
        GroupConfig {
            min_session_timeout_ms: int("group.min.session.timeout.ms") as i32,
            max_session_timeout_ms: int("group.max.session.timeout.ms") as i32,
            initial_rebalance_delay_ms: int("group.initial.rebalance.delay.ms").max(0) as i32,
            max_size: int("group.max.size").max(1) as usize,
            new_member_join_timeout_ms: 5 * 60 * 1000,
            offsets_retention_ms: int("offsets.retention.minutes").saturating_mul(60_000),
            offsets_retention_check_interval_ms: int("offsets.retention.check.interval.ms").max(1) as u64,
            offsets_topic_num_partitions: int("offsets.topic.num.partitions").max(1) as i32,
            offsets_topic_segment_bytes: int("offsets.topic.segment.bytes").max(1) as i32,
            offset_metadata_max_bytes: int("offset.metadata.max.bytes").max(0) as usize,
            classic_enabled: protocols.iter().any(|p| p == "classic"),
            consumer_enabled: protocols.iter().any(|p| p == "consumer"),
            consumer_session_timeout_ms: int("group.consumer.session.timeout.ms") as i32,
            consumer_min_session_timeout_ms: int("group.consumer.min.session.timeout.ms") as i32,
            consumer_max_session_timeout_ms: int("group.consumer.max.session.timeout.ms") as i32,
            consumer_heartbeat_interval_ms: int("group.consumer.heartbeat.interval.ms") as i32,
            consumer_max_size: int("group.consumer.max.size").max(1) as usize,
            consumer_assignors: list("group.consumer.assignors"),
            consumer_upgrade_enabled: list("group.consumer.migration.policy")
                .iter()
                .any(|p| p == "upgrade" || p == "bidirectional"),
            consumer_downgrade_enabled: list("group.consumer.migration.policy")
                .iter()
                .any(|p| p == "downgrade" || p == "bidirectional"),
        }
    }
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig::from_broker(&BrokerConfig::default())
    }
}
