//! The API version table we advertise in ApiVersions and enforce on every request.
//!
//! Our own table, not the crate's `valid_versions()`: an API is listed only once its handler
//! works, with the ranges in `shared/kafka-compat.md` as the targets.

use kafka_protocol::messages::ApiKey;
use std::ops::RangeInclusive;

/// (API, min version, max version) for every API the broker serves.
pub const ADVERTISED: &[(ApiKey, i16, i16)] = &[
    // Produce: advertised from 0 (older librdkafka turns compression off without v0) but only
    // record batch v2 (v3+) decodes; v0-2 requests get their connection closed.
    (ApiKey::Produce, 0, 12),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::FindCoordinator, 0, 5),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
];

/// The advertised range for `api_key`, or `None` if we do not serve it.
pub fn advertised(api_key: ApiKey) -> Option<RangeInclusive<i16>> {
    ADVERTISED
        .iter()
        .find(|(key, _, _)| *key == api_key)
        .map(|(_, min, max)| *min..=*max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_range_is_decodable_by_the_crate() {
        for (key, min, max) in ADVERTISED {
            let crate_range = key.valid_versions();
            // Produce below v3 is advertised on purpose (see above) and refused at decode.
            let min = if *key == ApiKey::Produce { 3 } else { *min };
            assert!(crate_range.min <= min && *max <= crate_range.max, "{key:?}");
        }
    }
}
