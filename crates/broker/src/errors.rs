//! The one place where storage errors become Kafka error codes.

use kafka_protocol::ResponseError;
use strom_log::LogError;

pub fn log_error_code(e: &LogError) -> ResponseError {
    match e {
        LogError::CorruptMessage(_) => ResponseError::CorruptMessage,
        // Produce v3+ carries only magic v2; Kafka rejects older batches as invalid records.
        LogError::UnsupportedMagic(_) => ResponseError::InvalidRecord,
        LogError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::RecordListTooLarge { .. } => ResponseError::RecordListTooLarge,
        LogError::InvalidRecord(_) => ResponseError::InvalidRecord,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::OutOfOrderSequence(_) => ResponseError::OutOfOrderSequenceNumber,
        LogError::InvalidProducerEpoch(_) => ResponseError::InvalidProducerEpoch,
        LogError::InvalidTxnState(_) => ResponseError::InvalidTxnState,
        LogError::TransactionCoordinatorFenced(_) => ResponseError::TransactionCoordinatorFenced,
        LogError::Io(_) => ResponseError::KafkaStorageError,
    }
}
