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

    /// Monotonic time to within the kernel's timer tick (at most a few milliseconds either
    /// way), read several times faster than [`Clock::now`]: for anchoring long deadlines on hot
    /// paths (a cache write with a five-minute TTL), never for measuring short intervals. The
    /// mock clock answers exactly as [`Clock::now`].
    pub fn now_coarse(&self) -> Instant {
        match &self.mock {
            None => coarse::now(),
            Some(_) => self.now(),
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

/// The coarse monotonic clock as `Instant`s.
mod coarse {
    use super::*;

    /// Linux keeps a monotonic clock updated once per timer tick that the vDSO reads without
    /// touching the time-stamp counter. `Instant` cannot be built from it directly, so readings
    /// are placed relative to one pair of readings, one of each clock, taken together.
    #[cfg(target_os = "linux")]
    pub(super) fn now() -> Instant {
        use rustix::time::{ClockId, clock_gettime};
        use std::sync::OnceLock;
        fn read() -> Duration {
            let t = clock_gettime(ClockId::MonotonicCoarse);
            Duration::new(
                t.tv_sec.max(0) as u64,
                t.tv_nsec.clamp(0, 999_999_999) as u32,
            )
        }
        static ORIGIN: OnceLock<(Instant, Duration)> = OnceLock::new();
        let (instant, coarse) = *ORIGIN.get_or_init(|| (Instant::now(), read()));
        instant + read().saturating_sub(coarse)
    }

    /// Elsewhere, the precise clock.
    #[cfg(not(target_os = "linux"))]
    pub(super) fn now() -> Instant {
        Instant::now()
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
    fn the_coarse_clock_stays_within_a_tick_of_the_precise_one() {
        // Each reading is off by at most a tick (10 ms at HZ=100), plus a tick for the origin
        // pair; being descheduled between the reads only widens the window the check allows.
        let slack = Duration::from_millis(50);
        let clock = Clock::system();
        for _ in 0..1000 {
            let before = clock.now();
            let coarse = clock.now_coarse();
            let after = clock.now();
            assert!(coarse + slack >= before, "{coarse:?} lags {before:?}");
            assert!(coarse <= after + slack, "{coarse:?} leads {after:?}");
        }
        let (mock, _) = Clock::mock();
        assert_eq!(mock.now_coarse(), mock.now());
    }

    #[test]
    fn clones_share_mock_time() {
        let (clock, handle) = Clock::mock();
        let other = clock.clone();
        handle.advance(Duration::from_millis(5));
        assert_eq!(clock.now(), other.now());
    }
}
