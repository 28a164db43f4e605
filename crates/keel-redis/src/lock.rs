//! Named locks with fencing tokens: a lease on a name for a TTL, held by whoever has its token.
//!
//! `acquire` returns a random token (proof of ownership for `extend` and `release`) and a
//! fencing number that grows by one with every acquisition of the name, for as long as the
//! backend keeps its counter (Redis: 30 days after the name's last acquisition; memory: the
//! life of the process). A lock's holder passes the fencing number to whatever the lock
//! protects, which refuses numbers lower than the highest it has seen: a holder that paused
//! past its TTL (a GC pause, a stalled VM) and woke up thinking it still holds the lock is then
//! refused by the resource, not trusted.
//!
//! Guarantees and limits:
//! - With Redis, one Redis (or one Cluster shard) decides: acquire, extend and release are
//!   single atomic scripts. There is no Redlock-style quorum over independent Redis servers; a
//!   Redis failover that loses the last writes can hand a lock out twice, and fencing numbers
//!   are what keeps the protected resource safe then.
//! - Expiry is by the backend's clock (Redis's for Redis); a holder must extend before its TTL
//!   runs out and stop working on the resource when an extension is refused.
//! - In memory, locks are per process: for a single keel instance.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use keel_core::Clock;
use keel_core::sync::lock;
use serde::Serialize;

use crate::{Redis, RedisError};

/// The longest lock name, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// A held lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// The lock's name.
    pub name: String,
    /// Proof of ownership: `extend` and `release` need it.
    pub token: String,
    /// Grows by one with every acquisition of this name.
    pub fencing: u64,
    /// How long the lease lasts from now, unless extended.
    #[serde(rename = "ttl_ms", serialize_with = "as_millis")]
    pub ttl: Duration,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why a lock operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The name is empty, too long, or has characters that are not allowed.
    #[error("invalid lock name: {0}")]
    InvalidName(String),
    /// Someone else holds the lock (after waiting as long as asked).
    #[error(
        "lock \"{name}\" is held by someone else; it expires in {expires_in:?} unless extended"
    )]
    Held {
        /// The lock.
        name: String,
        /// Time left on the holder's lease.
        expires_in: Duration,
    },
    /// The token does not hold the lock: it was released, it expired, or it is someone else's.
    #[error(
        "lock \"{0}\" is not held with this token (released, expired, or held by someone else)"
    )]
    NotHolder(String),
    /// The backend could not be asked.
    #[error(transparent)]
    Backend(#[from] RedisError),
}

/// Checks a lock name: 1 to [`MAX_NAME_LEN`] bytes of letters, digits and `-_.:/@`. Braces are
/// left out because they pick Redis Cluster hash slots.
pub fn validate_name(name: &str) -> Result<(), LockError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(LockError::InvalidName(format!(
            "a lock name has 1 to {MAX_NAME_LEN} bytes (got {})",
            name.len()
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:/@".contains(*c)))
    {
        return Err(LockError::InvalidName(format!(
            "{bad:?} is not allowed in a lock name (letters, digits and -_.:/@ are)"
        )));
    }
    Ok(())
}

/// Named locks, in Redis (shared by every instance) or in memory (one instance).
///
/// ```no_run
/// use std::time::Duration;
/// use keel_core::Clock;
/// use keel_redis::Locks;
///
/// # async fn demo() -> Result<(), keel_redis::LockError> {
/// let locks = Locks::in_memory(Clock::system()); // or Locks::in_redis(redis)
/// let lease = locks.acquire("nightly-report", Duration::from_secs(30), Duration::from_secs(5)).await?;
/// // … work, passing lease.fencing to what the lock protects; extend before the TTL runs out …
/// locks.extend("nightly-report", &lease.token, Duration::from_secs(30)).await?;
/// locks.release("nightly-report", &lease.token).await?;
/// # Ok(()) }
/// ```
pub struct Locks {
    backend: Backend,
}

enum Backend {
    Memory(MemoryLocks),
    Redis(Redis),
}

/// The in-memory backend: names to their holder and expiry, plus each name's fencing counter.
struct MemoryLocks {
    clock: Clock,
    state: Mutex<HashMap<String, Named>>,
}

#[derive(Default)]
struct Named {
    holder: Option<(String, Instant)>,
    fencing: u64,
}

/// What one attempt to take a lock found.
enum Attempt {
    Taken(u64),
    Busy(Duration),
}

static ACQUIRE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fencing = redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return {1, fencing}
end
return {0, redis.call('PTTL', KEYS[1])}
"#,
    )
});

