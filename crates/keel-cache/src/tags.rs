//! tag → the keys whose writes carried it.
//!
//! Members are `(key, generation)`: a member is current while the key index still holds that
//! generation for the key. Members go stale when their key is rewritten without the tag,
//! deleted, expired or evicted; nobody is told of evictions, so stale members are pruned lazily —
//! a tag's members when their number doubles since the last prune (so a hot tag stays at most
//! twice its live size, at amortised constant cost per write), and every tag in turn by the
//! cache's maintenance (so tags nobody writes any more are dropped too).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keel_core::sync::lock;

/// The smallest member count at which a tag is pruned on write.
const PRUNE_FLOOR: usize = 64;

#[derive(Default)]
struct Members {
    keys: HashMap<Arc<str>, u64>,
    /// Prune on write once `keys` reaches this size.
    prune_at: usize,
}

impl Members {
    fn prune(&mut self, current: &impl Fn(&str, u64) -> bool) {
        self.keys
            .retain(|key, generation| current(key, *generation));
        self.prune_at = (self.keys.len() * 2).max(PRUNE_FLOOR);
    }
}

/// The tag index.
#[derive(Default)]
pub(crate) struct Tags {
    map: Mutex<HashMap<Arc<str>, Members>>,
    /// Tags the maintenance has yet to visit in this round.
    to_visit: Mutex<Vec<Arc<str>>>,
}

impl Tags {
    /// Records that the write `generation` of `key` carries `tags`. `current` tells whether a
    /// member is still current, for pruning.
    pub(crate) fn add(
        &self,
        tags: &[Arc<str>],
        key: &Arc<str>,
        generation: u64,
        current: impl Fn(&str, u64) -> bool,
    ) {
        let mut map = lock(&self.map);
        for tag in tags {
            let members = map.entry(tag.clone()).or_default();
            if members.keys.len() >= members.prune_at {
                members.prune(&current);
            }
            members.keys.insert(key.clone(), generation);
        }
    }

    /// Removes `tag` and returns its members.
    pub(crate) fn take(&self, tag: &str) -> Vec<(Arc<str>, u64)> {
        lock(&self.map)
            .remove(tag)
            .map(|m| m.keys.into_iter().collect())
            .unwrap_or_default()
    }

    /// Prunes stale members of up to `budget` members' worth of tags, continuing the round
    /// where the last call stopped; drops tags left without members. Returns whether the
    /// round is complete.
    pub(crate) fn prune_step(&self, budget: usize, current: impl Fn(&str, u64) -> bool) -> bool {
        let mut to_visit = lock(&self.to_visit);
        if to_visit.is_empty() {
            to_visit.extend(lock(&self.map).keys().cloned());
        }
        let mut spent = 0;
        while spent < budget {
            let Some(tag) = to_visit.pop() else {
                return true;
            };
            let mut map = lock(&self.map);
            if let Some(members) = map.get_mut(&tag) {
                spent += members.keys.len().max(1);
                members.prune(&current);
                if members.keys.is_empty() {
                    map.remove(&tag);
                }
            }
        }
        to_visit.is_empty()
    }

    /// Forgets every tag.
    pub(crate) fn clear(&self) {
        lock(&self.map).clear();
        lock(&self.to_visit).clear();
    }

    /// How many members `tag` has, stale ones included.
    #[cfg(test)]
    fn members(&self, tag: &str) -> usize {
        lock(&self.map).get(tag).map_or(0, |m| m.keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_tags_stay_within_twice_their_live_members() {
        let tags = Tags::default();
        let tag: Arc<str> = Arc::from("t");
        // Only the latest 10 writes are current.
        for generation in 1..=10_000u64 {
            let key: Arc<str> = Arc::from(format!("k{generation}"));
            tags.add(std::slice::from_ref(&tag), &key, generation, |_, g| {
                g + 10 > generation
            });
        }
        assert!(tags.members("t") <= PRUNE_FLOOR, "{}", tags.members("t"));
    }

    #[test]
    fn maintenance_drops_tags_without_current_members() {
        let tags = Tags::default();
        for name in ["a", "b", "c"] {
            tags.add(&[Arc::from(name)], &Arc::from("k"), 1, |_, _| true);
        }
        let mut rounds = 0;
        while !tags.prune_step(1, |key, _| key != "k") {
            rounds += 1;
        }
        assert_eq!(rounds, 2);
        assert_eq!(tags.members("a") + tags.members("b") + tags.members("c"), 0);
        assert!(lock(&tags.map).is_empty());
        assert_eq!(tags.take("a"), vec![]);
    }
}
