//! AlterConfigs (the legacy, non-incremental API): each resource's dynamic configs are replaced by the given set,
//! so keys left out are removed, as in Kafka.

use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

use crate::config::alter::{alter_resources_outcome, ConfigOp, OpType, ResourceChange};
use crate::dispatch::ConnectionContext;

pub async fn handle(ctx: &Arc<ConnectionContext>, _version: i16, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let changes: Vec<ResourceChange> = req
        .resources
        .iter()
        .map(|res| ResourceChange {
            resource_type: res.resource_type,
            name: res.resource_name.to_string(),
            ops: res
                .configs
                .iter()
                .map(|c| ConfigOp {
                    name: c.name.to_string(),
                    op: Some(OpType::Set),
                    value: c.value.as_ref().map(|v| v.to_string()),
                })
                .collect(),
        })
        .collect();
    let outcomes = alter_resources_outcome(ctx.broker.clone(), changes, true, req.validate_only).await;
    let responses = req
        .resources
        .into_iter()
        .zip(outcomes)
        .map(|(res, (code, message))| {
            AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name)
                .with_error_code(code)
                .with_error_message(message)
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}
