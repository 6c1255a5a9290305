//! Request decoding and response encoding on top of the `kafka-protocol` message structs.
//!
//! Every request is checked against our own version table ([`crate::versions`]) before its body
//! is decoded; an ApiVersions request of an unsupported version is still answered (v0 body, error
//! 35), as clients rely on. Record payloads stay `Bytes` slices of the frame (zero copy).

use crate::versions;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    /// Which API.
    pub api_key: ApiKey,
    /// Its version.
    pub api_version: i16,
    /// The header (correlation id, client id).
    pub header: RequestHeader,
    /// The body.
    pub body: RequestKind,
}

/// What went wrong decoding a request.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the fixed header prefix.
    #[error("request frame of {0} bytes is too short")]
    TooShort(usize),
    /// An API key we do not know or do not serve.
    #[error("unsupported API key {0}")]
    UnknownApi(i16),
    /// A version outside our advertised range; `correlation_id` lets the caller answer.
    #[error("unsupported version {api_version} of {api_key:?}")]
    UnsupportedVersion {
        /// The API.
        api_key: ApiKey,
        /// The version asked for.
        api_version: i16,
        /// The request's correlation id.
        correlation_id: i32,
    },
    /// The header or body does not parse.
    #[error("malformed {api_key:?} v{api_version} request: {reason}")]
    Malformed {
        /// The API.
        api_key: ApiKey,
        /// The version.
        api_version: i16,
        /// The decoder's message.
        reason: String,
    },
}

/// Decodes one request frame (without its length prefix).
pub fn decode_request(mut frame: Bytes) -> Result<Request, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::TooShort(frame.len()));
    }
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key =
        ApiKey::try_from(api_key_raw).map_err(|_| DecodeError::UnknownApi(api_key_raw))?;
    let Some(range) = versions::advertised(api_key) else {
        return Err(DecodeError::UnknownApi(api_key_raw));
    };
    if !range.contains(&api_version) {
        return Err(DecodeError::UnsupportedVersion {
            api_key,
            api_version,
            correlation_id,
        });
    }
    let malformed = |reason: String| DecodeError::Malformed {
        api_key,
        api_version,
        reason,
    };
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(api_version))
        .map_err(|error| malformed(error.to_string()))?;
    let body = RequestKind::decode(api_key, &mut frame, api_version)
        .map_err(|error| malformed(error.to_string()))?;
    Ok(Request {
        api_key,
        api_version,
        header,
        body,
    })
}

/// Encodes a response frame, length prefix included.
pub fn encode_response(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<BytesMut, String> {
    let mut buffer = BytesMut::with_capacity(256);
    buffer.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buffer, api_key.response_header_version(api_version))
        .map_err(|error| error.to_string())?;
    body.encode(&mut buffer, api_version)
        .map_err(|error| error.to_string())?;
    crate::frame::finish_frame(&mut buffer);
    Ok(buffer)
}
