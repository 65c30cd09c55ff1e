//! DeleteGroups: deletes empty groups and their committed offsets.

use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::coordinator::group::Request;
use crate::dispatch::ConnectionContext;

pub async fn handle(ctx: &Arc<ConnectionContext>, _version: i16, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for id in req.groups_names {
        let group_id = id.0.to_string();
        let error = match ctx
            .broker
            .groups
            .call(&ctx.broker, &group_id, |tx| Request::DeleteGroup { group_id: group_id.clone(), tx })
            .await
        {
            Ok(e) => e,
            Err(e) => Some(e),
        };
        results.push(DeletableGroupResult::default().with_group_id(id).with_error_code(error.map_or(0, |e| e.code())));
    }
    DeleteGroupsResponse::default().with_results(results)
}
