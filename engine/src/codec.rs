//! Record batch compression codecs (attribute bits 0-2): gzip, snappy (raw and xerial framing),
//! lz4 (frame format) and zstd, decoded within a byte budget and encoded the way Kafka clients
//! read them.
//!
//! The append path never decompresses (it validates headers and CRCs only); the cleaner must, to
//! see keys, and so must a client reading fetched batches. Both use this module. Decompression
//! trusts nothing: it stops once the output would pass `budget_bytes`, so a small hostile batch
//! cannot make it allocate more than the budget (a decompression bomb). Pure functions over
//! bytes: run on any thread.

use crate::batch::Compression;
use std::io::{Read, Write};

/// snappy-java's framing: magic, then version and compatible version (i32 each).
pub const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;
/// Snappy block size in xerial framing (snappy-java's default).
const XERIAL_BLOCK_BYTES: usize = 32 << 10;
/// Compression levels: zlib's default for gzip, the zstd library's default.
const GZIP_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;

/// Why a records section could not be (de)compressed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The output would be larger than the budget.
    #[error("decompresses to more than the {budget_bytes} bytes allowed")]
    TooLarge {
        /// The budget.
        budget_bytes: usize,
    },
    /// The codec's decoder or encoder failed.
    #[error("{codec:?}: {reason}")]
    Codec {
        /// The codec.
        codec: Compression,
        /// The library's message.
        reason: String,
    },
}

/// How a snappy records section is framed: librdkafka and franz-go write raw snappy, the Java
/// client snappy-java's xerial framing. Re-encoding keeps the framing the producer chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnappyFraming {
    /// One raw snappy block.
    Raw,
    /// The xerial header, then `i32 length` + raw snappy per block.
    Xerial,
}

impl SnappyFraming {
    /// The framing of a compressed snappy section.
    pub fn of(section: &[u8]) -> SnappyFraming {
        if section.starts_with(XERIAL_MAGIC) {
            SnappyFraming::Xerial
        } else {
            SnappyFraming::Raw
        }
    }
}

/// Attribute bits 0-2 for `compression` (the inverse of [`Compression::from_codec`]).
pub fn codec_bits(compression: Compression) -> i16 {
    match compression {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
    }
}

/// Decompresses a records section into at most `budget_bytes` bytes.
pub fn decompress(
    codec: Compression,
    input: &[u8],
    budget_bytes: usize,
) -> Result<Vec<u8>, CodecError> {
    let failed = |reason: String| CodecError::Codec { codec, reason };
    match codec {
        Compression::None if input.len() > budget_bytes => {
            Err(CodecError::TooLarge { budget_bytes })
        }
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(input), budget_bytes)
            .map_err(|error| error.with_codec(codec)),
        Compression::Snappy => match SnappyFraming::of(input) {
            SnappyFraming::Xerial => xerial_decompress(input, budget_bytes),
            SnappyFraming::Raw => {
                let mut output = Vec::new();
                snappy_block(input, budget_bytes, &mut output)?;
                Ok(output)
            }
        },
        Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(input), budget_bytes)
            .map_err(|error| error.with_codec(codec)),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|error| failed(error.to_string()))?;
            read_bounded(decoder, budget_bytes).map_err(|error| error.with_codec(codec))
        }
    }
}

/// Compresses a records section the way the Java client does for each codec (snappy in the
/// given framing).
pub fn compress(
    codec: Compression,
    input: &[u8],
    snappy: SnappyFraming,
) -> Result<Vec<u8>, CodecError> {
    let failed = |error: std::io::Error| CodecError::Codec {
        codec,
        reason: error.to_string(),
    };
    match codec {
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => {
            let level = flate2::Compression::new(GZIP_LEVEL);
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
            encoder.write_all(input).map_err(failed)?;
            encoder.finish().map_err(failed)
        }
        Compression::Snappy => match snappy {
            SnappyFraming::Xerial => xerial_compress(input),
            SnappyFraming::Raw => snap::raw::Encoder::new()
                .compress_vec(input)
                .map_err(|error| CodecError::Codec {
                    codec,
                    reason: error.to_string(),
                }),
        },
        Compression::Lz4 => {
            // Kafka's Java reader accepts only independent blocks of 64 KiB..4 MiB.
            let frame = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(frame, Vec::new());
            encoder.write_all(input).map_err(failed)?;
            encoder.finish().map_err(|error| CodecError::Codec {
                codec,
                reason: error.to_string(),
            })
        }
        Compression::Zstd => zstd::bulk::compress(input, ZSTD_LEVEL).map_err(failed),
    }
}

impl CodecError {
    fn with_codec(self, codec: Compression) -> CodecError {
        match self {
            CodecError::Codec { reason, .. } => CodecError::Codec { codec, reason },
            too_large => too_large,
        }
    }
}

