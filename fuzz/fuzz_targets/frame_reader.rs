//! `FrameReader` on an arbitrary byte stream delivered in arbitrary read sizes, each frame then
//! decoded. Checks: frames come back exactly as sent (prefix stripped, in order, none skipped),
//! every error is a `FrameError`, and memory follows bytes received, not declared lengths (the
//! limit is the real 100 MiB default, so an up-front allocation trips -malloc_limit_mb).
#![no_main]

use futures_lite::AsyncRead;
use libfuzzer_sys::fuzz_target;
use runnel_net::frame::{FrameError, FrameReader, DEFAULT_FRAME_BYTES_MAX};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Delivers `stream` in reads whose sizes cycle through `steps` (each 1..=256).
struct Chopped<'a> {
    stream: &'a [u8],
    steps: &'a [u8],
    turn: usize,
}

impl AsyncRead for Chopped<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let step = match self.steps.len() {
            0 => usize::MAX,
            count => usize::from(self.steps[self.turn % count]) + 1,
        };
        self.turn += 1;
        let count = step.min(buf.len()).min(self.stream.len());
        buf[..count].copy_from_slice(&self.stream[..count]);
        self.stream = &self.stream[count..];
        Poll::Ready(Ok(count))
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte: how many read-size bytes follow; then the stream.
    let Some((&step_count, rest)) = data.split_first() else {
        return;
    };
    let step_count = usize::from(step_count % 16).min(rest.len());
    let (steps, stream) = rest.split_at(step_count);
    let mut reader = Chopped {
        stream,
        steps,
        turn: 0,
    };
    let mut frames = FrameReader::new(DEFAULT_FRAME_BYTES_MAX);
    let mut consumed = 0usize;
    let mut reads = 0usize;
    loop {
        reads += 1;
        assert!(
            reads <= stream.len() + 2,
            "a read that consumes nothing must end the stream"
        );
        match futures_lite::future::block_on(frames.read_some(&mut reader)) {
            Ok(Some(frame)) => {
                let expected = &stream[consumed + 4..consumed + 4 + frame.len()];
                assert_eq!(&frame[..], expected);
                let length = i32::from_be_bytes(stream[consumed..consumed + 4].try_into().unwrap());
                assert_eq!(usize::try_from(length).ok(), Some(frame.len()));
                consumed += 4 + frame.len();
                assert!(!frames.in_frame());
                let _ = runnel_net::codec::decode_request(frame);
            }
            Ok(None) => {
                let (received, expected) = frames.progress();
                assert!(received < expected);
                assert_eq!(consumed + received, stream.len() - reader.stream.len());
            }
            Err(FrameError::Closed) => {
                assert_eq!(consumed, stream.len());
                return;
            }
            Err(FrameError::BadLength { length, .. }) => {
                assert!(length < 0 || length as usize > DEFAULT_FRAME_BYTES_MAX);
                return;
            }
            Err(FrameError::Io(error)) => {
                assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
                assert!(reader.stream.is_empty());
                return;
            }
            Err(other) => panic!("no timeouts without a clock: {other}"),
        }
    }
});