static EXTEND: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});

static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#,
    )
});

/// How long Redis keeps a name's fencing counter after its last acquisition: numbers keep
/// growing for a name used at least this often, and names no longer used do not pile up.
const FENCING_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a waiting `acquire` sleeps between attempts at first, and at most.
const RETRY_MIN: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_millis(200);

impl Locks {
    /// Locks in this process only, expiring by `clock`.
    pub fn in_memory(clock: Clock) -> Self {
        Self {
            backend: Backend::Memory(MemoryLocks {
                clock,
                state: Mutex::default(),
            }),
        }
    }

    /// Locks in Redis, shared by every instance using it.
    pub fn in_redis(redis: Redis) -> Self {
        Self {
            backend: Backend::Redis(redis),
        }
    }

    /// Takes `name` for `ttl`, waiting up to `wait` (retrying with backoff) while someone else
    /// holds it.
    pub async fn acquire(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        validate_name(name)?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = RETRY_MIN;
        loop {
            match self.try_acquire(name, &token, ttl).await? {
                Attempt::Taken(fencing) => {
                    return Ok(Lease {
                        name: name.to_owned(),
                        token,
                        fencing,
                        ttl,
                    });
                }
                Attempt::Busy(expires_in) => {
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        return Err(LockError::Held {
                            name: name.to_owned(),
                            expires_in,
                        });
                    }
                    // No sooner than the backoff, no later than the holder's expiry or the
                    // deadline.
                    let nap = pause.min(expires_in.max(Duration::from_millis(1)));
                    tokio::time::sleep(nap.min(deadline - now)).await;
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }
    }

    async fn try_acquire(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Attempt, LockError> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.try_acquire(name, token, ttl)),
            Backend::Redis(redis) => {
                let (taken, value): (i64, i64) = redis
                    .script(
                        ACQUIRE
                            .key(lock_key(redis, name))
                            .key(fence_key(redis, name))
                            .arg(token)
                            .arg(millis(ttl))
                            .arg(millis(FENCING_KEPT)),
                    )
                    .await?;
                Ok(if taken == 1 {
                    Attempt::Taken(value.max(0) as u64)
                } else {
                    // PTTL: -1 (no expiry) cannot happen for keys set here; -2 means it just
                    // went away, so try again soon.
                    Attempt::Busy(Duration::from_millis(value.max(0) as u64))
                })
            }
        }
    }

    /// Extends the lease on `name` held with `token` to `ttl` from now.
    pub async fn extend(&self, name: &str, token: &str, ttl: Duration) -> Result<(), LockError> {
        validate_name(name)?;
        let held = match &self.backend {
            Backend::Memory(m) => m.extend(name, token, ttl),
            Backend::Redis(redis) => {
                let done: i64 = redis
                    .script(
                        EXTEND
                            .key(lock_key(redis, name))
                            .arg(token)
                            .arg(millis(ttl)),
                    )
                    .await?;
                done == 1
            }
        };
        held.then_some(())
            .ok_or_else(|| LockError::NotHolder(name.to_owned()))
    }

    /// Releases `name` held with `token`.
    pub async fn release(&self, name: &str, token: &str) -> Result<(), LockError> {
        validate_name(name)?;
        let held = match &self.backend {
            Backend::Memory(m) => m.release(name, token),
            Backend::Redis(redis) => {
                let done: i64 = redis
                    .script(RELEASE.key(lock_key(redis, name)).arg(token))
                    .await?;
                done == 1
            }
        };
        held.then_some(())
            .ok_or_else(|| LockError::NotHolder(name.to_owned()))
    }
}

