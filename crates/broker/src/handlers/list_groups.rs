//! ListGroups: every group this broker coordinates, filtered by state (v4+) and type (v5+).

use std::sync::Arc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::dispatch::ConnectionContext;

pub async fn handle(ctx: &Arc<ConnectionContext>, version: i16, req: ListGroupsRequest) -> ListGroupsResponse {
    // Kafka compares states and types case-insensitively.
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_ascii_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_ascii_lowercase()).collect();
    let groups = ctx
        .broker
        .groups
        .list_groups(&ctx.broker)
        .await
        .into_iter()
        .filter(|g| version < 4 || states.is_empty() || states.contains(&g.state.to_ascii_lowercase()))
        .filter(|g| version < 5 || types.is_empty() || types.contains(&g.group_type.to_string()))
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type))
                .with_group_state(StrBytes::from_static_str(g.state))
                .with_group_type(StrBytes::from_static_str(g.group_type))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
