//! Strom's broker: Kafka protocol listeners, request dispatch, one handler per API, the hosted partitions and the
//! metadata image they follow.

pub mod broker;
mod clock;
pub mod config;
pub mod controller;
pub mod coordinator;
pub mod dispatch;
mod errors;
pub mod handlers;
pub mod log_cleaner;
pub mod metadata;
pub mod partition;
pub mod producer_ids;
mod record_validation;
pub mod replica_manager;
pub mod server;
mod topic_name;
pub mod txn_markers;

pub use broker::Broker;
pub use config::BrokerConfig;

mod run;
pub use run::{run, RunningBroker};
