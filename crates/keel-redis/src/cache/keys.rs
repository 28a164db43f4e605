//! Where the Redis tier keeps things, laid out so every script touches one Redis Cluster slot.
//!
//! Entries are spread over [`GROUPS`] groups by a hash of their key. An entry is
//! `<prefix>cache:v:{gg}<key>` and the set of a tag's entries in group `gg` is
//! `<prefix>cache:t:{gg}<tag>`, where `gg` is the group in two hex digits: an entry and the
//! sets of its tags share the `{gg}` hash tag, so writing or deleting an entry together with
//! its tags is one script in one slot. Invalidating a tag visits its set in every group.
//! 256 groups spread the cache over up to a few dozen Cluster masters evenly enough; on one
//! Redis they cost a tag invalidation one pipelined round trip more than one set would.

use keel_cache::Glob;

/// How many groups the entries are spread over. Part of the layout in Redis: every instance
/// sharing a Redis must agree on it.
pub(crate) const GROUPS: usize = 256;

/// Length of the `{gg}` part of a key.
const GROUP_LEN: usize = 4;

/// The key prefixes of one deployment.
pub(crate) struct Layout {
    /// `<prefix>cache:v:`
    entry_prefix: String,
    /// `<prefix>cache:t:`
    tag_prefix: String,
}

/// The group of `key`: FNV-1a of its bytes, modulo [`GROUPS`]. Fixed forever (it is in the
/// keys), so not a hasher whose seed or algorithm could change.
fn group_of(key: &str) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    (hash % GROUPS as u64) as usize
}

impl Layout {
    pub(crate) fn new(entry_prefix: String, tag_prefix: String) -> Self {
        Self {
            entry_prefix,
            tag_prefix,
        }
    }

    /// The Redis key of the entry `key`.
    pub(crate) fn entry(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.entry_prefix.len() + GROUP_LEN + key.len());
        full.push_str(&self.entry_prefix);
        push_group(&mut full, group_of(key));
        full.push_str(key);
        full
    }

    /// The prefix of the tag sets in the group of the entry whose Redis key is `entry` (what
    /// the scripts append a tag to).
    pub(crate) fn tag_prefix_of(&self, entry: &str) -> String {
        let group = entry
            .get(self.entry_prefix.len()..self.entry_prefix.len() + GROUP_LEN)
            .unwrap_or("");
        format!("{}{group}", self.tag_prefix)
    }

    /// The set of `tag`'s entries in each group, group by group.
    pub(crate) fn tag_sets(&self, tag: &str) -> Vec<String> {
        (0..GROUPS)
            .map(|group| {
                let mut set = String::with_capacity(self.tag_prefix.len() + GROUP_LEN + tag.len());
                set.push_str(&self.tag_prefix);
                push_group(&mut set, group);
                set.push_str(tag);
                set
            })
            .collect()
    }

    /// A `SCAN MATCH` pattern for the entries whose keys match `pattern` (Redis glob).
    pub(crate) fn matcher(&self, pattern: &str) -> String {
        format!("{}{{??}}{pattern}", Glob::escape(&self.entry_prefix))
    }

    /// The cache key of the entry whose Redis key is `entry`.
    pub(crate) fn name_of<'a>(&self, entry: &'a str) -> &'a str {
        entry
            .get(self.entry_prefix.len() + GROUP_LEN..)
            .unwrap_or("")
    }
}

fn push_group(out: &mut String, group: usize) {
    use std::fmt::Write;
    let _ = write!(out, "{{{group:02x}}}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::new("keel:cache:v:".into(), "keel:cache:t:".into())
    }

    #[test]
    fn an_entry_and_its_tag_sets_share_a_hash_tag() {
        let l = layout();
        let entry = l.entry("user:1");
        let group = &entry["keel:cache:v:".len().."keel:cache:v:".len() + 4];
        assert!(group.starts_with('{') && group.ends_with('}'), "{entry}");
        assert_eq!(l.name_of(&entry), "user:1");
        let prefix = l.tag_prefix_of(&entry);
        assert_eq!(prefix, format!("keel:cache:t:{group}"));
        assert!(l.tag_sets("users").contains(&format!("{prefix}users")));
    }

    #[test]
    fn groups_are_fixed_and_spread() {
        // Fixed: other instances (and other versions) must find the same key.
        assert_eq!(layout().entry("a"), "keel:cache:v:{8c}a");
        let mut used = [0usize; GROUPS];
        for i in 0..25_600 {
            used[group_of(&format!("user:{i}"))] += 1;
        }
        assert!(used.iter().all(|&n| (50..=150).contains(&n)), "{used:?}");
        assert_eq!(layout().tag_sets("t").len(), GROUPS);
    }

    #[test]
    fn patterns_skip_the_group() {
        let l = layout();
        let m = l.matcher("user:*");
        assert_eq!(m, "keel:cache:v:{??}user:*");
        let key = l.entry("user:7");
        assert!(Glob::new(&m).matches(&key));
    }
}
