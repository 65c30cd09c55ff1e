//! ApiVersions: the served APIs and version ranges, straight from the dispatch table.

use kafka_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey, SupportedFeatureKey};
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::dispatch::{ConnectionContext, SUPPORTED_APIS};

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|(k, min, max)| {
            ApiVersion::default().with_api_key(*k as i16).with_min_version(*min).with_max_version(*max)
        })
        .collect()
}

pub fn handle(ctx: &ConnectionContext, version: i16, req: ApiVersionsRequest) -> ApiVersionsResponse {
    if version >= 3 {
        let name = req.client_software_name.as_str();
        let ver = req.client_software_version.as_str();
        // KIP-511: names must be non-empty and made of [a-zA-Z0-9.-] (Kafka answers INVALID_REQUEST otherwise).
        let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !valid(name) || !valid(ver) {
            return ApiVersionsResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_api_keys(api_keys());
        }
        tracing::debug!(peer = %ctx.peer, client = name, client_version = ver, "client software");
    }
    let finalized = ctx.broker.txns.config().finalized_transaction_version;
    with_features(ApiVersionsResponse::default().with_api_keys(api_keys()), finalized)
}

/// The feature levels this broker finalizes (v3+, tagged fields): `transaction.version` 2 by default, as a new Kafka
/// 4.x cluster, which makes Java clients use transactions v2 (KIP-890 part 2); the `transaction.version` override
/// lowers it (clients then stay on v1). The epoch only has to be set (clients ignore features with an epoch below one
/// they already saw); the levels never change at run time.
fn with_features(resp: ApiVersionsResponse, tv: i16) -> ApiVersionsResponse {
    resp.with_supported_features(vec![SupportedFeatureKey::default()
        .with_name(StrBytes::from_static_str("transaction.version"))
        .with_min_version(0)
        .with_max_version(crate::coordinator::txn::TRANSACTION_VERSION)])
        .with_finalized_features_epoch(1)
        // A feature at level 0 is not finalized at all (Kafka's features image leaves it out).
        .with_finalized_features(
            (tv > 0)
                .then(|| {
                    FinalizedFeatureKey::default()
                        .with_name(StrBytes::from_static_str("transaction.version"))
                        .with_min_version_level(tv)
                        .with_max_version_level(tv)
                })
                .into_iter()
                .collect(),
        )
}

/// The v0 answer to a request version this broker does not know (KIP-511 fallback).
pub fn unsupported_version_response() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_error_code(ResponseError::UnsupportedVersion.code()).with_api_keys(api_keys())
}
