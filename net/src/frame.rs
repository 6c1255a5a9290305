//! Kafka framing: a 4-byte big-endian length, then that many bytes.
//!
//! The length is checked against the configured maximum (`socket.request.max.bytes`) before any
//! allocation, and the body buffer then grows with the bytes that actually arrive (it starts at
//! [`BODY_BYTES_INITIAL`] and at most doubles per step), so a peer that declares 100 MiB and
//! sends ten bytes costs about 16 KiB, and any frame costs at most about twice what was received.
//! [`FrameReader`] reads one `read` call at a time, so the connection loop can bound each wait
//! (idle and request timeouts) and knows whether a frame has started. Runs on the connection's
//! shard.

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt};
use std::io;

/// Kafka's default `socket.request.max.bytes` (100 MiB).
pub const DEFAULT_FRAME_BYTES_MAX: usize = 100 * 1024 * 1024;

/// The body buffer a frame starts with (smaller frames get exactly their size).
pub const BODY_BYTES_INITIAL: usize = 16 * 1024;

/// Why a frame could not be read. Every case closes the connection with one log line.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// The length prefix is negative or above the limit.
    #[error("frame length {length} outside 0..={max}")]
    BadLength {
        /// The length prefix as sent.
        length: i32,
        /// The configured maximum.
        max: usize,
    },
    /// No byte of a next request arrived within `connections.max.idle.ms`.
    #[error("idle for {idle_ms} ms (connections.max.idle.ms)")]
    Idle {
        /// The limit that passed.
        idle_ms: u64,
    },
    /// A request started but was not complete within the request timeout.
    #[error("request incomplete after {timeout_ms} ms: {received} of {expected} bytes")]
    Incomplete {
        /// The limit that passed.
        timeout_ms: u64,
        /// Bytes of the frame received (length prefix included).
        received: usize,
        /// Bytes of the frame expected (length prefix included; 4 while the prefix is partial).
        expected: usize,
    },
    /// The connection failed or closed inside a frame.
    #[error("I/O error reading a frame: {0}")]
    Io(#[from] io::Error),
}

/// Reads frames from one connection, one `read` call per [`FrameReader::read_some`].
///
/// Cancel-safe: dropping a `read_some` future loses no bytes (they land in `self` only when a
/// read completes). Lives on the connection's shard, used by one task.
#[derive(Debug)]
pub struct FrameReader {
    frame_bytes_max: usize,
    prefix: [u8; 4],
    prefix_filled: usize,
    /// Declared body size (valid once the prefix is complete).
    body_size: usize,
    /// The body so far; bytes past `body_filled` are zeros not yet read into.
    body: BytesMut,
    body_filled: usize,
}

impl FrameReader {
    /// A reader refusing frames over `frame_bytes_max`.
    pub fn new(frame_bytes_max: usize) -> FrameReader {
        FrameReader {
            frame_bytes_max,
            prefix: [0; 4],
            prefix_filled: 0,
            body_size: 0,
            body: BytesMut::new(),
            body_filled: 0,
        }
    }

    /// Whether part of a frame has arrived (so a request timeout applies, not the idle one).
    pub fn in_frame(&self) -> bool {
        self.prefix_filled > 0
    }

    /// Bytes of the current frame received and expected, length prefix included.
    pub fn progress(&self) -> (usize, usize) {
        if self.prefix_filled < self.prefix.len() {
            (self.prefix_filled, self.prefix.len())
        } else {
            (4 + self.body_filled, 4 + self.body_size)
        }
    }

    /// Issues at most one `read`. Returns the frame's body (without the length prefix) once
    /// complete, `None` while more bytes are needed.
    pub async fn read_some<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<Option<Bytes>, FrameError> {
        if self.prefix_filled < self.prefix.len() {
            let read = reader.read(&mut self.prefix[self.prefix_filled..]).await?;
            if read == 0 {
                return Err(if self.prefix_filled == 0 {
                    FrameError::Closed
                } else {
                    FrameError::Io(io::ErrorKind::UnexpectedEof.into())
                });
            }
            self.prefix_filled += read;
            if self.prefix_filled < self.prefix.len() {
                return Ok(None);
            }
            self.body_size = self.declared_size()?;
            self.body = BytesMut::zeroed(self.body_size.min(BODY_BYTES_INITIAL));
            self.body_filled = 0;
        } else {
            if self.body_filled == self.body.len() {
                // Grow with what arrived: at most double, never past the declared size.
                let grown = (self.body.len() * 2).min(self.body_size);
                self.body.resize(grown, 0);
            }
            let read = reader.read(&mut self.body[self.body_filled..]).await?;
            if read == 0 {
                return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            self.body_filled += read;
        }
        if self.body_filled < self.body_size {
            return Ok(None);
        }
        debug_assert_eq!(self.body.len(), self.body_size);
        self.prefix_filled = 0;
        self.body_filled = 0;
        Ok(Some(std::mem::take(&mut self.body).freeze()))
    }

    fn declared_size(&self) -> Result<usize, FrameError> {
        let length = i32::from_be_bytes(self.prefix);
        match usize::try_from(length) {
            Ok(size) if size <= self.frame_bytes_max => Ok(size),
            _ => Err(FrameError::BadLength {
                length,
                max: self.frame_bytes_max,
            }),
        }
    }
}

/// Reads one frame with no time limit. Returns its body (without the length prefix).
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    frame_bytes_max: usize,
) -> Result<Bytes, FrameError> {
    let mut frames = FrameReader::new(frame_bytes_max);
    loop {
        if let Some(frame) = frames.read_some(reader).await? {
            return Ok(frame);
        }
    }
}

