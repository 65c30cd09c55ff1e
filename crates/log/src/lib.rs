//! Strom's storage engine: one [`Log`] per partition directory, made of segments holding Kafka
//! RecordBatch v2 bytes exactly as received (only baseOffset, partitionLeaderEpoch and, for
//! LogAppendTime topics, maxTimestamp are rewritten), with Kafka's file naming, a sparse offset
//! index and a time index per segment, crash recovery and retention.
//!
//! Modules:
//! - `batch`: RecordBatch v2 header parsing, validation and in-place rewrites
//! - `config`, `error`: public configuration and errors
//! - `index`, `offset_index`, `time_index`: index files
//! - `segment`: one `.log` file and its indexes
//! - `file_cache`: the bound on the files inactive segments hold open (opened on demand, closed when idle)
//! - `log`: the partition log (appends, reads, flush, retention, lifecycle)
//! - `recovery`: opening a directory, crash recovery and index rebuilds
//! - `retention`: which segments retention may delete
//! - `cleaner`: log compaction (the log cleaner), its checkpoint and I/O throttle
//! - `records`, `codec`: records inside a batch and the compression codecs (streaming, bounded), for the cleaner
//!   and the coordinators' loads
//! - `record_walk`: a streaming walk of a batch's records, for produce validation and timestamp lookups
//! - `checkpoint`: small atomically written state files
//! - `producer_state`: idempotent producers' epochs and last batches (dedupe, sequence and epoch checks) and
//!   their open transactions
//! - `control`: transaction marker (control) batches
//! - `txn_index`: the per-segment aborted-transactions index (`.txnindex`)

mod batch;
mod checkpoint;
mod cleaner;
mod codec;
mod config;
mod control;
mod error;
mod file_cache;
mod index;
mod log;
mod offset_index;
mod page_cache;
mod producer_state;
mod record_walk;
mod records;
mod recovery;
mod retention;
mod segment;
#[cfg(test)]
mod testkit;
mod time_index;
mod txn_index;

pub use batch::{compute_crc, validate_batches, BatchHeader, HEADER_SIZE, LOG_OVERHEAD, MAGIC_V2};
pub use cleaner::{CleanStats, Cleanability, CleanerConfig, NoTransactions, Throttler, TransactionIndex};
pub use codec::{decoder, decompressed_limit};
pub use config::{CleanupPolicy, LogConfig, TimestampType};
pub use control::{ControlType, EndTxnMarker};
pub use error::LogError;
pub use file_cache::{FileCache, DEFAULT_OPEN_FILES_MAX};
pub use log::{AppendInfo, Log, LogTransactions, ReadResult, RecoveryReport, RetentionReport};
pub use page_cache::{without_blocking, would_block};
pub use producer_state::{ActiveProducer, BatchMetadata};
pub use record_walk::{RecordInfo, RecordWalker};
pub use records::{keyed_records, KeyedRecord};
pub use txn_index::AbortedTxn;
