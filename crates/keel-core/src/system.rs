//! Host and process sampling, and the bounded ring of samples behind
//! `/api/v1/system/history`.

use crate::sync::lock;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, RefreshKind, System};

/// One reading of the host and of this process.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SystemSnapshot {
    /// CPU use of the whole machine, percent of all cores.
    pub cpu_system_percent: f64,
    /// CPU use of this process, percent of one core (as `top` shows it; up to 100 × cores).
    pub cpu_process_percent: f64,
    /// Number of logical CPUs.
    pub cpu_count: usize,
    /// Total memory of the machine, bytes.
    pub memory_total_bytes: u64,
    /// Memory in use on the machine, bytes.
    pub memory_used_bytes: u64,
    /// Memory in use, percent of total.
    pub memory_used_percent: f64,
    /// Load average over 1, 5 and 15 minutes.
    pub load_average: [f64; 3],
    /// Seconds the machine has been up.
    pub system_uptime_seconds: u64,
    /// Seconds this process has been up.
    pub process_uptime_seconds: u64,
    /// Resident set size of this process, bytes.
    pub process_rss_bytes: u64,
    /// Threads of this process (Linux only; 0 elsewhere).
    pub process_threads: u64,
    /// Open file descriptors of this process (Linux only; 0 elsewhere).
    pub process_open_fds: u64,
}

/// Samples the host and this process. Readings closer together than
/// [`SystemSampler::MIN_INTERVAL`] return the previous snapshot, since CPU use needs a time span.
pub struct SystemSampler {
    state: Mutex<SamplerState>,
    started: Instant,
}

struct SamplerState {
    system: Option<System>,
    pid: Option<Pid>,
    last: Option<(Instant, SystemSnapshot)>,
}

impl SystemSampler {
    /// The shortest span between two fresh readings.
    pub const MIN_INTERVAL: Duration = Duration::from_millis(500);

    /// A sampler; takes a first reading at once so CPU use has a baseline.
    pub fn new() -> Self {
        let system = System::new_with_specifics(RefreshKind::nothing()).ok();
        let sampler = Self {
            state: Mutex::new(SamplerState {
                system,
                pid: sysinfo::get_current_pid().ok(),
                last: None,
            }),
            started: Instant::now(),
        };
        sampler.sample();
        sampler
    }

    /// The latest snapshot, refreshed if the previous one is older than [`Self::MIN_INTERVAL`].
    pub fn sample(&self) -> SystemSnapshot {
        let mut state = lock(&self.state);
        if let Some((at, snap)) = &state.last
            && at.elapsed() < Self::MIN_INTERVAL
        {
            return snap.clone();
        }
        let snap = self.read(&mut state);
        state.last = Some((Instant::now(), snap.clone()));
        snap
    }

    fn read(&self, state: &mut SamplerState) -> SystemSnapshot {
        let mut snap = SystemSnapshot {
            process_uptime_seconds: self.started.elapsed().as_secs(),
            system_uptime_seconds: System::uptime().unwrap_or(0),
            ..SystemSnapshot::default()
        };
        if let Ok(load) = System::load_average() {
            snap.load_average = [load.one, load.five, load.fifteen];
        }
        let pid = state.pid;
        if let Some(system) = state.system.as_mut() {
            system.refresh_cpu_usage();
            system.refresh_memory();
            snap.cpu_system_percent = f64::from(system.global_cpu_usage());
            snap.cpu_count = system.cpus().len();
            snap.memory_total_bytes = system.total_memory();
            snap.memory_used_bytes = system.used_memory();
            if snap.memory_total_bytes > 0 {
                snap.memory_used_percent =
                    snap.memory_used_bytes as f64 * 100.0 / snap.memory_total_bytes as f64;
            }
            if let Some(pid) = pid {
                let kind = ProcessRefreshKind::nothing().with_cpu().with_memory();
                system.refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), true, kind);
                if let Some(p) = system.process(pid) {
                    snap.cpu_process_percent = f64::from(p.cpu_usage());
                    snap.process_rss_bytes = p.memory();
                }
            }
        }
        if snap.cpu_count == 0 {
            snap.cpu_count = std::thread::available_parallelism().map_or(1, |n| n.get());
        }
        let (threads, fds) = proc_self_counts();
        snap.process_threads = threads;
        snap.process_open_fds = fds;
        snap
    }
}

