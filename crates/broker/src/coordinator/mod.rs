//! Coordinators: state machines that keep their state in an internal topic's partitions and rebuild it from them,
//! so that they can later move between brokers with partition leadership.

pub mod group;
pub mod runtime;
pub mod txn;
