//! DeleteTopics: by name (all versions) or by topic id (v6+).

use std::sync::Arc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::broker::CommitError;
use crate::controller::ApiError;
use crate::dispatch::ConnectionContext;
use crate::metadata::MetadataRecord;

pub async fn handle(ctx: &Arc<ConnectionContext>, version: i16, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let broker = ctx.broker.clone();
    let targets: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics.into_iter().map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id)).collect()
    } else {
        req.topic_names.into_iter().map(|n| (Some(n.0.to_string()), Uuid::nil())).collect()
    };
    let results = tokio::task::spawn_blocking(move || {
        targets
            .into_iter()
            .map(|(name, id)| {
                let outcome = if !broker.config.delete_topic_enable {
                    Err(ApiError::new(ResponseError::TopicDeletionDisabled, "Topic deletion is disabled."))
                } else {
                    broker
                        .commit(|image| {
                            let topic = match &name {
                                Some(n) => image.topic(n).ok_or_else(|| {
                                    ApiError::new(
                                        ResponseError::UnknownTopicOrPartition,
                                        "This server does not host this topic-partition.",
                                    )
                                })?,
                                None => image.topic_by_id(&id).ok_or_else(|| {
                                    ApiError::new(
                                        ResponseError::UnknownTopicId,
                                        "This server does not host this topic ID.",
                                    )
                                })?,
                            };
                            Ok((
                                vec![MetadataRecord::RemoveTopicRecord { topic_id: topic.topic_id }],
                                (topic.name.clone(), topic.topic_id),
                            ))
                        })
                        .map_err(|e| match e {
                            CommitError::Rejected(e) => e,
                            CommitError::Io(e) => ApiError::new(ResponseError::KafkaStorageError, e.to_string()),
                        })
                };
                let mut r = DeletableTopicResult::default()
                    .with_name(name.clone().map(|n| TopicName(StrBytes::from_string(n))));
                if version >= 6 {
                    r.topic_id = id;
                }
                match outcome {
                    Ok((n, topic_id)) => {
                        tracing::info!(topic = %n, "deleted topic");
                        r.name = Some(TopicName(StrBytes::from_string(n)));
                        if version >= 6 {
                            r.topic_id = topic_id;
                        }
                    }
                    Err(e) => {
                        r.error_code = e.error.code();
                        r.error_message = Some(StrBytes::from_string(e.message));
                    }
                }
                r
            })
            .collect::<Vec<_>>()
    })
    .await;
    match results {
        Ok(responses) => DeleteTopicsResponse::default().with_responses(responses),
        Err(e) => {
            tracing::error!(error = %e, "delete topics task failed");
            DeleteTopicsResponse::default()
        }
    }
}
