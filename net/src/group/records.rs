//! The record layout Kafka uses in the compacted `__consumer_offsets` topic.
//!
//! Every record's key starts with an i16 version that says what the record is:
//! - key v0/v1 `OffsetCommitKey`: group (string), topic (string), partition (i32);
//!   its value is an `OffsetCommitValue` (v0-v3 here), or null (a tombstone: the offset was deleted or expired);
//! - key v2 `GroupMetadataKey`: group (string); its value is a `GroupMetadataValue` (v0-v3), or null
//!   (the group was deleted).
//!
//! Key versions 3+ belong to the new (KIP-848) coordinator and share groups; [`decode_key`]
//! returns [`RecordKey::Unknown`] for them so a loader can skip them. Value version 4 (the flexible
//! encoding) is not written here and decodes as [`RecordError::UnsupportedVersion`].
//!
//! Primitive encodings (all big-endian): string = i16 length + UTF-8 (-1 = null where nullable),
//! bytes = i32 length + bytes (-1 = null), array = i32 count.
//!
//! Runs on whichever shard owns the offsets partition; pure functions, no state.

use bytes::{BufMut, Bytes, BytesMut};

/// Key version of an offset commit record that we write (v1; v0 has the same layout).
pub const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
/// Key version of a group metadata record.
pub const GROUP_METADATA_KEY_VERSION: i16 = 2;
/// Value version we write for offset commits (the one with the leader epoch).
pub const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
/// Value version we write for group metadata (the one with static members).
pub const GROUP_METADATA_VALUE_VERSION: i16 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record truncated")]
    Truncated,
    #[error("record has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("unsupported record version {0}")]
    UnsupportedVersion(i16),
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("negative length {0} where a value is required")]
    InvalidLength(i64),
    #[error("string longer than 32767 bytes")]
    StringTooLong,
}

