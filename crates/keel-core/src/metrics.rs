//! The Prometheus registry every subsystem adds its series to, served at `/metrics`.

use std::collections::HashMap;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
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

/// Whether a pulled series is a counter or a gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One series definition of a [`PullCollector`].
#[derive(Debug, Clone)]
pub struct SeriesDef {
    /// Metric name, e.g. `keel_cache_hits_total`.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Label names (values come with each sample).
    pub labels: &'static [&'static str],
}

/// One sample: the series' index in the definitions, label values, and the value.
pub type PulledSample = (usize, Vec<String>, f64);

/// A collector whose values are read from a function at scrape time — for subsystems that
/// already keep exact counters (the cache's statistics) and should not count twice.
pub struct PullCollector {
    defs: Vec<SeriesDef>,
    descs: Vec<Desc>,
    read: Box<dyn Fn() -> Vec<PulledSample> + Send + Sync>,
}

impl PullCollector {
    /// A collector for `defs`, reading samples from `read` on every scrape.
    pub fn new(
        defs: Vec<SeriesDef>,
        read: impl Fn() -> Vec<PulledSample> + Send + Sync + 'static,
    ) -> Self {
        let descs = defs
            .iter()
            .map(|d| {
                Desc::new(
                    d.name.to_owned(),
                    d.help.to_owned(),
                    d.labels.iter().map(|l| (*l).to_owned()).collect(),
                    HashMap::new(),
                )
                .expect("static metric definition is valid")
            })
            .collect();
        Self {
            defs,
            descs,
            read: Box::new(read),
        }
    }
}

impl Collector for PullCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families: Vec<MetricFamily> = self
            .defs
            .iter()
            .map(|d| {
                let mut f = MetricFamily::default();
                f.set_name(d.name.to_owned());
                f.set_help(d.help.to_owned());
                f.set_field_type(match d.kind {
                    Kind::Counter => MetricType::COUNTER,
                    Kind::Gauge => MetricType::GAUGE,
                });
                f
            })
            .collect();
        let mut metrics: Vec<Vec<proto::Metric>> = vec![Vec::new(); self.defs.len()];
        for (index, values, value) in (self.read)() {
            let Some(def) = self.defs.get(index) else {
                continue;
            };
            let mut m = proto::Metric::default();
            let labels = def
                .labels
                .iter()
                .zip(values)
                .map(|(name, v)| {
                    let mut pair = proto::LabelPair::default();
                    pair.set_name((*name).to_owned());
                    pair.set_value(v);
                    pair
                })
                .collect();
            m.set_label(labels);
            match def.kind {
                Kind::Counter => {
                    let mut c = proto::Counter::default();
                    c.set_value(value);
                    m.set_counter(c);
                }
                Kind::Gauge => {
                    let mut g = proto::Gauge::default();
                    g.set_value(value);
                    m.set_gauge(g);
                }
            }
            metrics[index].push(m);
        }
        for (family, ms) in families.iter_mut().zip(metrics) {
            family.set_metric(ms);
        }
        families.retain(|f| !f.get_metric().is_empty());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulled_series_are_read_at_scrape_time() {
        let metrics = Metrics::new(&BuildInfo::current());
        let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let read = counter.clone();
        metrics.register(PullCollector::new(
            vec![
                SeriesDef {
                    name: "t_hits_total",
                    help: "Hits.",
                    kind: Kind::Counter,
                    labels: &[],
                },
                SeriesDef {
                    name: "t_removed_total",
                    help: "Removed.",
                    kind: Kind::Counter,
                    labels: &["cause"],
                },
            ],
            move || {
                let n = read.load(std::sync::atomic::Ordering::Relaxed) as f64;
                vec![
                    (0, vec![], n),
                    (1, vec!["size".into()], 2.0),
                    (1, vec!["expired".into()], 3.0),
                ]
            },
        ));
        counter.store(41, std::sync::atomic::Ordering::Relaxed);
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE t_hits_total counter\nt_hits_total 41"),
            "{text}"
        );
        assert!(text.contains("t_removed_total{cause=\"size\"} 2"), "{text}");
        assert!(
            text.contains("t_removed_total{cause=\"expired\"} 3"),
            "{text}"
        );
    }

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