impl Default for SystemSampler {
    fn default() -> Self {
        Self::new()
    }
}

/// Threads and open file descriptors of this process, read from `/proc/self` on Linux.
fn proc_self_counts() -> (u64, u64) {
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    (threads, fds)
}

/// A bounded ring of timestamped samples; the oldest falls out when it is full.
#[derive(Debug)]
pub struct History<T> {
    capacity: usize,
    samples: VecDeque<(u64, T)>,
}

impl<T: Clone> History<T> {
    /// A ring that keeps at most `capacity` samples (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            samples: VecDeque::with_capacity(capacity.min(8192)),
        }
    }

    /// Adds a sample taken at `unix_ms`.
    pub fn push(&mut self, unix_ms: u64, sample: T) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back((unix_ms, sample));
    }

    /// The samples taken in the `window` before `now_ms`, oldest first.
    pub fn window(&self, now_ms: u64, window: Duration) -> Vec<(u64, T)> {
        let from = now_ms.saturating_sub(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        self.samples
            .iter()
            .filter(|(t, _)| *t >= from)
            .cloned()
            .collect()
    }

    /// How many samples are held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// The least-squares slope of `value` over time, in units per hour; `None` with fewer than two
/// samples or no time span.
pub fn slope_per_hour<T>(samples: &[(u64, T)], value: impl Fn(&T) -> f64) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let t0 = samples[0].0 as f64;
    let n = samples.len() as f64;
    let xs: Vec<f64> = samples
        .iter()
        .map(|(t, _)| (*t as f64 - t0) / 3_600_000.0)
        .collect();
    let ys: Vec<f64> = samples.iter().map(|(_, s)| value(s)).collect();
    let mean_x = xs.iter().sum::<f64>() / n;
    let mean_y = ys.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in xs.iter().zip(&ys) {
        num += (x - mean_x) * (y - mean_y);
        den += (x - mean_x) * (x - mean_x);
    }
    (den > 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_reads_this_process() {
        let sampler = SystemSampler::new();
        let snap = sampler.sample();
        assert!(snap.cpu_count >= 1);
        assert!(snap.memory_total_bytes > 0);
        #[cfg(target_os = "linux")]
        {
            assert!(snap.process_rss_bytes > 0);
            assert!(snap.process_threads >= 1);
            assert!(snap.process_open_fds >= 1);
        }
    }

    #[test]
    fn history_is_bounded_and_windowed() {
        let mut h = History::new(3);
        for i in 0..5u64 {
            h.push(i * 10_000, i);
        }
        assert_eq!(h.len(), 3);
        let all = h.window(40_000, Duration::from_secs(3600));
        assert_eq!(
            all.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        let recent = h.window(40_000, Duration::from_secs(10));
        assert_eq!(
            recent.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            vec![3, 4]
        );
    }

    #[test]
    fn slope_of_a_steady_leak_is_its_rate() {
        // 1 MiB every 10 minutes = 6 MiB per hour.
        let samples: Vec<(u64, f64)> = (0..7u64)
            .map(|i| (i * 600_000, (100 + i) as f64 * 1048576.0))
            .collect();
        let slope = slope_per_hour(&samples, |v| *v).unwrap();
        assert!((slope - 6.0 * 1048576.0).abs() < 1.0, "{slope}");
        let flat: Vec<(u64, f64)> = (0..5u64).map(|i| (i * 1000, 42.0)).collect();
        assert_eq!(slope_per_hour(&flat, |v| *v), Some(0.0));
        assert_eq!(slope_per_hour(&flat[..1], |v| *v), None);
    }
}
