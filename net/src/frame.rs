//! Kafka framing: a 4-byte big-endian length, then that many bytes.
//!
//! The length is checked against the configured maximum (`socket.request.max.bytes`) before any
//! allocation, so a hostile length prefix costs nothing. Runs on the connection's shard.

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt};
use std::io;

/// Kafka's default `socket.request.max.bytes` (100 MiB).
pub const DEFAULT_FRAME_BYTES_MAX: usize = 100 * 1024 * 1024;

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
    /// The connection failed or closed inside a frame.
    #[error("I/O error reading a frame: {0}")]
    Io(#[from] io::Error),
}

/// Reads one frame. Returns its body (without the length prefix).
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    frame_bytes_max: usize,
) -> Result<Bytes, FrameError> {
    let mut prefix = [0u8; 4];
    let mut filled = 0;
    while filled < prefix.len() {
        let read = reader.read(&mut prefix[filled..]).await?;
        if read == 0 {
            return Err(if filled == 0 {
                FrameError::Closed
            } else {
                FrameError::Io(io::ErrorKind::UnexpectedEof.into())
            });
        }
        filled += read;
    }
    let length = i32::from_be_bytes(prefix);
    let Ok(size) = usize::try_from(length) else {
        return Err(FrameError::BadLength {
            length,
            max: frame_bytes_max,
        });
    };
    if size > frame_bytes_max {
        return Err(FrameError::BadLength {
            length,
            max: frame_bytes_max,
        });
    }
    let mut body = BytesMut::zeroed(size);
    reader.read_exact(&mut body).await?;
    Ok(body.freeze())
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
    }
}