/// `<prefix>lock:{<name>}`: the hash tag puts the lock and its fencing counter in one slot.
fn lock_key(redis: &Redis, name: &str) -> String {
    redis.key(&format!("lock:{{{name}}}"))
}

fn fence_key(redis: &Redis, name: &str) -> String {
    redis.key(&format!("lock:{{{name}}}:fencing"))
}

/// A TTL in whole milliseconds, at least 1 (Redis refuses a zero expiry).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl MemoryLocks {
    fn try_acquire(&self, name: &str, token: &str, ttl: Duration) -> Attempt {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        let named = state.entry(name.to_owned()).or_default();
        match &named.holder {
            Some((_, expires)) if *expires > now => Attempt::Busy(*expires - now),
            _ => {
                named.fencing += 1;
                named.holder = Some((token.to_owned(), now + ttl));
                Attempt::Taken(named.fencing)
            }
        }
    }

    /// The holder entry of `name` if `token` holds it now.
    fn with_holder(&self, name: &str, token: &str, f: impl FnOnce(&mut Named, Instant)) -> bool {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        match state.get_mut(name) {
            Some(named)
                if named
                    .holder
                    .as_ref()
                    .is_some_and(|(t, expires)| t == token && *expires > now) =>
            {
                f(named, now);
                true
            }
            _ => false,
        }
    }

    fn extend(&self, name: &str, token: &str, ttl: Duration) -> bool {
        self.with_holder(name, token, |named, now| {
            if let Some((_, expires)) = &mut named.holder {
                *expires = now + ttl;
            }
        })
    }

    fn release(&self, name: &str, token: &str) -> bool {
        // The entry stays, with its fencing counter, so numbers keep growing.
        self.with_holder(name, token, |named, _| named.holder = None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_locks_expire_by_the_clock_and_fence_every_acquisition() {
        let (clock, time) = Clock::mock();
        let locks = Locks::in_memory(clock);
        let ttl = Duration::from_secs(10);
        let first = locks.acquire("jobs", ttl, Duration::ZERO).await.unwrap();
        assert_eq!(first.fencing, 1);
        match locks.acquire("jobs", ttl, Duration::ZERO).await {
            Err(LockError::Held { expires_in, .. }) => assert_eq!(expires_in, ttl),
            other => panic!("expected Held, got {other:?}"),
        }
        time.advance(Duration::from_secs(6));
        locks.extend("jobs", &first.token, ttl).await.unwrap();
        time.advance(Duration::from_secs(6));
        assert!(
            locks.acquire("jobs", ttl, Duration::ZERO).await.is_err(),
            "extended"
        );
        time.advance(Duration::from_secs(5));
        let second = locks.acquire("jobs", ttl, Duration::ZERO).await.unwrap();
        assert_eq!(second.fencing, 2, "the first lease expired");
        assert!(matches!(
            locks.release("jobs", &first.token).await,
            Err(LockError::NotHolder(_))
        ));
        assert!(matches!(
            locks.extend("jobs", &first.token, ttl).await,
            Err(LockError::NotHolder(_))
        ));
        locks.release("jobs", &second.token).await.unwrap();
        let third = locks.acquire("jobs", ttl, Duration::ZERO).await.unwrap();
        assert_eq!(third.fencing, 3, "numbers keep growing after a release");
        assert_eq!(
            locks
                .acquire("other", ttl, Duration::ZERO)
                .await
                .unwrap()
                .fencing,
            1,
            "each name counts on its own"
        );
    }

    #[test]
    fn names_are_checked() {
        for good in ["a", "reports:daily", "tenant/42@eu-1.x_y"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        for (bad, says) in [
            ("", "1 to 256 bytes"),
            (long.as_str(), "1 to 256 bytes"),
            ("a{b}", "'{' is not allowed"),
            ("a b", "' ' is not allowed"),
            ("a\nb", "'\\n' is not allowed"),
        ] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
