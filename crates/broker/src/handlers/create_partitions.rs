//! CreatePartitions: grow a topic; new partitions are opened before the image shows them.

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::CommitError;
use crate::controller::{plan_create_partitions, ApiError, MAX_PARTITIONS_PER_REQUEST};
use crate::dispatch::ConnectionContext;

pub async fn handle(
    ctx: &Arc<ConnectionContext>,
    _version: i16,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let broker = ctx.broker.clone();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *counts.entry(t.name.0.to_string()).or_default() += 1;
    }
    let validate_only = req.validate_only;
    let results = tokio::task::spawn_blocking(move || {
        // What is left of the request's partition budget; a topic that would exceed it is refused.
        let mut budget = MAX_PARTITIONS_PER_REQUEST;
        req.topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let assignments: Option<Vec<Vec<i32>>> = t
                    .assignments
                    .map(|a| a.into_iter().map(|x| x.broker_ids.into_iter().map(|b| b.0).collect()).collect());
                let outcome = if counts.get(&name).copied().unwrap_or(0) > 1 {
                    Err(ApiError::new(ResponseError::InvalidRequest, "Duplicate topic in request."))
                } else {
                    broker
                        .commit(|image| {
                            let records = plan_create_partitions(
                                image,
                                &broker.config,
                                &name,
                                t.count,
                                assignments.as_deref(),
                                budget,
                            )?;
                            budget -= records.len() as i64;
                            Ok((if validate_only { Vec::new() } else { records }, ()))
                        })
                        .map_err(|e| match e {
                            CommitError::Rejected(e) => e,
                            CommitError::Io(e) => ApiError::new(ResponseError::KafkaStorageError, e.to_string()),
                        })
                };
                let r = CreatePartitionsTopicResult::default().with_name(t.name);
                match outcome {
                    Ok(()) => {
                        if !validate_only {
                            tracing::info!(topic = %name, partitions = t.count, "grew topic");
                        }
                        r.with_error_message(None)
                    }
                    Err(e) => {
                        r.with_error_code(e.error.code()).with_error_message(Some(StrBytes::from_string(e.message)))
                    }
                }
            })
            .collect::<Vec<_>>()
    })
    .await;
    match results {
        Ok(results) => CreatePartitionsResponse::default().with_results(results),
        Err(e) => {
            tracing::error!(error = %e, "create partitions task failed");
            CreatePartitionsResponse::default()
        }
    }
}
