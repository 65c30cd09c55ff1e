//! ListTransactions, as Kafka's TransactionStateManager.listTransactionStates: the transactions of every hosted
//! coordinator partition, filtered by state names (unknown names are echoed back and match nothing), producer ids,
//! (v1) a minimum running time, and (v2) a transactional id pattern.

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::coordinator::txn::records::TxnState;
use crate::coordinator::txn::ListFilter;
use crate::dispatch::ConnectionContext;

pub async fn handle(
    ctx: &Arc<ConnectionContext>,
    _version: i16,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let mut states = BTreeSet::new();
    let mut unknown = Vec::new();
    for name in &req.state_filters {
        match TxnState::from_name(name.as_str()) {
            Some(s) => {
                states.insert(s);
            }
            None => unknown.push(name.clone()),
        }
    }
    let resp = ListTransactionsResponse::default().with_unknown_state_filters(unknown);
    // Only unknown states asked for: nothing can match.
    if !req.state_filters.is_empty() && states.is_empty() {
        return resp;
    }
    let pattern = match req.transactional_id_pattern.as_ref().filter(|p| !p.is_empty()) {
        // Java's Matcher.matches(): the whole id must match.
        Some(p) => match regex_automata::meta::Regex::new(&format!("^(?:{})$", p.as_str())) {
            Ok(re) => Some(re),
            Err(_) => return resp.with_error_code(ResponseError::InvalidRegularExpression.code()),
        },
        None => None,
    };
    let filter = ListFilter {
        states,
        producer_ids: req.producer_id_filters.iter().map(|p| p.0).collect(),
        min_duration_ms: req.duration_filter,
        pattern,
    };
    let broker = &ctx.broker;
    match broker.txns.list(broker, filter).await {
        Ok(list) => resp.with_transaction_states(
            list.into_iter()
                .map(|t| {
                    TransactionState::default()
                        .with_transactional_id(TransactionalId(StrBytes::from_string(t.transactional_id)))
                        .with_producer_id(ProducerId(t.producer_id))
                        .with_transaction_state(StrBytes::from_static_str(t.state.name()))
                })
                .collect(),
        ),
        Err(e) => resp.with_error_code(e.code()),
    }
}
