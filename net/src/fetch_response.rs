//! Zero-copy Fetch responses: the response is encoded by hand around each partition's read plan,
//! so record bytes on disk go to the socket with `sendfile` and never pass through user space.
//!
//! Only the framing is written here; everything else about Fetch lives in `handlers/fetch.rs`.
//! The encoding is checked byte for byte against the `kafka-protocol` crate's encoder for every
//! version we serve (4-12) in the tests below.

use bytes::{BufMut, Bytes, BytesMut};
use runnel_engine::{ReadChunk, ReadPlan};

/// One partition's answer.
#[derive(Clone, Debug, Default)]
pub struct PartitionAnswer {
    /// Partition index.
    pub partition: i32,
    /// Kafka error code (0 = none).
    pub error_code: i16,
    /// High watermark.
    pub high_watermark: i64,
    /// Last stable offset.
    pub last_stable_offset: i64,
    /// Log start offset.
    pub log_start_offset: i64,
    /// The records: whole batches (possibly empty).
    pub records: ReadPlan,
}

/// One topic's answers.
#[derive(Clone, Debug, Default)]
pub struct TopicAnswer {
    /// Topic name.
    pub name: String,
    /// Partitions, in request order.
    pub partitions: Vec<PartitionAnswer>,
}

/// A response as a sequence of pieces to write in order.
#[derive(Debug, Default)]
pub struct ResponseParts {
    /// The pieces; memory pieces are framing or cached batches, file pieces are sendfile ranges.
    pub chunks: Vec<ReadChunk>,
}

impl ResponseParts {
    /// Total bytes including the 4-byte length prefix.
    pub fn len_bytes(&self) -> u64 {
        self.chunks.iter().map(ReadChunk::len).sum()
    }

    /// All pieces as one plan (what `runnel_engine::send_plan` takes).
    pub fn into_plan(self) -> ReadPlan {
        ReadPlan {
            chunks: self.chunks,
            ..ReadPlan::default()
        }
    }
}

struct Writer {
    chunks: Vec<ReadChunk>,
    current: BytesMut,
    flexible: bool,
}

impl Writer {
    fn flush(&mut self) {
        if !self.current.is_empty() {
            let bytes = self.current.split().freeze();
            self.chunks.push(ReadChunk::Memory(bytes));
        }
    }

    fn array_len(&mut self, length: usize) {
        if self.flexible {
            put_unsigned_varint(&mut self.current, length as u64 + 1);
        } else {
            self.current.put_i32(length as i32);
        }
    }

    fn string(&mut self, value: &str) {
        if self.flexible {
            put_unsigned_varint(&mut self.current, value.len() as u64 + 1);
        } else {
            self.current.put_i16(value.len() as i16);
        }
        self.current.put_slice(value.as_bytes());
    }

    fn tagged_fields(&mut self) {
        if self.flexible {
            self.current.put_u8(0);
        }
    }

    fn records(&mut self, plan: ReadPlan) {
        let length = plan.len_bytes();
        if self.flexible {
            put_unsigned_varint(&mut self.current, length + 1);
        } else {
            self.current.put_i32(length as i32);
        }
        self.flush();
        self.chunks
            .extend(plan.chunks.into_iter().filter(|chunk| !chunk.is_empty()));
    }
}

/// Encodes a whole Fetch response frame (length prefix included) of `version` (4-12).
pub fn encode(version: i16, correlation_id: i32, topics: Vec<TopicAnswer>) -> ResponseParts {
    assert!(
        (4..=12).contains(&version),
        "Fetch v{version} is not served"
    );
    let flexible = version >= 12;
    let mut writer = Writer {
        chunks: Vec::new(),
        current: BytesMut::with_capacity(256),
        flexible,
    };
    writer.current.put_i32(0); // length, patched below
    writer.current.put_i32(correlation_id);
    writer.tagged_fields(); // response header v1 for flexible versions
    writer.current.put_i32(0); // throttle_time_ms
    if version >= 7 {
        writer.current.put_i16(0); // error_code
        writer.current.put_i32(0); // session_id: sessions declined
    }
    writer.array_len(topics.len());
    for topic in topics {
        writer.string(&topic.name);
        writer.array_len(topic.partitions.len());
        for partition in topic.partitions {
            writer.current.put_i32(partition.partition);
            writer.current.put_i16(partition.error_code);
            writer.current.put_i64(partition.high_watermark);
            writer.current.put_i64(partition.last_stable_offset);
            if version >= 5 {
                writer.current.put_i64(partition.log_start_offset);
            }
            // aborted_transactions: null until transactions exist.
            if flexible {
                put_unsigned_varint(&mut writer.current, 0);
            } else {
                writer.current.put_i32(-1);
            }
            if version >= 11 {
                writer.current.put_i32(-1); // preferred_read_replica
            }
            writer.records(partition.records);
            writer.tagged_fields();
        }
        writer.tagged_fields();
    }
    writer.tagged_fields();
    writer.flush();
    let mut parts = ResponseParts {
        chunks: writer.chunks,
    };
    let frame_length = parts.len_bytes() - 4;
    let ReadChunk::Memory(first) = &parts.chunks[0] else {
        unreachable!("the frame starts with memory");
    };
    let mut patched = BytesMut::from(&first[..]);
    patched[..4].copy_from_slice(&(frame_length as i32).to_be_bytes());
    parts.chunks[0] = ReadChunk::Memory(Bytes::from(patched));
    parts
}

