//! The cluster metadata: an in-memory `MetadataImage` changed only by applying `MetadataRecord`s, which are first
//! appended to the metadata log. On one node the log is a local file; a Raft-replicated log can later feed the
//! same `apply` path (as KRaft feeds Kafka's MetadataImage).

mod image;
mod log;
mod records;

pub use image::{MetadataImage, PartitionImage, TopicImage};
pub use log::{MetadataLog, MetadataLogError};
pub use records::MetadataRecord;
