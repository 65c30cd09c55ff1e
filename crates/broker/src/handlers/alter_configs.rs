//! AlterConfigs (the legacy, non-incremental API): each resource's dynamic configs are replaced by the given set,
//! so keys left out are removed, as in Kafka.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::config::alter::{alter_resource, duplicate_resources, preprocess, ConfigOp, OpType};
use crate::controller::ApiError;
use crate::dispatch::ConnectionContext;

pub async fn handle(ctx: &Arc<ConnectionContext>, _version: i16, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let broker = ctx.broker.clone();
    let responses = tokio::task::spawn_blocking(move || {
        let dups = duplicate_resources(req.resources.iter().map(|r| (r.resource_type, r.resource_name.as_str())));
        req.resources
            .iter()
            .map(|res| {
                let name = res.resource_name.to_string();
                let ops: Vec<ConfigOp> = res
                    .configs
                    .iter()
                    .map(|c| ConfigOp {
                        name: c.name.to_string(),
                        op: Some(OpType::Set),
                        value: c.value.as_ref().map(|v| v.to_string()),
                    })
                    .collect();
                let result = if dups.contains(&(res.resource_type, name.clone())) {
                    Err(ApiError::new(ResponseError::InvalidRequest, "Each resource must appear at most once."))
                } else {
                    preprocess(&ops, true).and_then(|()| {
                        alter_resource(&broker, res.resource_type, &name, req.validate_only, |_current| {
                            Ok(ops
                                .iter()
                                .map(|o| (o.name.clone(), o.value.clone().unwrap_or_default()))
                                .collect::<BTreeMap<_, _>>())
                        })
                    })
                };
                let (code, message) = match result {
                    Ok(()) => (0, None),
                    Err(e) => (e.error.code(), Some(StrBytes::from_string(e.message))),
                };
                AlterConfigsResourceResponse::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name.clone())
                    .with_error_code(code)
                    .with_error_message(message)
            })
            .collect::<Vec<_>>()
    })
    .await;
    match responses {
        Ok(r) => AlterConfigsResponse::default().with_responses(r),
        Err(e) => {
            tracing::error!(error = %e, "alter configs task failed");
            AlterConfigsResponse::default()
        }
    }
}
