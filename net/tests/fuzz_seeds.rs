//! Replays the fuzz seed corpora (`fuzz/seeds/`, real client frames plus hostile ones, and any
//! crash reproducer added there) through the same decoding the fuzz targets exercise, on the
//! stable toolchain, so `cargo test` keeps them passing without nightly or cargo-fuzz.

use runnel_net::codec::decode_request;
use runnel_net::frame::{read_frame, FrameError, DEFAULT_FRAME_BYTES_MAX};
use std::path::{Path, PathBuf};

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut seeds: Vec<_> = std::fs::read_dir(&folder)
        .unwrap_or_else(|error| panic!("{}: {error}", folder.display()))
        .map(|entry| {
            let path = entry.expect("listing seeds").path();
            let bytes = std::fs::read(&path).expect("reading a seed");
            (path, bytes)
        })
        .collect();
    seeds.sort();
    assert!(
        seeds.len() >= 10,
        "{} holds too few seeds",
        folder.display()
    );
    seeds
}

#[test]
fn decode_request_seeds_decode_or_fail_cleanly() {
    let mut decoded = 0;
    for (path, bytes) in seeds("decode_request") {
        let recorded = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix("seed-api"))
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
        match decode_request(bytes::Bytes::from(bytes)) {
            Ok(_) => decoded += 1,
            // Frames recorded from real clients must decode.
            Err(error) => assert!(!recorded, "{}: {error}", path.display()),
        }
    }
    assert!(decoded >= 10);
}

#[test]
fn frame_reader_seeds_split_into_frames_or_fail_cleanly() {
    for (path, bytes) in seeds("frame_reader") {
        // Layout of the frame_reader fuzz input: a count byte, that many read sizes, the stream.
        let Some((&count, rest)) = bytes.split_first() else {
            continue;
        };
        let stream = &rest[usize::from(count % 16).min(rest.len())..];
        let mut reader = futures_lite::io::Cursor::new(stream);
        let mut consumed = 0usize;
        loop {
            match futures_lite::future::block_on(read_frame(&mut reader, DEFAULT_FRAME_BYTES_MAX)) {
                Ok(frame) => {
                    consumed += 4 + frame.len();
                    let _ = decode_request(frame);
                }
                Err(FrameError::Closed) => {
                    assert_eq!(consumed, stream.len(), "{}", path.display());
                    break;
                }
                Err(FrameError::BadLength { .. } | FrameError::Io(_)) => break,
                Err(error) => panic!("{}: {error}", path.display()),
            }
        }
    }
}
