//! The transaction coordinator's settings, read once from the broker configuration (Kafka's TransactionConfig).

use crate::config::BrokerConfig;

#[derive(Clone, Debug)]
pub struct TxnConfig {
    pub num_partitions: i32,
    pub segment_bytes: i32,
    pub min_isr: i32,
    pub max_timeout_ms: i32,
    pub transactional_id_expiration_ms: i64,
    pub abort_timed_out_interval_ms: u64,
    pub remove_expired_interval_ms: u64,
    /// The `transaction.version` feature level advertised as finalized (at most the level this broker supports).
    pub finalized_transaction_version: i16,
}

impl TxnConfig {
    pub fn from_broker(b: &BrokerConfig) -> TxnConfig {
        let int = |k: &str| -> i64 { b.broker_value(k).0.and_then(|v| v.trim().parse().ok()).unwrap_or(0) };
        TxnConfig {
            num_partitions: int("transaction.state.log.num.partitions").max(1) as i32,
            segment_bytes: int("transaction.state.log.segment.bytes").max(1) as i32,
            min_isr: int("transaction.state.log.min.isr").max(1) as i32,
            max_timeout_ms: int("transaction.max.timeout.ms").max(1) as i32,
            transactional_id_expiration_ms: int("transactional.id.expiration.ms").max(1),
            abort_timed_out_interval_ms: int("transaction.abort.timed.out.transaction.cleanup.interval.ms").max(1)
                as u64,
            remove_expired_interval_ms: int("transaction.remove.expired.transaction.cleanup.interval.ms").max(1) as u64,
            finalized_transaction_version: b
                .broker_value("transaction.version")
                .0
                .and_then(|v| v.trim().parse::<i16>().ok())
                .unwrap_or(super::TRANSACTION_VERSION)
                .clamp(0, super::TRANSACTION_VERSION),
        }
    }
}

/// `transaction.partition.verification.enable` (default true): the produce path checks transactional writes with
/// the coordinator (KIP-890 part 1). Dynamic, so the coordinator keeps the live value.
pub fn partition_verification(b: &BrokerConfig) -> bool {
    b.broker_value("transaction.partition.verification.enable")
        .0
        .map(|v| v.trim().eq_ignore_ascii_case("true"))
        .unwrap_or(true)
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig::from_broker(&BrokerConfig::default())
    }
}
