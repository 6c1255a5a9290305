//! The consumer-group coordinator wired into the shards (in memory for now).
//!
//! A group lives on the shard owning partition `hash(group id) % 50` of `__consumer_offsets`
//! ([`coordinator_shard`]). That shard holds a [`GroupService`]: the synchronous
//! [`GroupCoordinator`] plus the JoinGroup/SyncGroup requests it parked, keyed by token. A handler
//! on another shard runs its operation there through [`on_coordinator`] (one
//! `ShardMessage::Group` over the bounded inbox) and awaits the answer. A tick task per shard
//! expires sessions and rebalance deadlines and answers the requests those complete.
//!
//! TODO(groups): persist `Effect::StoreGroup` and accepted commits to `__consumer_offsets` and
//! rebuild from it on startup; until then groups and committed offsets live in memory only.

use crate::group::{
    Effect, GroupCoordinator, GroupError, GroupLimits, JoinRequest, JoinResponse, RequestToken,
    SyncRequest, SyncResponse,
};
use crate::shard::{owner_shard, Shard, ShardMessage};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::time::Duration;

/// `offsets.topic.num.partitions`.
pub const OFFSETS_TOPIC_PARTITIONS: i32 = 50;
/// The internal topic whose partitions place the group coordinators.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How often each shard's coordinator checks its deadlines.
const TICK_INTERVAL: Duration = Duration::from_millis(100);

/// A group operation to run on the coordinator shard (it sends its own answer).
pub type GroupOp = Box<dyn FnOnce(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// Java's `String.hashCode` (over UTF-16 code units), as Kafka uses for the partition.
fn java_hash_code(value: &str) -> i32 {
    value.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(unit as i32)
    })
}

/// The `__consumer_offsets` partition of a group.
pub fn offsets_partition(group_id: &str) -> i32 {
    (java_hash_code(group_id) & 0x7fff_ffff) % OFFSETS_TOPIC_PARTITIONS
}

/// The shard coordinating a group.
pub fn coordinator_shard(group_id: &str, shard_count: usize) -> usize {
    owner_shard(OFFSETS_TOPIC, offsets_partition(group_id), shard_count)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs `op` on the shard coordinating `group_id` and returns its result; `None` when that shard
/// is gone or dropped the request (callers answer COORDINATOR_NOT_AVAILABLE).
pub async fn on_coordinator<T, F, Fut>(shard: &Rc<Shard>, group_id: &str, op: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let target = coordinator_shard(group_id, shard.shard_count());
    on_shard(shard, target, op).await
}

/// Runs `op` on shard `target` (ListGroups asks every shard) and returns its result; `None`
/// when that shard is gone or dropped the request.
pub async fn on_shard<T, F, Fut>(shard: &Rc<Shard>, target: usize, op: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    if target == shard.id {
        return Some(op(shard.clone()).await);
    }
    let (reply, answer) = flume::bounded(1);
    let op: GroupOp = Box::new(move |shard| {
        Box::pin(async move {
            let _ = reply.send(op(shard).await);
        })
    });
    shard
        .send_to(target, ShardMessage::Group { op })
        .await
        .ok()?;
    answer.recv_async().await.ok()
}

/// One shard's coordinator and its parked requests.
pub struct GroupService {
    coordinator: RefCell<GroupCoordinator>,
    joins: RefCell<HashMap<RequestToken, flume::Sender<JoinResponse>>>,
    syncs: RefCell<HashMap<RequestToken, flume::Sender<SyncResponse>>>,
    next_token: Cell<RequestToken>,
}

impl Default for GroupService {
    fn default() -> Self {
        Self::new(GroupLimits::default())
    }
}

impl GroupService {
    /// An empty coordinator.
    pub fn new(limits: GroupLimits) -> Self {
        Self {
            coordinator: RefCell::new(GroupCoordinator::new(limits)),
            joins: RefCell::new(HashMap::new()),
            syncs: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
        }
    }

    /// Starts the tick task on the current executor; it stops once the service is dropped.
    pub fn spawn_ticker(self: &Rc<Self>) {
        let service: Weak<Self> = Rc::downgrade(self);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(TICK_INTERVAL).await;
                let Some(service) = service.upgrade() else {
                    return;
                };
                let effects = service.coordinator.borrow_mut().tick(now_ms());
                service.apply(effects);
            }
        })
        .detach();
    }

    fn token(&self) -> RequestToken {
        let token = self.next_token.get();
        self.next_token.set(token.wrapping_add(1));
        token
    }

    /// Answers the parked requests named in `effects`.
    fn apply(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Join { token, response } => {
                    if let Some(sender) = self.joins.borrow_mut().remove(&token) {
                        let _ = sender.try_send(response);
                    }
                }
                Effect::Sync { token, response } => {
                    if let Some(sender) = self.syncs.borrow_mut().remove(&token) {
                        let _ = sender.try_send(response);
                    }
                }
                // TODO(groups): write group_record(group_id) to __consumer_offsets first.
                Effect::StoreGroup { .. } => {}
            }
        }
    }

    /// JoinGroup: parks until the coordinator answers.
    pub async fn join(&self, request: JoinRequest) -> JoinResponse {
        let token = self.token();
        let member_id = request.member_id.clone();
        let (sender, answer) = flume::bounded(1);
        self.joins.borrow_mut().insert(token, sender);
        let effects = self.coordinator.borrow_mut().join(token, request, now_ms());
        self.apply(effects);
        let response = answer.recv_async().await;
        self.joins.borrow_mut().remove(&token);
        response.unwrap_or_else(|_| {
            JoinResponse::error(GroupError::CoordinatorNotAvailable, &member_id)
        })
    }

    /// SyncGroup: parks until the leader's assignment (or an error).
    pub async fn sync(&self, request: SyncRequest) -> SyncResponse {
        let token = self.token();
        let (sender, answer) = flume::bounded(1);
        self.syncs.borrow_mut().insert(token, sender);
        let effects = self.coordinator.borrow_mut().sync(token, request, now_ms());
        self.apply(effects);
        let response = answer.recv_async().await;
        self.syncs.borrow_mut().remove(&token);
        response.unwrap_or_else(|_| SyncResponse::error(GroupError::CoordinatorNotAvailable))
    }

    /// Runs a synchronous call on the coordinator (given the time), then answers whatever
    /// parked requests it completed.
    pub fn with<T>(&self, call: impl FnOnce(&mut GroupCoordinator, i64) -> (T, Vec<Effect>)) -> T {
        let (result, effects) = call(&mut self.coordinator.borrow_mut(), now_ms());
        self.apply(effects);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_kafka() {
        assert_eq!(java_hash_code(""), 0);
        assert_eq!(java_hash_code("ab"), 97 * 31 + 98);
        // Java: "my-group".hashCode() == -1906497762 (overflowing, negative).
        assert_eq!(java_hash_code("my-group"), -1_906_497_762);
        assert_eq!(offsets_partition("my-group"), 36);
    }
}
