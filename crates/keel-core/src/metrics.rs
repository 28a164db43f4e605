//! The Prometheus registry every subsystem adds its series to, served at `/metrics`.

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::BuildInfo;

/// keel's metrics registry: process metrics and build info, plus whatever subsystems register.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// A registry with the process collector (CPU seconds, RSS, open fds, threads, start time)
    /// and `keel_build_info{version,commit} 1`.
    pub fn new(build: &BuildInfo) -> Self {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            // Registration only fails on a duplicate, which a fresh registry cannot have.
            let _ = registry.register(Box::new(pc));
        }
        let info = IntGaugeVec::new(
            Opts::new(
                "keel_build_info",
                "Build information of the running keel (always 1).",
            ),
            &["version", "commit"],
        )
        .expect("static metric definition is valid");
        info.with_label_values(&[build.version, build.commit])
            .set(1);
        let _ = registry.register(Box::new(info));
        Self { registry }
    }

    /// The underlying registry, for subsystems to register their collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers a collector, logging (not failing) on a duplicate name.
    pub fn register<C: prometheus::core::Collector + 'static>(&self, collector: C) {
        if let Err(e) = self.registry.register(Box::new(collector)) {
            tracing::warn!(error = %e, "metric registration failed");
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn encode(&self) -> String {
        let mut buf = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_build_info_and_process_metrics() {
        let metrics = Metrics::new(&BuildInfo::current());
        let text = metrics.encode();
        assert!(text.contains("keel_build_info{commit="), "{text}");
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_threads",
            "process_start_time_seconds",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
    }
}
