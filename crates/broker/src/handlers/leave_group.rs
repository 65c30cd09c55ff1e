//! LeaveGroup: v0-2 name one member; v3+ (KIP-345) a batch of members, possibly by group.instance.id.

use std::sync::Arc;

use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use crate::coordinator::group::Request;
use crate::dispatch::ConnectionContext;

pub async fn handle(ctx: &Arc<ConnectionContext>, version: i16, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let group_id = req.group_id.0.to_string();
    let members =
        if version >= 3 { req.members } else { vec![MemberIdentity::default().with_member_id(req.member_id)] };
    let resp = match ctx
        .broker
        .groups
        .call(&ctx.broker, &group_id, |tx| Request::Leave { group_id: group_id.clone(), members, tx })
        .await
    {
        Ok(r) => r,
        Err(e) => LeaveGroupResponse::default().with_error_code(e.code()),
    };
    if version >= 3 {
        return resp;
    }
    // Before v3 the one member's outcome is the response's error.
    let error = if resp.error_code != 0 { resp.error_code } else { resp.members.first().map_or(0, |m| m.error_code) };
    LeaveGroupResponse::default().with_error_code(error).with_throttle_time_ms(resp.throttle_time_ms)
}
