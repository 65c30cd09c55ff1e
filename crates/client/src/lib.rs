//! strom-client: an async Kafka-protocol client (producer, consumer, admin) written from the protocol alone, so
//! it works against any Kafka-compatible broker.
//!
//! Layout: `connection` (one pipelined TCP connection, version negotiation) → `cluster` (metadata cache and
//! connection per broker) → `producer` (accumulator + sender), `consumer`, `admin`. `batch` encodes and decodes
//! RecordBatch v2, `partitioner` picks partitions like the Java client, `serializer` maps types to bytes.

pub mod admin;
pub mod batch;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod group;
pub mod offsets;
pub mod partitioner;
pub mod producer;
pub mod record;
pub mod serializer;
pub mod transaction_admin;

pub use admin::Admin;
pub use config::{ClientConfig, Compression, ConsumerConfig, OffsetReset, PartitionerKind, ProducerConfig};

pub use consumer::Consumer;
pub use error::{Error, Result};
pub use group::ConsumerGroupMetadata;
pub use producer::{DeliveryFuture, Producer, TransactionState};
pub use record::{ConsumerRecord, Header, ProducerRecord, RecordMetadata, TimestampType, TopicPartition};
