//! Scenario tests of the group state machine: every call gets an explicit time, and answers are
//! read from the returned effects.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};

use super::records::{decode_group_value, encode_group_value, GROUP_METADATA_VALUE_VERSION};
use super::*;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

fn limits() -> GroupLimits {
    GroupLimits {
        initial_rebalance_delay_ms: 0,
        ..GroupLimits::default()
    }
}

fn protocols(names: &[&str]) -> Vec<Protocol> {
    names
        .iter()
        .map(|name| Protocol {
            name: (*name).to_owned(),
            metadata: Bytes::from(format!("meta-{name}")),
        })
        .collect()
}

fn join_request(member_id: &str, names: &[&str]) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols: protocols(names),
        require_known_member_id: true,
    }
}

fn static_request(instance: &str) -> JoinRequest {
    JoinRequest {
        group_instance_id: Some(instance.into()),
        ..join_request("", &["range"])
    }
}

fn joins(effects: &[Effect]) -> HashMap<RequestToken, JoinResponse> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Join { token, response } => Some((*token, response.clone())),
            _ => None,
        })
        .collect()
}

fn syncs(effects: &[Effect]) -> HashMap<RequestToken, SyncResponse> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Sync { token, response } => Some((*token, response.clone())),
            _ => None,
        })
        .collect()
}

/// Completes every `StoreGroup` in `effects` with `result` (recursively, in order) and returns
/// the other effects followed by what the completions produced.
fn complete_stores(
    coordinator: &mut GroupCoordinator,
    effects: Vec<Effect>,
    result: Result<(), GroupError>,
    now_ms: i64,
) -> Vec<Effect> {
    let mut out = Vec::new();
    let mut queue: std::collections::VecDeque<Effect> = effects.into();
    while let Some(effect) = queue.pop_front() {
        match effect {
            Effect::StoreGroup {
                group_id, purpose, ..
            } => queue.extend(coordinator.store_completed(&group_id, &purpose, result, now_ms)),
            other => out.push(other),
        }
    }
    out
}

/// The purposes of the `StoreGroup` effects in `effects`.
fn stores(effects: &[Effect]) -> Vec<StorePurpose> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::StoreGroup { purpose, .. } => Some(purpose.clone()),
            _ => None,
        })
        .collect()
}

fn state(coordinator: &GroupCoordinator) -> GroupState {
    coordinator.describe("g").map(|group| group.state).unwrap()
}

/// First join (KIP-394): MEMBER_ID_REQUIRED with a generated id, which is returned.
fn member_id_for(coordinator: &mut GroupCoordinator, token: RequestToken, now_ms: i64) -> String {
    let effects = coordinator.join(token, join_request("", &["range"]), now_ms);
    let response = &joins(&effects)[&token];
    assert_eq!(response.error, Some(GroupError::MemberIdRequired));
    assert_eq!(error_code(response.error), 79);
    assert!(response.member_id.starts_with("client-"));
    response.member_id.clone()
}

fn heartbeat(
    coordinator: &mut GroupCoordinator,
    member_id: &str,
    generation_id: i32,
    now_ms: i64,
) -> Result<(), GroupError> {
    let request = HeartbeatRequest {
        group_id: "g".into(),
        generation_id,
        member_id: member_id.into(),
        group_instance_id: None,
    };
    coordinator.heartbeat(&request, now_ms)
}

fn sync_request(member_id: &str, generation_id: i32, assignments: &[(&str, &[u8])]) -> SyncRequest {
    SyncRequest {
        group_id: "g".into(),
        generation_id,
        member_id: member_id.into(),
        group_instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        assignments: assignments
            .iter()
            .map(|(member, bytes)| ((*member).to_owned(), Bytes::copy_from_slice(bytes)))
            .collect(),
    }
}

/// Two members a (leader) and b in generation 1, synced with assignments "pa"/"pb", at t=1000.
fn stable_group() -> (GroupCoordinator, String, String) {
    let mut coordinator = GroupCoordinator::new(GroupLimits {
        initial_rebalance_delay_ms: 500,
        ..limits()
    });
    let a = member_id_for(&mut coordinator, 1, 0);
    let effects = coordinator.join(2, join_request(&a, &["range"]), 0);
    assert!(joins(&effects).is_empty(), "waits for the initial delay");
    let b = member_id_for(&mut coordinator, 3, 10);
    let effects = coordinator.join(4, join_request(&b, &["range"]), 20);
    assert!(joins(&effects).is_empty(), "the delay was extended by b");
    assert_eq!(state(&coordinator), GroupState::PreparingRebalance);
    let effects = coordinator.tick(520);
    let answered = joins(&effects);
    assert_eq!(answered.len(), 2);
    let sync_b = coordinator.sync(6, sync_request(&b, 1, &[]), 600);
    assert!(sync_b.is_empty(), "followers wait for the leader");
    let assignments: &[(&str, &[u8])] = &[(&a, b"pa"), (&b, b"pb")];
    let effects = coordinator.sync(5, sync_request(&a, 1, assignments), 1000);
    assert!(
        syncs(&effects).is_empty(),
        "answered once the assignment is durable"
    );
    let effects = complete_stores(&mut coordinator, effects, Ok(()), 1000);
    assert_eq!(syncs(&effects).len(), 2);
    assert_eq!(state(&coordinator), GroupState::Stable);
    (coordinator, a, b)
}

