//! Consumer groups from the client side: finding the group coordinator, committed offsets, the group admin
//! operations, client-side assignors, and group membership for the consumer (`membership`).

pub mod admin;
pub mod assignor;
pub mod coordinator;
pub mod membership;
pub mod offsets;

pub use admin::{GroupDescription, GroupListing, MemberDescription};
pub use membership::{RebalanceEvent, RebalanceListener};

/// What a transactional producer needs of a consumer's group membership to commit offsets in a transaction
/// (Java's ConsumerGroupMetadata): the coordinator rejects the commit of a zombie member (KIP-447).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    pub group_id: String,
    /// -1 when not known (a commit then only checks the group id).
    pub generation_id: i32,
    /// "" when not known.
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

impl ConsumerGroupMetadata {
    /// Only the group id: the coordinator does not check membership.
    pub fn new(group_id: impl Into<String>) -> Self {
        ConsumerGroupMetadata {
            group_id: group_id.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        }
    }
}
