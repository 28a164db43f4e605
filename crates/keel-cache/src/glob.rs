//! Glob patterns with Redis `KEYS`/`SCAN MATCH` semantics.
//!
//! | syntax | matches |
//! |---|---|
//! | `*` | any run of characters, including none |
//! | `?` | exactly one character |
//! | `[abc]` | one of `a`, `b`, `c` |
//! | `[^a]` | any one character except `a` |
//! | `[a-z]` | one character in the range (either order, as Redis accepts `[z-a]`) |
//! | `\x` | the character `x` literally (also inside brackets) |
//!
//! An unclosed `[` matches like Redis: the class runs to the end of the pattern. Matching works on
//! bytes, as Redis does, so a multi-byte character is several `?`.

use std::fmt;

/// A compiled glob pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Vec<u8>,
    literal_prefix: String,
}

impl Glob {
    /// Compiles `pattern`. Every pattern is valid, as in Redis.
    pub fn new(pattern: &str) -> Self {
        Self {
            pattern: pattern.as_bytes().to_vec(),
            literal_prefix: literal_prefix(pattern.as_bytes()),
        }
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        // Built from a `&str`.
        std::str::from_utf8(&self.pattern).unwrap_or_default()
    }

    /// Whether `key` matches.
    pub fn matches(&self, key: &str) -> bool {
        match_bytes(&self.pattern, key.as_bytes())
    }

    /// The longest prefix every matching key starts with (empty when the pattern starts with a
    /// wildcard); scans start there.
    pub fn literal_prefix(&self) -> &str {
        &self.literal_prefix
    }

    /// `text` with the special characters escaped: a pattern matching `text` literally (to
    /// put a fixed prefix in front of a caller's pattern).
    pub fn escape(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }

    /// Whether the pattern matches every key (`*`, `**`, …).
    pub fn matches_everything(&self) -> bool {
        !self.pattern.is_empty() && self.pattern.iter().all(|&b| b == b'*')
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", String::from_utf8_lossy(&self.pattern))
    }
}

fn literal_prefix(p: &[u8]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'*' | b'?' | b'[' => break,
            b'\\' if i + 1 < p.len() => {
                out.push(p[i + 1]);
                i += 2;
            }
            b'\\' => break,
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    // A prefix cut inside a multi-byte character is shortened to a character boundary.
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            String::from_utf8_lossy(&e.into_bytes()[..valid]).into_owned()
        }
    }
}

/// Redis's `stringmatchlen`, iterative over `*` with backtracking to the last star.
fn match_bytes(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    while pi < p.len() && p[pi] == b'*' {
                        pi += 1;
                    }
                    if pi == p.len() {
                        return true;
                    }
                    star = Some((pi, si));
                    continue;
                }
                b'?' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                b'[' => {
                    let (matched, next) = match_class(p, pi, s[si]);
                    if matched {
                        pi = next;
                        si += 1;
                        continue;
                    }
                }
                b'\\' if pi + 1 < p.len() => {
                    if p[pi + 1] == s[si] {
                        pi += 2;
                        si += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[si] {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
            }
        }
        // Mismatch: retry from the last star, letting it swallow one more byte.
        match star {
            Some((star_pi, star_si)) => {
                pi = star_pi;
                si = star_si + 1;
                star = Some((star_pi, star_si + 1));
            }
            None => return false,
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Matches byte `c` against the class starting at `p[start] == b'['`. Returns whether it matched
/// and the index after the class.
fn match_class(p: &[u8], start: usize, c: u8) -> (bool, usize) {
    let mut i = start + 1;
    let negate = i < p.len() && p[i] == b'^';
    if negate {
        i += 1;
    }
    let mut matched = false;
    loop {
        if i >= p.len() {
            // Unclosed class: Redis treats the end of the pattern as its end.
            break;
        }
        match p[i] {
            b']' => {
                i += 1;
                break;
            }
            b'\\' if i + 1 < p.len() => {
                if p[i + 1] == c {
                    matched = true;
                }
                i += 2;
            }
            lo if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' => {
                let hi = p[i + 2];
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                if (lo..=hi).contains(&c) {
                    matched = true;
                }
                i += 3;
            }
            b => {
                if b == c {
                    matched = true;
                }
                i += 1;
            }
        }
    }
    (matched != negate, i)
}

#[cfg(test)]
mod tests {
    use super::Glob;

    /// (pattern, key, matches) — checked against Redis 7's `KEYS` behaviour.
    const TABLE: &[(&str, &str, bool)] = &[
        ("*", "", true),
        ("*", "anything", true),
        ("user:*", "user:1", true),
        ("user:*", "user:", true),
        ("user:*", "users:1", false),
        ("*:profile", "user:42:profile", true),
        ("*:profile", "user:42:profile:x", false),
        ("user:*:profile", "user:42:profile", true),
        ("user:*:profile", "user::profile", true),
        ("a*b*c", "abc", true),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false),
        ("h?llo", "hello", true),
        ("h?llo", "hllo", false),
        ("h?llo", "heello", false),
        ("h[ae]llo", "hello", true),
        ("h[ae]llo", "hallo", true),
        ("h[ae]llo", "hillo", false),
        ("h[^e]llo", "hallo", true),
        ("h[^e]llo", "hello", false),
        ("h[a-b]llo", "hbllo", true),
        ("h[a-b]llo", "hcllo", false),
        ("h[b-a]llo", "hallo", true),
        ("key[0-9]", "key7", true),
        ("key[0-9]", "keyx", false),
        (r"h\*llo", "h*llo", true),
        (r"h\*llo", "hello", false),
        (r"h\?llo", "h?llo", true),
        (r"h[\]]llo", "h]llo", true),
        (r"a\[b", "a[b", true),
        ("[abc", "a", true),
        ("[abc", "d", false),
        ("exact", "exact", true),
        ("exact", "exactly", false),
        ("", "", true),
        ("", "a", false),
        ("**", "x", true),
        ("?", "é", false),
        ("??", "é", true),
    ];

    #[test]
    fn redis_glob_semantics() {
        for (pattern, key, want) in TABLE {
            assert_eq!(
                Glob::new(pattern).matches(key),
                *want,
                "{pattern:?} vs {key:?}"
            );
        }
    }

    #[test]
    fn escaped_text_matches_only_itself() {
        assert_eq!(Glob::escape("keel:cache:v:"), "keel:cache:v:");
        assert_eq!(Glob::escape(r"a*b?[c]\"), r"a\*b\?\[c\]\\");
        assert!(Glob::new(&Glob::escape("a*[b]")).matches("a*[b]"));
        assert!(!Glob::new(&Glob::escape("a*")).matches("abc"));
        assert_eq!(Glob::new(&Glob::escape("a*")).literal_prefix(), "a*");
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(Glob::new("user:*").literal_prefix(), "user:");
        assert_eq!(Glob::new("*").literal_prefix(), "");
        assert_eq!(Glob::new(r"a\*b*").literal_prefix(), "a*b");
        assert_eq!(Glob::new("ab?c").literal_prefix(), "ab");
        assert_eq!(Glob::new("k[0-9]").literal_prefix(), "k");
        assert!(Glob::new("**").matches_everything());
        assert!(!Glob::new("*a").matches_everything());
        assert!(!Glob::new("").matches_everything());
    }
}