#[test]
fn two_members_share_a_generation_and_get_the_leaders_assignment() {
    let mut coordinator = GroupCoordinator::new(GroupLimits {
        initial_rebalance_delay_ms: 500,
        ..limits()
    });
    let a = member_id_for(&mut coordinator, 1, 0);
    assert!(coordinator
        .join(2, join_request(&a, &["range"]), 0)
        .is_empty());
    let b = member_id_for(&mut coordinator, 3, 10);
    assert_ne!(a, b);
    assert!(coordinator
        .join(4, join_request(&b, &["range"]), 20)
        .is_empty());
    assert!(
        coordinator.tick(519).is_empty(),
        "still inside the extended delay"
    );

    let answered = joins(&coordinator.tick(520));
    let (leader, follower) = (&answered[&2], &answered[&4]);
    assert_eq!(leader.error, None);
    assert_eq!(leader.generation_id, 1);
    assert_eq!(follower.generation_id, 1);
    assert_eq!(leader.leader, a);
    assert_eq!(follower.leader, a);
    assert_eq!(leader.protocol_name.as_deref(), Some("range"));
    assert_eq!(leader.protocol_type.as_deref(), Some("consumer"));
    let listed: Vec<&str> = leader
        .members
        .iter()
        .map(|m| m.member_id.as_str())
        .collect();
    assert_eq!(listed, vec![a.as_str(), b.as_str()]);
    assert_eq!(
        leader.members[1].metadata,
        Bytes::from_static(b"meta-range")
    );
    assert!(follower.members.is_empty());
    assert_eq!(state(&coordinator), GroupState::CompletingRebalance);
    assert_eq!(heartbeat(&mut coordinator, &b, 1, 550), Ok(()));

    assert!(coordinator
        .sync(6, sync_request(&b, 1, &[]), 600)
        .is_empty());
    // The leader gives b nothing: b gets zero-length bytes, not an error.
    let effects = coordinator.sync(5, sync_request(&a, 1, &[(&a, b"pa")]), 700);
    assert_eq!(
        stores(&effects),
        vec![StorePurpose::Assignment { generation_id: 1 }]
    );
    let Effect::StoreGroup { record, .. } = &effects[0] else {
        panic!("the assignment is written first: {effects:?}");
    };
    assert_eq!(record.members[0].assignment, Bytes::from_static(b"pa"));
    assert!(record.members[1].assignment.is_empty());
    assert_eq!(
        state(&coordinator),
        GroupState::CompletingRebalance,
        "not stable before the write"
    );
    let effects = complete_stores(&mut coordinator, effects, Ok(()), 700);
    let synced = syncs(&effects);
    assert_eq!(synced[&5].assignment, Bytes::from_static(b"pa"));
    assert_eq!(synced[&6].error, None);
    assert!(synced[&6].assignment.is_empty());
    assert_eq!(state(&coordinator), GroupState::Stable);

    // A late sync in Stable is answered at once with the stored assignment.
    let again = syncs(&coordinator.sync(7, sync_request(&a, 1, &[]), 800));
    assert_eq!(again[&7].assignment, Bytes::from_static(b"pa"));
    let record = coordinator.group_record("g").unwrap();
    assert_eq!(record.generation, 1);
    assert_eq!(record.leader.as_deref(), Some(a.as_str()));
}

