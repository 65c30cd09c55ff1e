//! Consumer groups from the client side: finding the group coordinator, committed offsets, the group admin
//! operations, client-side assignors, and group membership for the consumer (`membership`).

pub mod admin;
pub mod assignor;
pub mod coordinator;
pub mod membership;
pub mod offsets;

pub use admin::{GroupDescription, GroupListing, MemberDescription};
pub use membership::{RebalanceListener, RebalanceEvent};
