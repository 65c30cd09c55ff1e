//! FindCoordinator: the broker leading the `__consumer_offsets` partition a group id hashes to (key type 0), or the
//! `__transaction_state` partition a transactional id hashes to (key type 1). The first request creates the topic,
//! as Kafka does. v4+ asks for many keys at once (`coordinator_keys`).

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::controller::ApiError;
use crate::coordinator::group::GROUP_METADATA_TOPIC_NAME;
use crate::coordinator::txn::TRANSACTION_STATE_TOPIC_NAME;
use crate::dispatch::ConnectionContext;

/// Kafka's CoordinatorType.
const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;

pub async fn handle(
    ctx: &Arc<ConnectionContext>,
    version: i16,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let keys: Vec<String> = if version >= 4 {
        req.coordinator_keys.iter().map(|k| k.to_string()).collect()
    } else {
        vec![req.key.to_string()]
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    for key in keys {
        let (error, message, node) = find(ctx, req.key_type, &key).await;
        let mut c =
            Coordinator::default().with_key(StrBytes::from_string(key)).with_error_code(error.map_or(0, |e| e.code()));
        match node {
            Some(n) => {
                c.node_id = BrokerId(n);
                c.host = StrBytes::from_string(ctx.advertised.host.clone());
                c.port = ctx.advertised.port as i32;
            }
            None => {
                c.node_id = BrokerId(-1);
                c.port = -1;
            }
        }
        c.error_message = message.map(StrBytes::from_string);
        coordinators.push(c);
    }
    if version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let c = coordinators.pop().unwrap_or_default();
    let mut resp = FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port);
    if version >= 1 {
        resp.error_message = c.error_message;
    }
    resp
}

/// Creates a coordinator's internal topic if it does not exist yet.
type CreateTopic = fn(&Broker) -> Result<(), ApiError>;

async fn find(
    ctx: &Arc<ConnectionContext>,
    key_type: i8,
    key: &str,
) -> (Option<ResponseError>, Option<String>, Option<i32>) {
    let (topic, creates): (&str, CreateTopic) = match key_type {
        GROUP => (GROUP_METADATA_TOPIC_NAME, |b| b.groups.ensure_topic(b)),
        TRANSACTION => (TRANSACTION_STATE_TOPIC_NAME, |b| b.txns.ensure_topic(b)),
        other => {
            return (Some(ResponseError::InvalidRequest), Some(format!("Unknown coordinator type: {other}")), None);
        }
    };
    let broker = ctx.broker.clone();
    let created = tokio::task::spawn_blocking(move || creates(&broker)).await;
    match created {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot create {topic}");
            return (Some(ResponseError::CoordinatorNotAvailable), Some(e.message), None);
        }
        Err(e) => return (Some(ResponseError::CoordinatorNotAvailable), Some(e.to_string()), None),
    }
    let image = ctx.broker.image();
    let p = match key_type {
        GROUP => ctx.broker.groups.partition_of(&ctx.broker, key),
        _ => ctx.broker.txns.partition_of(&ctx.broker, key),
    };
    let leader = image.topic(topic).and_then(|t| t.partitions.get(&p)).map(|p| p.leader);
    match leader {
        Some(l) if l == ctx.broker.config.node_id => (None, None, Some(l)),
        _ => (Some(ResponseError::CoordinatorNotAvailable), None, None),
    }
}
