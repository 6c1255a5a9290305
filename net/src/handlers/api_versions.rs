//! ApiVersions (18): our version table. An unknown request version gets a v0 body with
//! UNSUPPORTED_VERSION (35) and the table, never a closed connection.

use crate::versions::ADVERTISED;
use bytes::BytesMut;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseKind};

/// The response (any version encodes from this).
pub fn handle(error_code: i16) -> ApiVersionsResponse {
    let api_keys = ADVERTISED
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

/// The v0 answer to an ApiVersions request of a version we do not know.
pub fn unsupported_version(correlation_id: i32) -> BytesMut {
    let body = ResponseKind::ApiVersions(handle(35));
    crate::codec::encode_response(ApiKey::ApiVersions, 0, correlation_id, &body)
        .expect("ApiVersions v0 always encodes")
}
