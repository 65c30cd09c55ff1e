//! ConsumerGroupDescribe (KIP-848): epochs, members, their assignments and targets.

use std::sync::Arc;

use kafka_protocol::messages::consumer_group_describe_response::DescribedGroup;
use kafka_protocol::messages::{ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse};

use crate::coordinator::group::Request;
use crate::dispatch::ConnectionContext;

pub async fn handle(
    ctx: &Arc<ConnectionContext>,
    _version: i16,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let mut groups = Vec::with_capacity(req.group_ids.len());
    for id in req.group_ids {
        let group_id = id.0.to_string();
        let image = ctx.broker.image();
        let mut g = match ctx
            .broker
            .groups
            .call(&ctx.broker, &group_id, |tx| Request::ConsumerDescribe { group_id: group_id.clone(), image, tx })
            .await
        {
            Ok(g) => g,
            Err(e) => DescribedGroup::default().with_group_id(id.clone()).with_error_code(e.code()),
        };
        g.authorized_operations = i32::MIN;
        groups.push(g);
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