/// Reads a decoder to its end, failing once it yields more than `budget_bytes`. (The codec in
/// the error is filled in by the caller.)
fn read_bounded(decoder: impl Read, budget_bytes: usize) -> Result<Vec<u8>, CodecError> {
    let mut output = Vec::new();
    let limit = u64::try_from(budget_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    decoder
        .take(limit)
        .read_to_end(&mut output)
        .map_err(|error| CodecError::Codec {
            codec: Compression::None,
            reason: error.to_string(),
        })?;
    if output.len() > budget_bytes {
        return Err(CodecError::TooLarge { budget_bytes });
    }
    Ok(output)
}

/// Appends one raw snappy block, checking its declared length against the budget first.
fn snappy_block(block: &[u8], budget_bytes: usize, output: &mut Vec<u8>) -> Result<(), CodecError> {
    let failed = |error: snap::Error| CodecError::Codec {
        codec: Compression::Snappy,
        reason: error.to_string(),
    };
    let length = snap::raw::decompress_len(block).map_err(failed)?;
    if length > budget_bytes.saturating_sub(output.len()) {
        return Err(CodecError::TooLarge { budget_bytes });
    }
    let start = output.len();
    output.resize(start + length, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut output[start..])
        .map_err(failed)?;
    output.truncate(start + written);
    Ok(())
}

/// snappy-java's framing: a 16-byte header, then blocks of `i32 length` + raw snappy.
fn xerial_decompress(input: &[u8], budget_bytes: usize) -> Result<Vec<u8>, CodecError> {
    let malformed = |reason: &str| CodecError::Codec {
        codec: Compression::Snappy,
        reason: reason.to_string(),
    };
    let mut rest = input
        .get(XERIAL_HEADER_LEN..)
        .ok_or_else(|| malformed("xerial header truncated"))?;
    let mut output = Vec::new();
    while !rest.is_empty() {
        let (length, after) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| malformed("xerial block length truncated"))?;
        let length = usize::try_from(i32::from_be_bytes(*length))
            .ok()
            .filter(|length| *length <= after.len())
            .ok_or_else(|| malformed("xerial block length out of range"))?;
        snappy_block(&after[..length], budget_bytes, &mut output)?;
        rest = &after[length..];
    }
    Ok(output)
}

/// snappy-java's framing (what the Java client writes): the header, then `i32 length` + raw
/// snappy per block of at most [`XERIAL_BLOCK_BYTES`].
fn xerial_compress(input: &[u8]) -> Result<Vec<u8>, CodecError> {
    let failed = |reason: String| CodecError::Codec {
        codec: Compression::Snappy,
        reason,
    };
    let mut out = XERIAL_MAGIC.to_vec();
    out.extend_from_slice(&1i32.to_be_bytes()); // version
    out.extend_from_slice(&1i32.to_be_bytes()); // compatible version
    debug_assert_eq!(out.len(), XERIAL_HEADER_LEN);
    let mut encoder = snap::raw::Encoder::new();
    for block in input.chunks(XERIAL_BLOCK_BYTES) {
        let compressed = encoder
            .compress_vec(block)
            .map_err(|error| failed(error.to_string()))?;
        let length = i32::try_from(compressed.len())
            .map_err(|_| failed("snappy block over 2 GiB".into()))?;
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&compressed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|value| (value % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips_in_both_snappy_framings() {
        let input = sample();
        for codec in CODECS {
            for framing in [SnappyFraming::Raw, SnappyFraming::Xerial] {
                let compressed = compress(codec, &input, framing).expect("compress");
                if codec == Compression::Snappy {
                    assert_eq!(SnappyFraming::of(&compressed), framing);
                }
                let output = decompress(codec, &compressed, input.len()).expect("decompress");
                assert_eq!(output, input, "{codec:?} {framing:?}");
            }
        }
    }

    #[test]
    fn decompression_stops_at_the_budget() {
        let input = vec![0u8; 1 << 20];
        for codec in CODECS {
            let compressed = compress(codec, &input, SnappyFraming::Xerial).expect("compress");
            let budget_bytes = (1 << 20) - 1;
            assert_eq!(
                decompress(codec, &compressed, budget_bytes),
                Err(CodecError::TooLarge { budget_bytes }),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn garbage_is_a_codec_error_not_a_panic() {
        let garbage = [0x82u8, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0, 1, 2, 3, 4, 5];
        for codec in &CODECS[1..] {
            assert!(
                matches!(
                    decompress(*codec, &garbage, 1 << 20),
                    Err(CodecError::Codec { codec: reported, .. }) if reported == *codec
                ),
                "{codec:?}"
            );
        }
    }
}