fn put_unsigned_varint(buffer: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buffer.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buffer.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseKind, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn sample() -> Vec<TopicAnswer> {
        let plan = |bytes: &'static [u8]| ReadPlan {
            chunks: vec![
                ReadChunk::Memory(Bytes::from_static(&bytes[..bytes.len() / 2])),
                ReadChunk::Memory(Bytes::from_static(&bytes[bytes.len() / 2..])),
            ],
            ..ReadPlan::default()
        };
        vec![
            TopicAnswer {
                name: "orders".into(),
                partitions: vec![
                    PartitionAnswer {
                        partition: 0,
                        high_watermark: 10,
                        last_stable_offset: 10,
                        log_start_offset: 2,
                        records: plan(&[7u8; 300]),
                        ..PartitionAnswer::default()
                    },
                    PartitionAnswer {
                        partition: 3,
                        error_code: 1,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        ..PartitionAnswer::default()
                    },
                ],
            },
            TopicAnswer {
                name: "x".repeat(200),
                partitions: vec![PartitionAnswer {
                    partition: 1,
                    high_watermark: 5,
                    last_stable_offset: 5,
                    records: plan(&[1u8; 20]),
                    ..PartitionAnswer::default()
                }],
            },
        ]
    }

    fn crate_encoding(version: i16, correlation_id: i32, topics: &[TopicAnswer]) -> Vec<u8> {
        let responses = topics
            .iter()
            .map(|topic| {
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.name.clone())))
                    .with_partitions(
                        topic
                            .partitions
                            .iter()
                            .map(|partition| {
                                PartitionData::default()
                                    .with_partition_index(partition.partition)
                                    .with_error_code(partition.error_code)
                                    .with_high_watermark(partition.high_watermark)
                                    .with_last_stable_offset(partition.last_stable_offset)
                                    .with_log_start_offset(partition.log_start_offset)
                                    .with_aborted_transactions(None)
                                    .with_records(Some(Bytes::from(
                                        partition.records.to_vec().expect("memory plan"),
                                    )))
                            })
                            .collect(),
                    )
            })
            .collect();
        let body = ResponseKind::Fetch(FetchResponse::default().with_responses(responses));
        crate::codec::encode_response(ApiKey::Fetch, version, correlation_id, &body)
            .expect("encodes")
            .to_vec()
    }

    #[test]
    fn matches_the_crate_encoder_for_every_served_version() {
        for version in 4..=12 {
            let ours = encode(version, 77, sample()).into_plan().to_vec().unwrap();
            let theirs = crate_encoding(version, 77, &sample());
            assert_eq!(ours, theirs, "Fetch v{version}");
        }
    }

    #[test]
    fn file_chunks_pass_through_untouched() {
        let file = tempfile::tempfile().unwrap();
        let range = runnel_engine::FileRange {
            file: std::sync::Arc::new(file),
            position: 4096,
            length: 1000,
        };
        let topics = vec![TopicAnswer {
            name: "t".into(),
            partitions: vec![PartitionAnswer {
                records: ReadPlan {
                    chunks: vec![ReadChunk::File(range)],
                    ..ReadPlan::default()
                },
                ..PartitionAnswer::default()
            }],
        }];
        let parts = encode(12, 1, topics);
        let files: Vec<_> = parts
            .chunks
            .iter()
            .filter(|chunk| matches!(chunk, ReadChunk::File(_)))
            .collect();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].len(), 1000);
    }
}