/// Puts the 4-byte length in front of an encoded response whose first 4 bytes were reserved.
pub fn finish_frame(buffer: &mut BytesMut) {
    let length = i32::try_from(buffer.len() - 4).expect("responses are smaller than 2 GiB");
    buffer[..4].copy_from_slice(&length.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], max: usize) -> Result<Bytes, FrameError> {
        futures_lite::future::block_on(read_frame(&mut futures_lite::io::Cursor::new(bytes), max))
    }

    #[test]
    fn frames_and_bad_lengths() {
        assert_eq!(&read(&[0, 0, 0, 2, 7, 8], 10).unwrap()[..], &[7, 8]);
        assert!(matches!(read(&[], 10), Err(FrameError::Closed)));
        assert!(matches!(read(&[0, 0], 10), Err(FrameError::Io(_))));
        assert!(matches!(read(&[0, 0, 0, 5, 1], 10), Err(FrameError::Io(_))));
        assert!(matches!(
            read(&[0xff, 0xff, 0xff, 0xff], 10),
            Err(FrameError::BadLength { length: -1, .. })
        ));
        assert!(matches!(
            read(&[0x7f, 0xff, 0xff, 0xff], 10),
            Err(FrameError::BadLength { .. })
        ));
        assert!(matches!(
            read(&[0, 0, 0, 11], 10),
            Err(FrameError::BadLength { .. })
        ));
        assert_eq!(read(&[0, 0, 0, 0], 10).unwrap().len(), 0);
        assert_eq!(
            read(&[0, 0, 0, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 10)
                .unwrap()
                .len(),
            10
        );
    }

    /// Hands out at most `step` bytes per read, like a slow socket.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let count = self.step.min(buf.len()).min(self.bytes.len());
            buf[..count].copy_from_slice(&self.bytes[..count]);
            self.bytes = &self.bytes[count..];
            std::task::Poll::Ready(Ok(count))
        }
    }

    fn frame_of(body: &[u8]) -> Vec<u8> {
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        frame
    }

    #[test]
    fn back_to_back_frames_in_small_reads() {
        let bodies: Vec<Vec<u8>> = [0usize, 1, 5, 16 * 1024, 16 * 1024 + 1, 300_000]
            .iter()
            .map(|&size| (0..size).map(|index| (index % 251) as u8).collect())
            .collect();
        let stream: Vec<u8> = bodies.iter().flat_map(|body| frame_of(body)).collect();
        for step in [1, 3, 4096, 1 << 20] {
            let mut reader = Trickle {
                bytes: &stream,
                step,
            };
            let mut frames = FrameReader::new(1 << 20);
            for body in &bodies {
                let frame = futures_lite::future::block_on(async {
                    loop {
                        if let Some(frame) = frames.read_some(&mut reader).await.unwrap() {
                            return frame;
                        }
                    }
                });
                assert_eq!(&frame[..], &body[..], "step {step}");
                assert!(!frames.in_frame());
            }
            assert!(matches!(
                futures_lite::future::block_on(frames.read_some(&mut reader)),
                Err(FrameError::Closed)
            ));
        }
    }

    #[test]
    fn memory_follows_bytes_received_not_the_declared_length() {
        let mut stream = (DEFAULT_FRAME_BYTES_MAX as i32).to_be_bytes().to_vec();
        stream.extend_from_slice(&[7; 10]);
        let mut reader = Trickle {
            bytes: &stream,
            step: 4,
        };
        let mut frames = FrameReader::new(DEFAULT_FRAME_BYTES_MAX);
        for _ in 0..4 {
            assert!(
                futures_lite::future::block_on(frames.read_some(&mut reader))
                    .unwrap()
                    .is_none()
            );
        }
        assert!(frames.in_frame());
        assert_eq!(frames.progress(), (14, 4 + DEFAULT_FRAME_BYTES_MAX));
        assert!(frames.body.capacity() <= 2 * BODY_BYTES_INITIAL);
        assert!(matches!(
            futures_lite::future::block_on(frames.read_some(&mut reader)),
            Err(FrameError::Io(_))
        ));

        // A large frame that does arrive costs at most about twice its size.
        let body = vec![1u8; 3_000_000];
        let stream = frame_of(&body);
        let mut reader = Trickle {
            bytes: &stream,
            step: 65536,
        };
        let mut frames = FrameReader::new(DEFAULT_FRAME_BYTES_MAX);
        let frame = futures_lite::future::block_on(async {
            loop {
                if let Some(frame) = frames.read_some(&mut reader).await.unwrap() {
                    return frame;
                }
                assert!(frames.body.capacity() <= 4 * frames.body_filled.max(BODY_BYTES_INITIAL));
            }
        });
        assert_eq!(frame.len(), body.len());
    }
}
