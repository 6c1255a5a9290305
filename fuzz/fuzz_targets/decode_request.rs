//! `decode_request` on arbitrary frame bodies: it must return a request or a `DecodeError`,
//! never panic, abort, or allocate far beyond the input (run with -malloc_limit_mb).
#![no_main]

use libfuzzer_sys::fuzz_target;
use runnel_net::codec::{decode_request, DecodeError};

fuzz_target!(|data: &[u8]| {
    match decode_request(bytes::Bytes::copy_from_slice(data)) {
        Ok(request) => {
            // What the connection loop relies on: the header it answers with is the one sent.
            assert!(data.len() >= 8);
            let correlation_id = i32::from_be_bytes([data[4], data[5], data[6], data[7]]);
            assert_eq!(request.header.correlation_id, correlation_id);
            assert_eq!(request.api_version, i16::from_be_bytes([data[2], data[3]]));
        }
        Err(DecodeError::TooShort(length)) => assert!(length < 8 && length == data.len()),
        Err(_) => {}
    }
});