#[test]
fn a_third_member_triggers_a_rebalance() {
    let (mut coordinator, a, b) = stable_group();
    let c = member_id_for(&mut coordinator, 10, 2000);
    assert_eq!(
        state(&coordinator),
        GroupState::Stable,
        "a pending id alone changes nothing"
    );
    assert!(joins(&coordinator.join(11, join_request(&c, &["range"]), 2000)).is_empty());
    assert_eq!(state(&coordinator), GroupState::PreparingRebalance);
    assert_eq!(
        heartbeat(&mut coordinator, &a, 1, 2100),
        Err(GroupError::RebalanceInProgress)
    );
    assert_eq!(GroupError::RebalanceInProgress.code(), 27);
    // Commits of the current generation are still accepted while members rejoin.
    let commit = CommitPartition {
        topic: "t".into(),
        partition: 0,
        offset: 5,
        leader_epoch: -1,
        metadata: None,
    };
    let committed = coordinator.commit_offsets("g", 1, &a, None, &[commit], 2100);
    assert_eq!(committed, Ok(vec![None]));

    assert!(joins(&coordinator.join(12, join_request(&a, &["range"]), 2200)).is_empty());
    let answered = joins(&coordinator.join(13, join_request(&b, &["range"]), 2300));
    assert_eq!(answered.len(), 3);
    for response in answered.values() {
        assert_eq!(response.generation_id, 2);
        assert_eq!(response.leader, a);
    }
    assert_eq!(answered[&12].members.len(), 3);
    assert_eq!(
        heartbeat(&mut coordinator, &b, 1, 2400),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(GroupError::IllegalGeneration.code(), 22);
    assert_eq!(heartbeat(&mut coordinator, &b, 2, 2400), Ok(()));
}

#[test]
fn a_silent_member_is_removed_after_its_session_timeout() {
    let (mut coordinator, a, b) = stable_group();
    // b's session started at its sync (t=600); a keeps heartbeating.
    assert_eq!(heartbeat(&mut coordinator, &a, 1, 8000), Ok(()));
    assert!(coordinator.tick(10_599).is_empty());
    assert_eq!(state(&coordinator), GroupState::Stable);
    coordinator.tick(10_600);
    assert_eq!(state(&coordinator), GroupState::PreparingRebalance);
    assert_eq!(
        heartbeat(&mut coordinator, &b, 1, 10_700),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(GroupError::UnknownMemberId.code(), 25);
    assert_eq!(
        heartbeat(&mut coordinator, &a, 1, 10_700),
        Err(GroupError::RebalanceInProgress)
    );
    let answered = joins(&coordinator.join(20, join_request(&a, &["range"]), 10_800));
    assert_eq!(answered[&20].generation_id, 2);
    assert_eq!(answered[&20].members.len(), 1);
}

#[test]
fn a_member_leaving_triggers_an_immediate_rebalance() {
    let (mut coordinator, a, b) = stable_group();
    let leaving = [
        LeaveMember {
            member_id: b.clone(),
            group_instance_id: None,
        },
        LeaveMember {
            member_id: "nobody".into(),
            group_instance_id: None,
        },
    ];
    let (response, _) = coordinator.leave("g", &leaving, 2000);
    assert_eq!(response.error, None);
    assert_eq!(response.members[0].2, None);
    assert_eq!(response.members[1].2, Some(GroupError::UnknownMemberId));
    assert_eq!(state(&coordinator), GroupState::PreparingRebalance);
    // a is the only member left: its rejoin completes the rebalance without waiting.
    let answered = joins(&coordinator.join(30, join_request(&a, &["range"]), 2100));
    assert_eq!(answered[&30].generation_id, 2);
    assert_eq!(answered[&30].members.len(), 1);

    // The last member leaving empties the group.
    let only_a = [LeaveMember {
        member_id: a,
        group_instance_id: None,
    }];
    let (_, effects) = coordinator.leave("g", &only_a, 2200);
    assert_eq!(stores(&effects), vec![StorePurpose::Update]);
    assert_eq!(state(&coordinator), GroupState::Empty);
}

/// Two static members "ia" (leader) and "ib", stable in generation 1 with "pa"/"pb".
fn stable_static_group() -> (GroupCoordinator, String, String) {
    let mut coordinator = GroupCoordinator::new(limits());
    // Static members get no MEMBER_ID_REQUIRED round trip.
    let first = joins(&coordinator.join(1, static_request("ia"), 0));
    let a = first[&1].member_id.clone();
    assert!(a.starts_with("ia-"));
    assert_eq!(first[&1].generation_id, 1, "alone and no initial delay");
    let effects = coordinator.join(2, static_request("ib"), 10);
    assert!(joins(&effects).is_empty(), "a must rejoin");
    let a_request = JoinRequest {
        member_id: a.clone(),
        ..static_request("ia")
    };
    let answered = joins(&coordinator.join(3, a_request, 20));
    let b = answered[&2].member_id.clone();
    assert_eq!(answered[&3].generation_id, 2);
    let sync_b = SyncRequest {
        group_instance_id: Some("ib".into()),
        ..sync_request(&b, 2, &[])
    };
    assert!(coordinator.sync(4, sync_b, 30).is_empty());
    let assignments: &[(&str, &[u8])] = &[(&a, b"pa"), (&b, b"pb")];
    let sync_a = SyncRequest {
        group_instance_id: Some("ia".into()),
        ..sync_request(&a, 2, assignments)
    };
    let effects = coordinator.sync(5, sync_a, 40);
    assert_eq!(
        syncs(&complete_stores(&mut coordinator, effects, Ok(()), 40)).len(),
        2
    );
    (coordinator, a, b)
}

#[test]
fn a_static_member_rejoining_keeps_its_assignment_without_a_rebalance() {
    let (mut coordinator, a, old_b) = stable_static_group();
    // ib restarts: no member id, same instance id and protocols.
    let effects = coordinator.join(10, static_request("ib"), 1000);
    assert!(
        joins(&effects).is_empty(),
        "answered once the new id is durable"
    );
    let [StorePurpose::StaticRejoin { member_id }] = &stores(&effects)[..] else {
        panic!("the new member id is written: {effects:?}");
    };
    let effects = complete_stores(&mut coordinator, effects.clone(), Ok(()), 1000);
    let response = &joins(&effects)[&10];
    assert_eq!(&response.member_id, member_id);
    assert_eq!(response.error, None);
    assert_eq!(response.generation_id, 2, "no new generation");
    assert_eq!(response.leader, a);
    assert!(!response.skip_assignment);
    let new_b = response.member_id.clone();
    assert_ne!(new_b, old_b);
    assert_eq!(state(&coordinator), GroupState::Stable);

    let sync_b = SyncRequest {
        group_instance_id: Some("ib".into()),
        ..sync_request(&new_b, 2, &[])
    };
    let synced = syncs(&coordinator.sync(11, sync_b, 1100));
    assert_eq!(synced[&11].assignment, Bytes::from_static(b"pb"));
    // The old incarnation is fenced.
    let old = HeartbeatRequest {
        group_id: "g".into(),
        generation_id: 2,
        member_id: old_b,
        group_instance_id: Some("ib".into()),
    };
    assert_eq!(
        coordinator.heartbeat(&old, 1200),
        Err(GroupError::FencedInstanceId)
    );
    assert_eq!(GroupError::FencedInstanceId.code(), 82);

    // The static leader rejoining keeps leadership and is told not to reassign (KIP-814).
    let effects = coordinator.join(12, static_request("ia"), 1300);
    let response = &joins(&complete_stores(&mut coordinator, effects, Ok(()), 1300))[&12];
    assert!(response.skip_assignment);
    assert_eq!(response.leader, response.member_id);
    assert_eq!(response.members.len(), 2);
    assert_eq!(state(&coordinator), GroupState::Stable);
}

#[test]
fn a_static_member_with_changed_protocols_triggers_a_rebalance() {
    let (mut coordinator, _, _) = stable_static_group();
    let changed = JoinRequest {
        protocols: protocols(&["range", "roundrobin"]),
        ..static_request("ib")
    };
    assert!(joins(&coordinator.join(10, changed, 1000)).is_empty());
    assert_eq!(state(&coordinator), GroupState::PreparingRebalance);
}

#[test]
fn stale_generation_and_unknown_member_commits_are_rejected() {
    let (mut coordinator, a, b) = stable_group();
    let commit = |offset: i64, metadata: &str| CommitPartition {
        topic: "t".into(),
        partition: 1,
        offset,
        leader_epoch: 4,
        metadata: Some(metadata.into()),
    };
    let accepted = coordinator.commit_offsets("g", 1, &a, None, &[commit(10, "m1")], 1100);
    assert_eq!(accepted, Ok(vec![None]));
    // Rebalance to generation 2 (b leaves, a rejoins).
    let leaving = [LeaveMember {
        member_id: b.clone(),
        group_instance_id: None,
    }];
    coordinator.leave("g", &leaving, 1200);
    joins(&coordinator.join(40, join_request(&a, &["range"]), 1300));
    // Generation 2 is completing: commits wait for the assignment.
    let completing = coordinator.commit_offsets("g", 2, &a, None, &[commit(11, "x")], 1350);
    assert_eq!(completing, Err(GroupError::RebalanceInProgress));
    let stale = coordinator.commit_offsets("g", 1, &a, None, &[commit(12, "x")], 1400);
    assert_eq!(stale, Err(GroupError::IllegalGeneration));
    let unknown = coordinator.commit_offsets("g", 2, &b, None, &[commit(13, "x")], 1400);
    assert_eq!(unknown, Err(GroupError::UnknownMemberId));
    let admin = coordinator.commit_offsets("g", -1, "", None, &[commit(14, "x")], 1400);
    assert_eq!(
        admin,
        Err(GroupError::UnknownMemberId),
        "the group is not empty"
    );
    let missing_group = coordinator.commit_offsets("other", 3, "m", None, &[commit(1, "")], 1400);
    assert_eq!(missing_group, Err(GroupError::IllegalGeneration));

    let fetched = coordinator.fetch_offsets("g", None);
    assert_eq!(fetched.len(), 1);
    assert_eq!((fetched[0].offset, fetched[0].leader_epoch), (10, 4));
    assert_eq!(fetched[0].metadata, "m1");
    let wanted = [("t".to_owned(), 1), ("t".to_owned(), 2)];
    let fetched = coordinator.fetch_offsets("g", Some(&wanted));
    assert_eq!(fetched[1].offset, OFFSET_NONE);
    assert_eq!(
        coordinator.fetch_offsets("nope", Some(&wanted))[0].offset,
        OFFSET_NONE
    );
    let record = coordinator.committed("g", "t", 1).unwrap().record();
    assert_eq!((record.offset, record.metadata.as_str()), (10, "m1"));
}

#[test]
fn simple_consumers_commit_to_empty_groups() {
    let mut coordinator = GroupCoordinator::new(limits());
    let partition = CommitPartition {
        topic: "t".into(),
        partition: 0,
        offset: 7,
        leader_epoch: -1,
        metadata: Some("x".repeat(4097)),
    };
    let results =
        coordinator.commit_offsets("solo", -1, "", None, std::slice::from_ref(&partition), 0);
    assert_eq!(results, Ok(vec![Some(GroupError::OffsetMetadataTooLarge)]));
    let ok = CommitPartition {
        metadata: None,
        ..partition
    };
    assert_eq!(
        coordinator.commit_offsets("solo", -1, "", None, &[ok], 0),
        Ok(vec![None])
    );
    let fetched = coordinator.fetch_offsets("solo", None);
    assert_eq!((fetched[0].offset, fetched[0].metadata.as_str()), (7, ""));
    assert_eq!(
        coordinator.delete_group("solo"),
        Ok(vec![("t".to_owned(), 0)])
    );
    assert!(coordinator.fetch_offsets("solo", None).is_empty());
}

#[test]
fn inconsistent_protocols_are_rejected() {
    let mut coordinator = GroupCoordinator::new(limits());
    let a = member_id_for(&mut coordinator, 1, 0);
    joins(&coordinator.join(2, join_request(&a, &["range"]), 0));
    let b = member_id_for(&mut coordinator, 3, 0);
    let response = &joins(&coordinator.join(4, join_request(&b, &["roundrobin"]), 0))[&4];
    assert_eq!(response.error, Some(GroupError::InconsistentGroupProtocol));
    assert_eq!(error_code(response.error), 23);
    let connect = JoinRequest {
        protocol_type: "connect".into(),
        ..join_request(&b, &["range"])
    };
    let response = &joins(&coordinator.join(5, connect, 0))[&5];
    assert_eq!(response.error, Some(GroupError::InconsistentGroupProtocol));
    let none = join_request("", &[]);
    let response = &joins(&coordinator.join(6, none, 0))[&6];
    assert_eq!(response.error, Some(GroupError::InconsistentGroupProtocol));
    // The group is untouched by the rejected joins.
    assert_eq!(coordinator.describe("g").unwrap().members.len(), 1);
}

#[test]
fn the_protocol_is_chosen_by_vote_among_common_ones() {
    let mut coordinator = GroupCoordinator::new(GroupLimits {
        initial_rebalance_delay_ms: 100,
        ..limits()
    });
    let offers: [&[&str]; 3] = [
        &["range", "roundrobin", "sticky"],
        &["roundrobin", "range"],
        &["sticky", "roundrobin", "range"],
    ];
    for (index, names) in offers.iter().enumerate() {
        let token = index as u64 * 2;
        let member = member_id_for(&mut coordinator, token, 0);
        coordinator.join(token + 1, join_request(&member, names), 0);
    }
    let answered = joins(&coordinator.tick(100));
    assert_eq!(answered.len(), 3);
    // Common: range, roundrobin. Votes: range 1, roundrobin 2 ("sticky" is not common).
    assert_eq!(answered[&1].protocol_name.as_deref(), Some("roundrobin"));
    assert_eq!(
        answered[&1].members[1].metadata,
        Bytes::from_static(b"meta-roundrobin")
    );
}

#[test]
fn members_that_do_not_rejoin_are_dropped_at_the_rebalance_timeout() {
    let (mut coordinator, a, b) = stable_group();
    joins(&coordinator.join(50, join_request(&a, &["range"]), 2000));
    assert_eq!(
        state(&coordinator),
        GroupState::PreparingRebalance,
        "leader rejoin rebalances"
    );
    // b keeps heartbeating (told to rejoin) but never does.
    for now_ms in [20_000, 29_000] {
        let result = heartbeat(&mut coordinator, &b, 1, now_ms);
        assert_eq!(result, Err(GroupError::RebalanceInProgress));
    }
    assert!(coordinator.tick(31_999).is_empty());
    let answered = joins(&coordinator.tick(32_000));
    assert_eq!(answered[&50].generation_id, 2);
    assert_eq!(answered[&50].members.len(), 1);
    assert_eq!(
        heartbeat(&mut coordinator, &b, 2, 32_100),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn members_that_never_sync_are_dropped_at_the_sync_deadline() {
    let mut coordinator = GroupCoordinator::new(GroupLimits {
        initial_rebalance_delay_ms: 100,
        ..limits()
    });
    let a = member_id_for(&mut coordinator, 1, 0);
    coordinator.join(2, join_request(&a, &["range"]), 0);
    let b = member_id_for(&mut coordinator, 3, 0);
    coordinator.join(4, join_request(&b, &["range"]), 0);
    assert_eq!(joins(&coordinator.tick(100)).len(), 2);
    // b syncs and waits; the leader a heartbeats but never sends its assignment.
    assert!(coordinator
        .sync(5, sync_request(&b, 1, &[]), 200)
        .is_empty());
    for now_ms in [9_000, 18_000, 27_000] {
        assert_eq!(heartbeat(&mut coordinator, &a, 1, now_ms), Ok(()));
    }
    assert!(coordinator
        .tick(100 + i64::from(REBALANCE_MS) - 1)
        .is_empty());
    let effects = coordinator.tick(100 + i64::from(REBALANCE_MS));
    // b's parked sync is answered with REBALANCE_IN_PROGRESS: a was dropped.
    let synced = syncs(&effects);
    assert_eq!(synced[&5].error, Some(GroupError::RebalanceInProgress));
    assert_eq!(
        heartbeat(&mut coordinator, &a, 1, 30_200),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(state(&coordinator), GroupState::PreparingRebalance);
}

#[test]
fn group_size_and_metadata_are_bounded() {
    let mut coordinator = GroupCoordinator::new(GroupLimits {
        members_per_group_max: 2,
        groups_max: 2,
        member_metadata_bytes_max: 64,
        ..limits()
    });
    member_id_for(&mut coordinator, 1, 0);
    member_id_for(&mut coordinator, 2, 0);
    let third = &joins(&coordinator.join(3, join_request("", &["range"]), 0))[&3];
    assert_eq!(third.error, Some(GroupError::GroupMaxSizeReached));
    assert_eq!(error_code(third.error), 81);

    let mut big = join_request("", &["range"]);
    big.group_id = "big".into();
    big.protocols[0].metadata = Bytes::from(vec![0u8; 65]);
    let response = &joins(&coordinator.join(4, big, 0))[&4];
    assert_eq!(response.error, Some(GroupError::InvalidRequest));

    let mut other = join_request("", &["range"]);
    other.group_id = "second".into();
    member_id_for_group(&mut coordinator, other.clone());
    other.group_id = "third".into();
    let response = &joins(&coordinator.join(6, other, 0))[&6];
    assert_eq!(response.error, Some(GroupError::CoordinatorNotAvailable));

    let mut bad_timeout = join_request("", &["range"]);
    bad_timeout.session_timeout_ms = 1;
    let response = &joins(&coordinator.join(7, bad_timeout, 0))[&7];
    assert_eq!(response.error, Some(GroupError::InvalidSessionTimeout));
    let mut no_group = join_request("", &["range"]);
    no_group.group_id = String::new();
    let response = &joins(&coordinator.join(8, no_group, 0))[&8];
    assert_eq!(response.error, Some(GroupError::InvalidGroupId));

    // Unclaimed member ids expire, and a group left with nothing is dropped.
    coordinator.tick(i64::from(SESSION_MS));
    assert!(coordinator.describe("g").is_none());
    assert!(coordinator.describe("second").is_none());
}

fn member_id_for_group(coordinator: &mut GroupCoordinator, request: JoinRequest) -> String {
    let response = &joins(&coordinator.join(99, request, 0))[&99];
    assert_eq!(response.error, Some(GroupError::MemberIdRequired));
    response.member_id.clone()
}

#[test]
fn joins_before_kip_394_become_members_at_once() {
    let mut coordinator = GroupCoordinator::new(limits());
    let old_client = JoinRequest {
        require_known_member_id: false,
        ..join_request("", &["range"])
    };
    let response = &joins(&coordinator.join(1, old_client, 0))[&1];
    assert_eq!(response.error, None);
    assert_eq!(response.generation_id, 1);
    assert_eq!(response.leader, response.member_id);
    let unknown = &joins(&coordinator.join(2, join_request("made-up", &["range"]), 0))[&2];
    assert_eq!(unknown.error, Some(GroupError::UnknownMemberId));
}

/// ConsumerProtocolSubscription v0 with the given topics and no user data.
fn subscription(topics: &[&str]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(0);
    out.put_i32(topics.len() as i32);
    for topic in topics {
        out.put_i16(topic.len() as i16);
        out.put_slice(topic.as_bytes());
    }
    out.put_i32(-1);
    out.freeze()
}

#[test]
fn offsets_of_subscribed_topics_cannot_be_deleted_while_the_group_is_active() {
    let mut coordinator = GroupCoordinator::new(limits());
    let mut request = join_request("", &["range"]);
    request.require_known_member_id = false;
    request.protocols[0].metadata = subscription(&["t"]);
    let a = joins(&coordinator.join(1, request, 0))[&1]
        .member_id
        .clone();
    let effects = coordinator.sync(2, sync_request(&a, 1, &[]), 0);
    complete_stores(&mut coordinator, effects, Ok(()), 0);
    let commits: Vec<CommitPartition> = ["t", "u"]
        .iter()
        .map(|topic| CommitPartition {
            topic: (*topic).into(),
            partition: 0,
            offset: 1,
            leader_epoch: -1,
            metadata: None,
        })
        .collect();
    assert_eq!(
        coordinator.commit_offsets("g", 1, &a, None, &commits, 0),
        Ok(vec![None, None])
    );
    let both = [("t".to_owned(), 0), ("u".to_owned(), 0)];
    let results = coordinator.delete_offsets("g", &both);
    assert_eq!(
        results,
        Ok(vec![Some(GroupError::GroupSubscribedToTopic), None])
    );
    assert_eq!(coordinator.fetch_offsets("g", None).len(), 1);
    assert_eq!(
        coordinator.delete_offsets("none", &both),
        Err(GroupError::GroupIdNotFound)
    );
    assert_eq!(
        coordinator.delete_group("g"),
        Err(GroupError::NonEmptyGroup)
    );
    let listed = coordinator.list(&[GroupState::Stable]);
    assert_eq!(listed.len(), 1);
    assert!(coordinator.list(&[GroupState::Empty]).is_empty());
}

#[test]
fn group_records_rebuild_the_group() {
    let (coordinator, a, b) = stable_group();
    let record = coordinator.group_record("g").unwrap();
    let bytes = encode_group_value(&record, GROUP_METADATA_VALUE_VERSION).unwrap();
    let decoded = decode_group_value(&bytes).unwrap();

    let mut restored = GroupCoordinator::new(limits());
    restored.restore_group("g", &decoded, 50_000).unwrap();
    let offset = coordinator
        .committed("g", "t", 0)
        .map(CommittedOffset::record);
    assert!(offset.is_none());
    let stored = super::records::OffsetCommitValue {
        offset: 9,
        leader_epoch: 1,
        metadata: "m".into(),
        commit_timestamp_ms: 10,
        expire_timestamp_ms: -1,
    };
    restored
        .restore_offset("g", "t", 0, Some(&stored), 50_000)
        .unwrap();
    let description = restored.describe("g").unwrap();
    assert_eq!(description.state, GroupState::Stable);
    assert_eq!(description.members.len(), 2);
    assert_eq!(description.members[1].assignment, Bytes::from_static(b"pb"));
    // Members resume in the stored generation; b's stored assignment is served.
    assert_eq!(heartbeat(&mut restored, &a, 1, 50_100), Ok(()));
    let synced = syncs(&restored.sync(1, sync_request(&b, 1, &[]), 50_100));
    assert_eq!(synced[&1].assignment, Bytes::from_static(b"pb"));
    assert_eq!(restored.fetch_offsets("g", None)[0].offset, 9);
    restored.restore_offset("g", "t", 0, None, 50_200).unwrap();
    assert!(restored.fetch_offsets("g", None).is_empty());
}

#[test]
fn a_new_static_incarnation_fences_the_old_ones_parked_join() {
    let (mut coordinator, _, old_b) = stable_static_group();
    let third = joins(&coordinator.join(20, static_request("ic"), 1000));
    assert!(third.is_empty(), "ic waits for ia and ib to rejoin");
    let old_rejoin = JoinRequest {
        member_id: old_b.clone(),
        ..static_request("ib")
    };
    assert!(joins(&coordinator.join(21, old_rejoin, 1100)).is_empty());
    // ib restarts while its old incarnation's join is parked.
    let effects = coordinator.join(22, static_request("ib"), 1200);
    let answered = joins(&effects);
    assert_eq!(answered[&21].error, Some(GroupError::FencedInstanceId));
    assert_eq!(answered[&21].member_id, old_b);
    assert!(
        !answered.contains_key(&22),
        "the new incarnation waits for the rebalance"
    );
    assert_eq!(state(&coordinator), GroupState::PreparingRebalance);
}

fn commit_request(
    generation_id: i32,
    member_id: &str,
    offsets: &[(&str, i32, i64)],
) -> CommitRequest {
    CommitRequest {
        group_id: "g".into(),
        generation_id,
        member_id: member_id.into(),
        group_instance_id: None,
        retention_time_ms: RETENTION_TIME_DEFAULT,
        partitions: offsets
            .iter()
            .map(|(topic, partition, offset)| CommitPartition {
                topic: (*topic).into(),
                partition: *partition,
                offset: *offset,
                leader_epoch: -1,
                metadata: None,
            })
            .collect(),
    }
}

fn fetched(coordinator: &GroupCoordinator, group_id: &str) -> Vec<(String, i32, i64)> {
    coordinator
        .fetch_offsets(group_id, None)
        .into_iter()
        .map(|offset| (offset.topic, offset.partition, offset.offset))
        .collect()
}

#[test]
fn a_failed_assignment_write_answers_the_error_and_rebalances() {
    let mut coordinator = GroupCoordinator::new(limits());
    let mut request = join_request("", &["range"]);
    request.require_known_member_id = false;
    let a = joins(&coordinator.join(1, request, 0))[&1]
        .member_id
        .clone();
    let effects = coordinator.sync(2, sync_request(&a, 1, &[(&a, b"pa")]), 10);
    let answered = syncs(&complete_stores(
        &mut coordinator,
        effects,
        Err(GroupError::CoordinatorNotAvailable),
        20,
    ));
    assert_eq!(
        answered[&2].error,
        Some(GroupError::CoordinatorNotAvailable)
    );
    assert!(answered[&2].assignment.is_empty());
    // The undurable assignment was never the group's: it rebalances (Kafka's
    // resetAndPropagateAssignmentError + maybePrepareRebalance).
    assert_eq!(state(&coordinator), GroupState::PreparingRebalance);
    assert!(coordinator.describe("g").unwrap().members[0]
        .assignment
        .is_empty());
    assert_eq!(
        heartbeat(&mut coordinator, &a, 1, 30),
        Err(GroupError::RebalanceInProgress)
    );
    // The member rejoins and this time the write works.
    let answered = joins(&coordinator.join(3, join_request(&a, &["range"]), 40));
    assert_eq!(answered[&3].generation_id, 2);
    let effects = coordinator.sync(4, sync_request(&a, 2, &[(&a, b"pa2")]), 50);
    let answered = syncs(&complete_stores(&mut coordinator, effects, Ok(()), 60));
    assert_eq!(answered[&4].assignment, Bytes::from_static(b"pa2"));
    assert_eq!(state(&coordinator), GroupState::Stable);
}

#[test]
fn an_assignment_overtaken_by_a_rebalance_is_not_applied() {
    let (mut coordinator, a, b) = stable_group();
    assert!(joins(&coordinator.join(40, join_request(&a, &["range"]), 2000)).is_empty());
    let answered = joins(&coordinator.join(41, join_request(&b, &["range"]), 2000));
    assert_eq!(answered.len(), 2);
    assert_eq!(state(&coordinator), GroupState::CompletingRebalance);
    let store = coordinator.sync(5, sync_request(&a, 2, &[(&a, b"pa"), (&b, b"pb")]), 2010);
    // b leaves while the assignment is being written.
    let leaving = [LeaveMember {
        member_id: b.clone(),
        group_instance_id: None,
    }];
    let (_, effects) = coordinator.leave("g", &leaving, 2020);
    assert_eq!(
        syncs(&effects)[&5].error,
        Some(GroupError::RebalanceInProgress)
    );
    assert!(syncs(&complete_stores(&mut coordinator, store, Ok(()), 2030)).is_empty());
    assert_eq!(state(&coordinator), GroupState::PreparingRebalance);
}

#[test]
fn a_failed_static_rejoin_write_keeps_the_previous_incarnation() {
    let (mut coordinator, _, old_b) = stable_static_group();
    let effects = coordinator.join(10, static_request("ib"), 1000);
    let answered = joins(&complete_stores(
        &mut coordinator,
        effects,
        Err(GroupError::CoordinatorNotAvailable),
        1000,
    ));
    assert_eq!(
        answered[&10].error,
        Some(GroupError::CoordinatorNotAvailable)
    );
    // Kafka reverts: the old member id is still the instance's, with its assignment.
    let old = HeartbeatRequest {
        group_id: "g".into(),
        generation_id: 2,
        member_id: old_b.clone(),
        group_instance_id: Some("ib".into()),
    };
    assert_eq!(coordinator.heartbeat(&old, 1100), Ok(()));
    let description = coordinator.describe("g").unwrap();
    let member = description
        .members
        .iter()
        .find(|member| member.member_id == old_b)
        .unwrap();
    assert_eq!(member.assignment, Bytes::from_static(b"pb"));
    assert_eq!(description.members.len(), 2);
    assert_eq!(state(&coordinator), GroupState::Stable);
}

#[test]
fn commits_are_visible_only_once_durable() {
    let (mut coordinator, a, _) = stable_group();
    let first = coordinator
        .prepare_commit(&commit_request(1, &a, &[("t", 0, 5)]), 1100)
        .unwrap();
    assert_eq!(first.results, vec![None]);
    assert!(fetched(&coordinator, "g").is_empty(), "not durable yet");
    coordinator.complete_commit(&first, Ok(()));
    assert_eq!(fetched(&coordinator, "g"), vec![("t".into(), 0, 5)]);

    // A failed write leaves what was there.
    let failed = coordinator
        .prepare_commit(&commit_request(1, &a, &[("t", 0, 9), ("t", 1, 9)]), 1200)
        .unwrap();
    coordinator.complete_commit(&failed, Err(GroupError::CoordinatorNotAvailable));
    assert_eq!(fetched(&coordinator, "g"), vec![("t".into(), 0, 5)]);

    // Two commits in flight complete in order: the later one is the last word.
    let earlier = coordinator
        .prepare_commit(&commit_request(1, &a, &[("t", 0, 6)]), 1300)
        .unwrap();
    let later = coordinator
        .prepare_commit(&commit_request(1, &a, &[("t", 0, 7)]), 1300)
        .unwrap();
    coordinator.complete_commit(&earlier, Ok(()));
    coordinator.complete_commit(&later, Ok(()));
    assert_eq!(fetched(&coordinator, "g"), vec![("t".into(), 0, 7)]);

    // Fencing happens before anything is written.
    assert_eq!(
        coordinator
            .prepare_commit(&commit_request(2, &a, &[("t", 0, 8)]), 1400)
            .map(|pending| pending.results),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        coordinator
            .prepare_commit(&commit_request(1, "stranger", &[("t", 0, 8)]), 1400)
            .map(|pending| pending.results),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn a_group_being_deleted_is_dead_until_its_tombstones_are_durable() {
    let mut coordinator = GroupCoordinator::new(limits());
    let commit = coordinator
        .prepare_commit(&commit_request(-1, "", &[("t", 0, 1)]), 0)
        .unwrap();
    coordinator.complete_commit(&commit, Ok(()));
    // A commit of a new partition is in flight when the delete comes: its tombstone is
    // written too (it completes first, the writes being in order).
    let in_flight = coordinator
        .prepare_commit(&commit_request(-1, "", &[("u", 0, 2)]), 10)
        .unwrap();
    let delete = coordinator.prepare_delete_group("g").unwrap();
    let mut offsets = delete.offsets.clone();
    offsets.sort();
    assert_eq!(offsets, vec![("t".into(), 0), ("u".into(), 0)]);
    assert!(delete.remove_group);
    assert_eq!(state(&coordinator), GroupState::Dead);
    let join = &joins(&coordinator.join(1, join_request("", &["range"]), 20))[&1];
    assert_eq!(join.error, Some(GroupError::CoordinatorNotAvailable));
    assert_eq!(
        coordinator.prepare_delete_group("g").map(|_| ()),
        Err(GroupError::GroupIdNotFound)
    );
    coordinator.complete_commit(&in_flight, Ok(()));
    // The tombstones' write fails: everything is as it was.
    coordinator.complete_removal(&delete, Err(GroupError::CoordinatorNotAvailable));
    assert_eq!(state(&coordinator), GroupState::Empty);
    assert_eq!(fetched(&coordinator, "g").len(), 2);
    // Again, durably this time.
    let delete = coordinator.prepare_delete_group("g").unwrap();
    coordinator.complete_removal(&delete, Ok(()));
    assert!(coordinator.describe("g").is_none());
    assert!(fetched(&coordinator, "g").is_empty());
}

#[test]
fn simple_commits_expire_by_commit_time() {
    let mut coordinator = GroupCoordinator::new(limits());
    for (partition, now_ms) in [(0, 1000), (1, 1500)] {
        let commit = coordinator
            .prepare_commit(&commit_request(-1, "", &[("t", partition, 1)]), now_ms)
            .unwrap();
        coordinator.complete_commit(&commit, Ok(()));
    }
    assert!(coordinator.prepare_expiry(1999, 1000).is_empty());
    let expired = coordinator.prepare_expiry(2000, 1000);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].offsets, vec![("t".into(), 0)]);
    assert!(!expired[0].remove_group);
    // A failed tombstone write keeps the offset.
    coordinator.complete_removal(&expired[0], Err(GroupError::CoordinatorNotAvailable));
    assert_eq!(fetched(&coordinator, "g").len(), 2);
    let expired = coordinator.prepare_expiry(2000, 1000);
    coordinator.complete_removal(&expired[0], Ok(()));
    assert_eq!(fetched(&coordinator, "g"), vec![("t".into(), 1, 1)]);
    // The last offset goes and the group with it.
    let expired = coordinator.prepare_expiry(2500, 1000);
    assert!(expired[0].remove_group);
    assert_eq!(state(&coordinator), GroupState::Dead);
    coordinator.complete_removal(&expired[0], Ok(()));
    assert!(coordinator.describe("g").is_none());
}

#[test]
fn an_empty_groups_offsets_expire_from_when_it_became_empty() {
    let (mut coordinator, a, b) = stable_group();
    let commit = coordinator
        .prepare_commit(&commit_request(1, &a, &[("t", 0, 3)]), 1100)
        .unwrap();
    coordinator.complete_commit(&commit, Ok(()));
    // Stable, and its members' subscriptions do not parse: nothing expires.
    assert!(coordinator.prepare_expiry(1_000_000, 1000).is_empty());
    let everyone = [
        LeaveMember {
            member_id: a,
            group_instance_id: None,
        },
        LeaveMember {
            member_id: b,
            group_instance_id: None,
        },
    ];
    coordinator.leave("g", &everyone, 50_000);
    assert_eq!(state(&coordinator), GroupState::Empty);
    // Committed at 1100, empty since 50 000: the clock starts at 50 000 (KIP-211).
    assert!(coordinator.prepare_expiry(50_999, 1000).is_empty());
    // A commit in flight is never expired.
    let in_flight = coordinator
        .prepare_commit(&commit_request(-1, "", &[("t", 0, 4)]), 50_500)
        .unwrap();
    assert!(coordinator.prepare_expiry(60_000, 1000).is_empty());
    coordinator.complete_commit(&in_flight, Ok(()));
    let expired = coordinator.prepare_expiry(60_000, 1000);
    assert_eq!(expired.len(), 1);
    assert!(expired[0].remove_group, "nothing left: the group goes too");
    coordinator.complete_removal(&expired[0], Ok(()));
    assert!(coordinator.describe("g").is_none());
}

#[test]
fn a_stable_consumer_group_expires_only_topics_it_left() {
    let mut coordinator = GroupCoordinator::new(limits());
    let mut request = join_request("", &["range"]);
    request.require_known_member_id = false;
    request.protocols[0].metadata = subscription(&["t"]);
    let a = joins(&coordinator.join(1, request, 0))[&1]
        .member_id
        .clone();
    let effects = coordinator.sync(2, sync_request(&a, 1, &[]), 0);
    complete_stores(&mut coordinator, effects, Ok(()), 0);
    assert_eq!(state(&coordinator), GroupState::Stable);
    let commit = coordinator
        .prepare_commit(&commit_request(1, &a, &[("t", 0, 1), ("old", 0, 1)]), 100)
        .unwrap();
    coordinator.complete_commit(&commit, Ok(()));
    let expired = coordinator.prepare_expiry(1100, 1000);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].offsets, vec![("old".into(), 0)]);
    assert!(!expired[0].remove_group);
    assert_eq!(state(&coordinator), GroupState::Stable);
}

#[test]
fn a_commit_with_a_retention_time_expires_at_its_own_time() {
    let mut coordinator = GroupCoordinator::new(limits());
    let request = CommitRequest {
        retention_time_ms: 50,
        ..commit_request(-1, "", &[("t", 0, 1)])
    };
    let commit = coordinator.prepare_commit(&request, 1000).unwrap();
    coordinator.complete_commit(&commit, Ok(()));
    let stored = coordinator.committed("g", "t", 0).unwrap().record();
    assert_eq!(stored.expire_timestamp_ms, 1050);
    assert!(coordinator.prepare_expiry(1049, 1_000_000).is_empty());
    assert_eq!(coordinator.prepare_expiry(1050, 1_000_000).len(), 1);
}

#[test]
fn an_emptied_groups_retention_clock_survives_a_reload() {
    let (mut coordinator, a, b) = stable_group();
    let everyone = [a, b].map(|member_id| LeaveMember {
        member_id,
        group_instance_id: None,
    });
    let (_, effects) = coordinator.leave("g", &everyone, 5000);
    let Some(Effect::StoreGroup { record, .. }) = effects
        .iter()
        .find(|effect| matches!(effect, Effect::StoreGroup { .. }))
    else {
        panic!("emptying stores the group: {effects:?}");
    };
    assert_eq!(record.current_state_timestamp_ms, 5000);
    let stored = super::records::OffsetCommitValue {
        offset: 3,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 100,
        expire_timestamp_ms: -1,
    };
    // Loaded much later: the group has been empty since 5000, not since the load.
    let mut loaded = GroupCoordinator::new(limits());
    loaded.restore_group("g", record, 90_000).unwrap();
    loaded
        .restore_offset("g", "t", 0, Some(&stored), 90_000)
        .unwrap();
    let mut restored = GroupCoordinator::new(limits());
    restored.absorb(loaded, 90_000);
    assert_eq!(state(&restored), GroupState::Empty);
    let expired = restored.prepare_expiry(90_000, 10_000);
    assert_eq!(expired.len(), 1);
    assert!(expired[0].remove_group);
}

#[test]
fn an_empty_group_without_offsets_is_removed_at_the_next_check() {
    let mut coordinator = GroupCoordinator::new(limits());
    let mut request = join_request("", &["range"]);
    request.require_known_member_id = false;
    let a = joins(&coordinator.join(1, request, 0))[&1]
        .member_id
        .clone();
    let only_a = [LeaveMember {
        member_id: a,
        group_instance_id: None,
    }];
    coordinator.leave("g", &only_a, 10);
    assert_eq!(state(&coordinator), GroupState::Empty);
    // It stored a record (generation 1), so it goes with a tombstone, as in Kafka.
    let expired = coordinator.prepare_expiry(20, 1_000_000);
    assert_eq!(expired.len(), 1);
    assert!(expired[0].offsets.is_empty() && expired[0].remove_group);
    coordinator.complete_removal(&expired[0], Ok(()));
    assert!(coordinator.describe("g").is_none());
}
