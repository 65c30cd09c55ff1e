//! DescribeTransactions, as Kafka's TransactionCoordinator.handleDescribeTransactions: each id's state, producer,
//! timeout, start time and partitions; TRANSACTIONAL_ID_NOT_FOUND for an id the coordinator does not know.

use std::sync::Arc;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::dispatch::ConnectionContext;

pub async fn handle(
    ctx: &Arc<ConnectionContext>,
    _version: i16,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let broker = &ctx.broker;
    let mut states = Vec::with_capacity(req.transactional_ids.len());
    for id in req.transactional_ids {
        // On an error the producer id and epoch keep their schema defaults (0), as in Kafka's answer.
        let mut s = TransactionState::default().with_transactional_id(id.clone());
        match broker.txns.describe(broker, &id.0).await {
            Ok(d) => {
                let mut topics: Vec<TopicData> = Vec::new();
                for (t, p) in &d.partitions {
                    match topics.iter_mut().find(|x| x.topic.0.as_str() == t) {
                        Some(x) => x.partitions.push(*p),
                        None => topics.push(
                            TopicData::default()
                                .with_topic(TopicName(StrBytes::from_string(t.clone())))
                                .with_partitions(vec![*p]),
                        ),
                    }
                }
                s = s
                    .with_transaction_state(StrBytes::from_static_str(d.state.name()))
                    .with_transaction_timeout_ms(d.timeout_ms)
                    .with_transaction_start_time_ms(d.start_timestamp)
                    .with_producer_id(ProducerId(d.producer_id))
                    .with_producer_epoch(d.producer_epoch)
                    .with_topics(topics);
            }
            Err(e) => s = s.with_error_code(e.code()),
        }
        states.push(s);
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
