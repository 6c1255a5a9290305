//! A shard-local "something changed" signal: tasks wait until a condition they check holds, and
//! whoever changes the state calls [`Notify::notify_all`].
//!
//! Single-threaded by construction (`Rc`, `RefCell`): the condition is checked and the waker
//! registered in the same poll, so no wake-up can be missed.

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// See the module doc. Waiters are bounded by the tasks that wait; each registers one waker per
/// poll and all are drained on every notification.
#[derive(Default)]
pub struct Notify {
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    /// Wakes every waiting task so it re-checks its condition.
    pub fn notify_all(&self) {
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for waker in wakers {
            waker.wake();
        }
    }

    /// Resolves once `condition` returns `Some`, re-checking after each notification.
    pub async fn wait_until<T>(&self, mut condition: impl FnMut() -> Option<T>) -> T {
        poll_fn(|context| match condition() {
            Some(value) => Poll::Ready(value),
            None => {
                let mut wakers = self.wakers.borrow_mut();
                if !wakers.iter().any(|waker| waker.will_wake(context.waker())) {
                    wakers.push(context.waker().clone());
                }
                Poll::Pending
            }
        })
        .await
    }
}
