//! The client's one error type. Kafka error codes stay typed (code + retriable flag) so callers branch on them
//! instead of parsing messages.

use std::time::Duration;

use kafka_protocol::ResponseError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The broker answered with a Kafka error code.
    #[error("{context}: {} (Kafka error code {code}){}", kafka_name(*code), message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kafka { code: i16, context: String, message: Option<String> },

    /// No bootstrap server or broker could be reached.
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },

    /// An established connection failed (reset, closed by the broker, write error).
    #[error("connection to {addr} lost: {reason}")]
    Disconnected { addr: String, reason: String },

    /// The broker supports no version of an API the client needs at the range the client speaks.
    #[error("the broker at {addr} does not support {api} (API key {key})")]
    UnsupportedApi { addr: String, api: &'static str, key: i16 },

    #[error("{0} timed out after {1:?}")]
    Timeout(String, Duration),

    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),

    #[error("partition {1} of topic '{0}' does not exist")]
    UnknownPartition(String, i32),

    /// A record, or a partition without a committed offset, when `auto.offset.reset=none`.
    #[error("no valid position for {0}-{1} and auto.offset.reset is none")]
    NoOffset(String, i32),

    #[error("record of {size} bytes is larger than {limit} ({setting})")]
    RecordTooLarge { size: usize, limit: usize, setting: &'static str },

    #[error("invalid configuration: {0}")]
    Config(String),

    /// The bytes on the wire did not decode (corrupt batch, unexpected response).
    #[error("protocol error: {0}")]
    Protocol(String),

    #[error("serialization error: {0}")]
    Serialization(String),

    /// A transactional producer was asked for something its state does not allow (Java's IllegalStateException),
    /// e.g. `send` outside a transaction, `commit_transaction` after a fatal error.
    #[error("transaction state: {0}")]
    TransactionState(String),

    /// The record was still queued when its transaction was aborted, so it was never sent.
    #[error("the transaction was aborted before the record was sent")]
    TransactionAborted,

    /// The producer or consumer was closed while the operation was pending.
    #[error("client closed")]
    Closed,
}

fn kafka_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?}").chars().fold(String::new(), |mut s, c| {
            // CamelCase to Kafka's UPPER_SNAKE names, as users know them from the Java tools.
            if c.is_uppercase() && !s.is_empty() {
                s.push('_');
            }
            s.push(c.to_ascii_uppercase());
            s
        }),
        None => "UNKNOWN".into(),
    }
}

impl Error {
    pub fn kafka(code: i16, context: impl Into<String>, message: Option<String>) -> Error {
        Error::Kafka { code, context: context.into(), message }
    }

    /// The Kafka error code, if the broker sent one.
    pub fn code(&self) -> Option<i16> {
        match self {
            Error::Kafka { code, .. } => Some(*code),
            Error::UnknownTopic(_) | Error::UnknownPartition(..) => Some(3),
            _ => None,
        }
    }

    /// The typed Kafka error, if the broker sent one.
    pub fn response_error(&self) -> Option<ResponseError> {
        self.code().and_then(ResponseError::try_from_code)
    }

    /// True when the same operation may succeed if tried again (after a metadata refresh or reconnect).
    /// CONCURRENT_TRANSACTIONS is, as in kafka-clients 4.x (KIP-890 part 2): a transactions v2 Produce gets it while
    /// the previous transaction's markers are still being written, and is retried.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Kafka { code: 51, .. } => true,
            Error::Kafka { code, .. } => ResponseError::try_from_code(*code).is_some_and(|e| e.is_retriable()),
            Error::Disconnected { .. } | Error::Connect { .. } | Error::Timeout(..) => true,
            _ => false,
        }
    }

    /// True for the errors that end a transactional producer for good, as the Java client: another producer with
    /// the same transactional.id took over (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH, TRANSACTION_COORDINATOR_FENCED),
    /// or it is not allowed (TRANSACTIONAL_ID_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED).
    pub fn is_fatal_for_producer(&self) -> bool {
        matches!(self.code(), Some(90 | 47 | 52 | 53 | 31))
    }

    /// True when another producer with the same transactional.id fenced this one.
    pub fn is_producer_fenced(&self) -> bool {
        matches!(self.code(), Some(90 | 47 | 52))
    }

    /// True when the client's view of partition leadership is stale and metadata should be refreshed.
    pub fn needs_metadata_refresh(&self) -> bool {
        match self {
            // NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, FENCED/UNKNOWN_LEADER_EPOCH,
            // NOT_CONTROLLER, UNKNOWN_TOPIC_ID.
            Error::Kafka { code, .. } => matches!(code, 3 | 5 | 6 | 41 | 74 | 76 | 100),
            Error::Disconnected { .. } | Error::Connect { .. } => true,
            _ => false,
        }
    }
}

/// Turns a response's error code into `Ok(())` or a typed error.
pub(crate) fn check(code: i16, context: impl FnOnce() -> String, message: Option<&str>) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::kafka(code, context(), message.map(str::to_string)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_errors_carry_code_name_and_retriable_flag() {
        let e = Error::kafka(6, "produce to t-0", None);
        assert_eq!(e.code(), Some(6));
        assert!(e.is_retriable());
        assert!(e.needs_metadata_refresh());
        assert_eq!(e.to_string(), "produce to t-0: NOT_LEADER_OR_FOLLOWER (Kafka error code 6)");
        let e = Error::kafka(87, "produce", Some("bad record".into()));
        assert!(!e.is_retriable());
        assert_eq!(e.response_error(), Some(ResponseError::InvalidRecord));
        assert!(e.to_string().ends_with(": bad record"));
    }
}
