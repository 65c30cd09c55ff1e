//! DescribeGroups, ListGroups and DeleteGroups for the groups of one shard.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::GroupId;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::classic_group::ClassicGroupState;
use super::shard::{Effects, Group, ListedGroup, Shard};

impl Shard {
    /// DescribeGroups for one group. An unknown group is reported as Dead (the handler adds GROUP_ID_NOT_FOUND on
    /// v6+); a KIP-848 group is not a classic group, so DescribeGroups does not know it either.
    pub fn describe_group(&self, group_id: &str) -> DescribedGroup {
        let base = DescribedGroup::default()
            .with_group_id(GroupId(StrBytes::from_string(group_id.to_string())))
            .with_group_state(StrBytes::from_static_str(ClassicGroupState::Dead.name()));
        let g = match self.groups.get(group_id) {
            Some(Group::Classic(g)) => g,
            // As Kafka: DescribeGroups describes classic groups only (ConsumerGroupDescribe the others).
            Some(Group::Consumer(_)) => {
                return base.with_error_code(ResponseError::GroupIdNotFound.code()).with_error_message(Some(
                    StrBytes::from_string(format!("Group {group_id} is not a classic group.")),
                ))
            }
            None => return base.with_error_code(ResponseError::GroupIdNotFound.code()),
        };
        let protocol = g.protocol_name.clone().unwrap_or_default();
        // Members and their metadata are only meaningful once a generation is running (Kafka's summary).
        let members = if g.is(ClassicGroupState::Stable)
            || g.is(ClassicGroupState::CompletingRebalance)
            || g.is(ClassicGroupState::PreparingRebalance)
        {
            g.members
                .iter()
                .map(|m| {
                    let stable = g.is(ClassicGroupState::Stable);
                    DescribedGroupMember::default()
                        .with_member_id(StrBytes::from_string(m.member_id.clone()))
                        .with_group_instance_id(m.group_instance_id.clone().map(StrBytes::from_string))
                        .with_client_id(StrBytes::from_string(m.client_id.clone()))
                        .with_client_host(StrBytes::from_string(m.client_host.clone()))
                        .with_member_metadata(if stable { m.metadata(&protocol) } else { Default::default() })
                        .with_member_assignment(if stable { m.assignment.clone() } else { Default::default() })
                })
                .collect()
        } else {
            Vec::new()
        };
        base.with_group_state(StrBytes::from_static_str(g.state.name()))
            .with_protocol_type(StrBytes::from_string(g.protocol_type.clone().unwrap_or_default()))
            .with_protocol_data(StrBytes::from_string(if g.is(ClassicGroupState::Stable) {
                protocol
            } else {
                String::new()
            }))
            .with_members(members)
    }

    pub fn list_groups(&self) -> Vec<ListedGroup> {
        self.groups
            .iter()
            .map(|(id, g)| ListedGroup {
                group_id: id.clone(),
                protocol_type: g.protocol_type(),
                state: g.state_name(),
                group_type: g.type_name(),
            })
            .collect()
    }

    /// DeleteGroups for one group: only an empty group can go; its offsets go with it.
    pub fn delete_group(&mut self, group_id: &str, tx: oneshot::Sender<Option<ResponseError>>, fx: &mut Effects) {
        let error = match self.groups.get(group_id) {
            None => Some(ResponseError::GroupIdNotFound),
            Some(Group::Classic(g)) if g.is(ClassicGroupState::Dead) => Some(ResponseError::GroupIdNotFound),
            Some(g) if !g.is_empty() => Some(ResponseError::NonEmptyGroup),
            Some(_) => {
                self.delete_group_records(group_id, fx);
                tracing::info!(group = %group_id, "deleted group");
                fx.reply(tx, None, |_, e| Some(super::offsets::append_error_to_response(e)));
                return;
            }
        };
        let _ = tx.send(error);
    }
}