/// What a `__consumer_offsets` record key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    OffsetCommit {
        group: String,
        topic: String,
        partition: i32,
    },
    GroupMetadata {
        group: String,
    },
    /// A record kind this coordinator does not know (key version 3+): skip it when loading.
    Unknown(i16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitValue {
    pub offset: i64,
    /// v3+; -1 when unknown.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// v1 only; -1 when absent.
    pub expire_timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadataValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// v2+; -1 when absent.
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberMetadataValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetadataValue {
    pub member_id: String,
    /// v3+.
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// v1+; v0 records use the session timeout.
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

pub fn encode_key(key: &RecordKey) -> Result<Bytes, RecordError> {
    let mut out = BytesMut::new();
    match key {
        RecordKey::OffsetCommit {
            group,
            topic,
            partition,
        } => {
            out.put_i16(OFFSET_COMMIT_KEY_VERSION);
            put_string(&mut out, group)?;
            put_string(&mut out, topic)?;
            out.put_i32(*partition);
        }
        RecordKey::GroupMetadata { group } => {
            out.put_i16(GROUP_METADATA_KEY_VERSION);
            put_string(&mut out, group)?;
        }
        RecordKey::Unknown(version) => return Err(RecordError::UnsupportedVersion(*version)),
    }
    Ok(out.freeze())
}

pub fn decode_key(bytes: &[u8]) -> Result<RecordKey, RecordError> {
    let mut reader = Reader::new(bytes);
    let version = reader.i16()?;
    let key = match version {
        0 | 1 => RecordKey::OffsetCommit {
            group: reader.string()?,
            topic: reader.string()?,
            partition: reader.i32()?,
        },
        2 => RecordKey::GroupMetadata {
            group: reader.string()?,
        },
        other if other > 2 => return Ok(RecordKey::Unknown(other)),
        other => return Err(RecordError::UnsupportedVersion(other)),
    };
    reader.finish()?;
    Ok(key)
}

pub fn encode_offset_value(value: &OffsetCommitValue, version: i16) -> Result<Bytes, RecordError> {
    if !(0..=3).contains(&version) {
        return Err(RecordError::UnsupportedVersion(version));
    }
    let mut out = BytesMut::new();
    out.put_i16(version);
    out.put_i64(value.offset);
    if version >= 3 {
        out.put_i32(value.leader_epoch);
    }
    put_string(&mut out, &value.metadata)?;
    out.put_i64(value.commit_timestamp_ms);
    if version == 1 {
        out.put_i64(value.expire_timestamp_ms);
    }
    Ok(out.freeze())
}

pub fn decode_offset_value(bytes: &[u8]) -> Result<OffsetCommitValue, RecordError> {
    let mut reader = Reader::new(bytes);
    let version = reader.i16()?;
    if !(0..=3).contains(&version) {
        return Err(RecordError::UnsupportedVersion(version));
    }
    let offset = reader.i64()?;
    let leader_epoch = if version >= 3 { reader.i32()? } else { -1 };
    let metadata = reader.string()?;
    let commit_timestamp_ms = reader.i64()?;
    let expire_timestamp_ms = if version == 1 { reader.i64()? } else { -1 };
    reader.finish()?;
    Ok(OffsetCommitValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
        expire_timestamp_ms,
    })
}

pub fn encode_group_value(value: &GroupMetadataValue, version: i16) -> Result<Bytes, RecordError> {
    if !(0..=3).contains(&version) {
        return Err(RecordError::UnsupportedVersion(version));
    }
    let mut out = BytesMut::new();
    out.put_i16(version);
    put_string(&mut out, &value.protocol_type)?;
    out.put_i32(value.generation);
    put_nullable_string(&mut out, value.protocol.as_deref())?;
    put_nullable_string(&mut out, value.leader.as_deref())?;
    if version >= 2 {
        out.put_i64(value.current_state_timestamp_ms);
    }
    let count = i32::try_from(value.members.len()).map_err(|_| RecordError::StringTooLong)?;
    out.put_i32(count);
    for member in &value.members {
        put_string(&mut out, &member.member_id)?;
        if version >= 3 {
            put_nullable_string(&mut out, member.group_instance_id.as_deref())?;
        }
        put_string(&mut out, &member.client_id)?;
        put_string(&mut out, &member.client_host)?;
        if version >= 1 {
            out.put_i32(member.rebalance_timeout_ms);
        }
        out.put_i32(member.session_timeout_ms);
        put_bytes(&mut out, &member.subscription)?;
        put_bytes(&mut out, &member.assignment)?;
    }
    Ok(out.freeze())
}

pub fn decode_group_value(bytes: &[u8]) -> Result<GroupMetadataValue, RecordError> {
    let mut reader = Reader::new(bytes);
    let version = reader.i16()?;
    if !(0..=3).contains(&version) {
        return Err(RecordError::UnsupportedVersion(version));
    }
    let protocol_type = reader.string()?;
    let generation = reader.i32()?;
    let protocol = reader.nullable_string()?;
    let leader = reader.nullable_string()?;
    let current_state_timestamp_ms = if version >= 2 { reader.i64()? } else { -1 };
    let count = reader.count()?;
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let member_id = reader.string()?;
        let group_instance_id = if version >= 3 {
            reader.nullable_string()?
        } else {
            None
        };
        let client_id = reader.string()?;
        let client_host = reader.string()?;
        let rebalance_timeout_ms = if version >= 1 {
            Some(reader.i32()?)
        } else {
            None
        };
        let session_timeout_ms = reader.i32()?;
        members.push(MemberMetadataValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: rebalance_timeout_ms.unwrap_or(session_timeout_ms),
            session_timeout_ms,
            subscription: reader.bytes()?,
            assignment: reader.bytes()?,
        });
    }
    reader.finish()?;
    Ok(GroupMetadataValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

fn put_string(out: &mut BytesMut, value: &str) -> Result<(), RecordError> {
    let length = i16::try_from(value.len()).map_err(|_| RecordError::StringTooLong)?;
    out.put_i16(length);
    out.put_slice(value.as_bytes());
    Ok(())
}

fn put_nullable_string(out: &mut BytesMut, value: Option<&str>) -> Result<(), RecordError> {
    match value {
        Some(value) => put_string(out, value),
        None => {
            out.put_i16(-1);
            Ok(())
        }
    }
}

fn put_bytes(out: &mut BytesMut, value: &[u8]) -> Result<(), RecordError> {
    let length = i32::try_from(value.len()).map_err(|_| RecordError::StringTooLong)?;
    out.put_i32(length);
    out.put_slice(value);
    Ok(())
}

/// A bounds-checked cursor: every read checks the remaining length first, so a corrupt record is
/// an error, never a panic or an oversized allocation.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8], RecordError> {
        let end = self
            .position
            .checked_add(length)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(RecordError::Truncated)?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn nullable_string(&mut self) -> Result<Option<String>, RecordError> {
        let length = self.i16()?;
        if length < 0 {
            return Ok(None);
        }
        let raw = self.take(length as usize)?;
        let text = std::str::from_utf8(raw).map_err(|_| RecordError::InvalidUtf8)?;
        Ok(Some(text.to_owned()))
    }

    fn string(&mut self) -> Result<String, RecordError> {
        self.nullable_string()?
            .ok_or(RecordError::InvalidLength(-1))
    }

    /// Bytes fields: a null is read as empty (Kafka never writes null subscriptions/assignments).
    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let length = self.i32()?;
        if length < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(length as usize)?))
    }

    /// An array count, bounded by the bytes left (every element takes at least one byte), so a
    /// corrupt count cannot make us allocate more than the record's size.
    fn count(&mut self) -> Result<usize, RecordError> {
        let count = self.i32()?;
        if count < 0 {
            return Err(RecordError::InvalidLength(count.into()));
        }
        let count = count as usize;
        if count > self.bytes.len() - self.position {
            return Err(RecordError::Truncated);
        }
        Ok(count)
    }

    fn finish(&self) -> Result<(), RecordError> {
        match self.bytes.len() - self.position {
            0 => Ok(()),
            extra => Err(RecordError::TrailingBytes(extra)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_group() -> GroupMetadataValue {
        GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            current_state_timestamp_ms: 1_700_000_000_000,
            members: vec![
                MemberMetadataValue {
                    member_id: "m-1".into(),
                    group_instance_id: Some("instance-a".into()),
                    client_id: "client".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 45_000,
                    subscription: Bytes::from_static(b"sub-1"),
                    assignment: Bytes::from_static(b"assign-1"),
                },
                MemberMetadataValue {
                    member_id: "m-2".into(),
                    group_instance_id: None,
                    client_id: "client".into(),
                    client_host: "/127.0.0.2".into(),
                    rebalance_timeout_ms: 60_000,
                    session_timeout_ms: 10_000,
                    subscription: Bytes::new(),
                    assignment: Bytes::new(),
                },
            ],
        }
    }

    #[test]
    fn keys_round_trip_with_exact_bytes() {
        let key = RecordKey::OffsetCommit {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
        };
        let bytes = encode_key(&key).unwrap();
        assert_eq!(&bytes[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3]);
        assert_eq!(decode_key(&bytes).unwrap(), key);
        // Version 0 has the same layout.
        let mut v0 = bytes.to_vec();
        v0[1] = 0;
        assert_eq!(decode_key(&v0).unwrap(), key);

        let key = RecordKey::GroupMetadata {
            group: "grp".into(),
        };
        let bytes = encode_key(&key).unwrap();
        assert_eq!(&bytes[..], &[0, 2, 0, 3, b'g', b'r', b'p']);
        assert_eq!(decode_key(&bytes).unwrap(), key);

        assert_eq!(decode_key(&[0, 3, 1, 2]).unwrap(), RecordKey::Unknown(3));
        assert_eq!(
            decode_key(&[0xff, 0xff]),
            Err(RecordError::UnsupportedVersion(-1))
        );
    }

    #[test]
    fn offset_values_round_trip_every_version() {
        let value = OffsetCommitValue {
            offset: 42,
            leader_epoch: 5,
            metadata: "meta".into(),
            commit_timestamp_ms: 1000,
            expire_timestamp_ms: 2000,
        };
        for version in 0..=3 {
            let bytes = encode_offset_value(&value, version).unwrap();
            let decoded = decode_offset_value(&bytes).unwrap();
            assert_eq!(decoded.offset, 42);
            assert_eq!(decoded.metadata, "meta");
            assert_eq!(decoded.commit_timestamp_ms, 1000);
            let epoch = if version >= 3 { 5 } else { -1 };
            assert_eq!(decoded.leader_epoch, epoch, "version {version}");
            let expire = if version == 1 { 2000 } else { -1 };
            assert_eq!(decoded.expire_timestamp_ms, expire, "version {version}");
        }
        let v3 = encode_offset_value(&value, 3).unwrap();
        // version + offset + epoch + "meta" + commit timestamp
        assert_eq!(v3.len(), 2 + 8 + 4 + 2 + 4 + 8);
        assert_eq!(
            encode_offset_value(&value, 4),
            Err(RecordError::UnsupportedVersion(4))
        );
    }

    #[test]
    fn group_values_round_trip_every_version() {
        let value = sample_group();
        let bytes = encode_group_value(&value, 3).unwrap();
        assert_eq!(decode_group_value(&bytes).unwrap(), value);
        for version in 0..=2 {
            let decoded =
                decode_group_value(&encode_group_value(&value, version).unwrap()).unwrap();
            assert_eq!(decoded.members[0].group_instance_id, None);
            assert_eq!(decoded.members[0].assignment, value.members[0].assignment);
            assert_eq!(
                decoded.members[1].subscription,
                value.members[1].subscription
            );
            let rebalance = if version >= 1 { 300_000 } else { 45_000 };
            assert_eq!(decoded.members[0].rebalance_timeout_ms, rebalance);
            let state_ts = if version >= 2 { 1_700_000_000_000 } else { -1 };
            assert_eq!(decoded.current_state_timestamp_ms, state_ts);
        }
        let empty = GroupMetadataValue {
            protocol_type: String::new(),
            generation: 1,
            protocol: None,
            leader: None,
            current_state_timestamp_ms: 5,
            members: Vec::new(),
        };
        let bytes = encode_group_value(&empty, 3).unwrap();
        assert_eq!(decode_group_value(&bytes).unwrap(), empty);
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let bytes = encode_group_value(&sample_group(), 3).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode_group_value(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.to_vec();
        extra.push(0);
        assert_eq!(
            decode_group_value(&extra),
            Err(RecordError::TrailingBytes(1))
        );
        // A member count far beyond the record's size is rejected before allocating.
        let mut huge = BytesMut::new();
        huge.put_i16(3);
        put_string(&mut huge, "consumer").unwrap();
        huge.put_i32(1);
        huge.put_i16(-1);
        huge.put_i16(-1);
        huge.put_i64(0);
        huge.put_i32(i32::MAX);
        assert_eq!(decode_group_value(&huge), Err(RecordError::Truncated));
        let offset = encode_offset_value(
            &OffsetCommitValue {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 0,
                expire_timestamp_ms: -1,
            },
            3,
        )
        .unwrap();
        for cut in 0..offset.len() {
            assert!(decode_offset_value(&offset[..cut]).is_err());
        }
        assert_eq!(
            decode_offset_value(&[
                0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0
            ]),
            Err(RecordError::InvalidUtf8)
        );
    }
}
