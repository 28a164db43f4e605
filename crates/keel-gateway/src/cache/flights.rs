//! Request coalescing: while one request fetches a key from the upstream, the others asking for
//! that key wait for it and then read what it stored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use keel_core::sync::lock;
use tokio::sync::Notify;

/// The fetches in progress, by key.
#[derive(Default)]
pub(crate) struct Flights {
    active: Active,
}

type Active = Arc<Mutex<HashMap<String, Arc<Flight>>>>;

/// One fetch in progress.
#[derive(Default)]
pub(crate) struct Flight {
    landed: AtomicBool,
    notify: Notify,
}

impl Flight {
    /// Waits until the fetch has ended (stored a response, or not).
    pub(crate) async fn landed(&self) {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.landed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// The right to fetch a key; the waiters are released when it is dropped, however the fetch
/// ended (done, failed, the client went away, a background task ended).
pub(crate) struct Leader {
    active: Active,
    key: String,
    flight: Arc<Flight>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        lock(&self.active).remove(&self.key);
        self.flight.landed.store(true, Ordering::Release);
        self.flight.notify.notify_waiters();
    }
}

/// Whether the caller fetches the key or waits for someone else's fetch.
pub(crate) enum Joined {
    Leader(Leader),
    Follower(Arc<Flight>),
}

impl Flights {
    /// Joins the fetch of `key`, leading it when none is in progress.
    pub(crate) fn join(&self, key: &str) -> Joined {
        let mut active = lock(&self.active);
        if let Some(flight) = active.get(key) {
            return Joined::Follower(flight.clone());
        }
        Joined::Leader(self.lead(&mut active, key))
    }

    fn lead(&self, active: &mut HashMap<String, Arc<Flight>>, key: &str) -> Leader {
        let flight = Arc::new(Flight::default());
        active.insert(key.to_owned(), flight.clone());
        Leader {
            active: self.active.clone(),
            key: key.to_owned(),
            flight,
        }
    }

    /// Leads the fetch of `key` only if nobody else is fetching it (background refreshes).
    pub(crate) fn try_lead(&self, key: &str) -> Option<Leader> {
        let mut active = lock(&self.active);
        if active.contains_key(key) {
            return None;
        }
        Some(self.lead(&mut active, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_wait_for_the_leader_and_a_new_fetch_can_start_after() {
        let flights = Flights::default();
        let Joined::Leader(leader) = flights.join("k") else {
            panic!("first is the leader")
        };
        let Joined::Follower(flight) = flights.join("k") else {
            panic!("second follows")
        };
        assert!(flights.try_lead("k").is_none());
        let waiting = tokio::spawn(async move { flight.landed().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(leader);
        waiting.await.unwrap();
        assert!(matches!(flights.join("k"), Joined::Leader(_)));
        let background = flights.try_lead("k").expect("free again");
        assert!(matches!(flights.join("k"), Joined::Follower(_)));
        drop(background);
        assert!(matches!(flights.join("k"), Joined::Leader(_)));
    }
}
