//! JoinGroup: parks until the group's join phase completes (the answer is deferred, like an acks=all produce).

use std::sync::Arc;

use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use crate::coordinator::group::Request;
use crate::dispatch::ConnectionContext;

/// Kafka reports a member's host as Java's InetAddress.toString(): "/" and the address.
pub fn client_host(ctx: &ConnectionContext) -> String {
    format!("/{}", ctx.peer.ip())
}

pub async fn handle(
    ctx: &Arc<ConnectionContext>,
    version: i16,
    client_id: String,
    req: JoinGroupRequest,
) -> JoinGroupResponse {
    let group_id = req.group_id.0.to_string();
    let member_id = req.member_id.clone();
    let host = client_host(ctx);
    let mut resp = match ctx
        .broker
        .groups
        .call(&ctx.broker, &group_id, |tx| Request::Join {
            req,
            version,
            client_id,
            client_host: host,
            image: ctx.broker.image(),
            tx,
        })
        .await
    {
        Ok(r) => r,
        Err(e) => JoinGroupResponse::default().with_member_id(member_id).with_error_code(e.code()),
    };
    // Older versions cannot carry what newer ones add.
    if version < 7 && resp.protocol_name.is_none() {
        resp.protocol_name = Some(StrBytes::default());
    }
    if version < 9 {
        resp.skip_assignment = false;
    }
    if version < 5 {
        for m in &mut resp.members {
            m.group_instance_id = None;
        }
    }
    resp
}
