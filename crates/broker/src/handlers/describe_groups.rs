//! DescribeGroups: state, protocol and members (with their subscription and assignment) of classic groups.

use std::sync::Arc;

use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::coordinator::group::Request;
use crate::dispatch::ConnectionContext;

pub async fn handle(ctx: &Arc<ConnectionContext>, version: i16, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for id in req.groups {
        let group_id = id.0.to_string();
        let mut g = match ctx
            .broker
            .groups
            .call(&ctx.broker, &group_id, |tx| Request::DescribeGroup { group_id: group_id.clone(), tx })
            .await
        {
            Ok(g) => g,
            Err(e) => DescribedGroup::default().with_group_id(id.clone()).with_error_code(e.code()),
        };
        if g.error_code == ResponseError::GroupIdNotFound.code() {
            // Before v6 an unknown group is simply Dead, with no error.
            if version < 6 {
                g.error_code = 0;
            } else if g.error_message.is_none() {
                g.error_message = Some(StrBytes::from_string(format!("Group {group_id} not found.")));
            }
        }
        if version < 6 {
            g.error_message = None;
        }
        if version < 5 {
            for m in &mut g.members {
                m.group_instance_id = None;
            }
        }
        // No ACLs yet, so no authorized operations are reported (Kafka's "not requested" value).
        g.authorized_operations = i32::MIN;
        groups.push(g);
    }
    DescribeGroupsResponse::default().with_groups(groups)
}
