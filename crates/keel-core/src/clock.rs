//! Injectable time.
//!
//! Everything time-dependent in keel (TTLs, rate windows, breaker cool-downs, backoff, sampling)
//! reads a [`Clock`] instead of calling `Instant::now()` directly, so tests can move time forward
//! with a [`MockClock`] rather than sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of monotonic and wall-clock time. Cheap to clone.
#[derive(Clone)]
pub struct Clock {
    mock: Option<Arc<MockState>>,
}

struct MockState {
    start: Instant,
    start_unix_ms: u64,
    offset_ns: AtomicU64,
}

/// The handle a test keeps to advance a mock [`Clock`].
#[derive(Clone)]
pub struct MockClock {
    state: Arc<MockState>,
}

impl Clock {
    /// The real clock of the operating system.
    pub fn system() -> Self {
        Self { mock: None }
    }

    /// A clock that stands still until the returned [`MockClock`] advances it.
    pub fn mock() -> (Self, MockClock) {
        let state = Arc::new(MockState {
            start: Instant::now(),
            start_unix_ms: unix_ms(SystemTime::now()),
            offset_ns: AtomicU64::new(0),
        });
        (
            Self {
                mock: Some(state.clone()),
            },
            MockClock { state },
        )
    }

    /// Monotonic time, for measuring intervals and deadlines.
    pub fn now(&self) -> Instant {
        match &self.mock {
            None => Instant::now(),
            Some(m) => m.start + Duration::from_nanos(m.offset_ns.load(Ordering::Acquire)),
        }
    }

    /// Wall-clock time in milliseconds since the Unix epoch, for timestamps shown to people.
    pub fn unix_ms(&self) -> u64 {
        match &self.mock {
            None => unix_ms(SystemTime::now()),
            Some(m) => m.start_unix_ms + m.offset_ns.load(Ordering::Acquire) / 1_000_000,
        }
    }

    /// Whether this is a mock clock.
    pub fn is_mock(&self) -> bool {
        self.mock.is_some()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_mock() {
            "Clock::mock"
        } else {
            "Clock::system"
        })
    }
}

impl MockClock {
    /// Moves the mock time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.state.offset_ns.fetch_add(ns, Ordering::AcqRel);
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_clock_moves_only_when_advanced() {
        let (clock, handle) = Clock::mock();
        let t0 = clock.now();
        let w0 = clock.unix_ms();
        assert_eq!(clock.now(), t0);
        handle.advance(Duration::from_secs(90));
        assert_eq!(clock.now() - t0, Duration::from_secs(90));
        assert_eq!(clock.unix_ms() - w0, 90_000);
    }

    #[test]
    fn clones_share_mock_time() {
        let (clock, handle) = Clock::mock();
        let other = clock.clone();
        handle.advance(Duration::from_millis(5));
        assert_eq!(clock.now(), other.now());
    }
}
