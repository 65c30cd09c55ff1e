//! Errors returned by the storage engine.

/// Everything a [`crate::Log`] operation can fail with. The variants map onto Kafka error codes in
/// the broker (CORRUPT_MESSAGE, UNSUPPORTED_FOR_MESSAGE_FORMAT, MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE, INVALID_RECORD,
/// OFFSET_OUT_OF_RANGE; `Io` is KAFKA_STORAGE_ERROR).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt message: {0}")]
    CorruptMessage(String),
    #[error("unsupported record batch magic {0} (only v2 is supported)")]
    UnsupportedMagic(i8),
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { size: usize, max: u32 },
    #[error("record set of {size} bytes exceeds the segment size {max} (segment.bytes)")]
    RecordListTooLarge { size: usize, max: u64 },
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER.
    #[error("{0}")]
    OutOfOrderSequence(String),
    /// Kafka's INVALID_PRODUCER_EPOCH (a fenced, older epoch of an idempotent producer).
    #[error("{0}")]
    InvalidProducerEpoch(String),
    /// Kafka's INVALID_TXN_STATE (a plain write from a producer with an open transaction).
    #[error("{0}")]
    InvalidTxnState(String),
    /// Kafka's TRANSACTION_COORDINATOR_FENCED (a marker from an older coordinator epoch).
    #[error("{0}")]
    TransactionCoordinatorFenced(String),
    #[error("offset {requested} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange { requested: i64, log_start: i64, log_end: i64 },
}

/// Error for mutations attempted after `close()` or `delete()`.
pub(crate) fn closed_error() -> LogError {
    LogError::Io(std::io::Error::other("log is closed"))
}
