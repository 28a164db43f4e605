//! The component health registry behind `/ready`, `/health` and `/health/detailed`.
//!
//! Each subsystem registers checks keyed `component:measurement` (the keys of
//! draft-inadarei-api-health-check). A check is an async function; the registry runs all checks
//! concurrently, each under a timeout (a check that times out is `fail` with output
//! `"timed out"`). Checks marked `affects_readiness` decide `/ready`.

use crate::sync::{read, write};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinSet;

/// The status of one check or of the whole service. Ordered: `Pass < Warn < Fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Healthy.
    Pass,
    /// Healthy, with a concern (degraded, near a limit, a fallback in use).
    Warn,
    /// Unhealthy.
    Fail,
}

/// What one check observed.
#[derive(Debug, Clone, Serialize)]
pub struct CheckOutcome {
    /// The check's verdict.
    pub status: HealthStatus,
    /// The measured value, if any.
    #[serde(rename = "observedValue", skip_serializing_if = "Option::is_none")]
    pub observed_value: Option<Value>,
    /// The unit of `observed_value` (e.g. `percent`, `bytes`, `s`).
    #[serde(rename = "observedUnit", skip_serializing_if = "Option::is_none")]
    pub observed_unit: Option<String>,
    /// A human explanation, set for `warn` and `fail`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

impl CheckOutcome {
    /// A passing outcome with no measurement.
    pub fn pass() -> Self {
        Self {
            status: HealthStatus::Pass,
            observed_value: None,
            observed_unit: None,
            output: None,
        }
    }

    /// A failing outcome with an explanation.
    pub fn fail(output: impl Into<String>) -> Self {
        Self {
            status: HealthStatus::Fail,
            output: Some(output.into()),
            ..Self::pass()
        }
    }

    /// A warning outcome with an explanation.
    pub fn warn(output: impl Into<String>) -> Self {
        Self {
            status: HealthStatus::Warn,
            output: Some(output.into()),
            ..Self::pass()
        }
    }

    /// Attaches a measurement.
    pub fn observed(mut self, value: impl Into<Value>, unit: &str) -> Self {
        self.observed_value = Some(value.into());
        self.observed_unit = Some(unit.to_owned());
        self
    }
}

/// A boxed check future.
pub type CheckFuture = Pin<Box<dyn Future<Output = CheckOutcome> + Send>>;

/// A health check: a function producing a fresh check future each time it runs.
pub type HealthCheck = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// How a check is named and what it decides.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    /// The component, e.g. `datadir`, `redis`, `cache`.
    pub component: String,
    /// What is measured, e.g. `writable`, `connection`, `utilization`.
    pub measurement: String,
    /// The kind of component: `component`, `datastore`, `system`.
    pub component_type: String,
    /// Whether a `fail` of this check makes `/ready` answer 503.
    pub affects_readiness: bool,
}

impl CheckSpec {
    /// A spec for `component:measurement` of the given type, not affecting readiness.
    pub fn new(component: &str, measurement: &str, component_type: &str) -> Self {
        Self {
            component: component.to_owned(),
            measurement: measurement.to_owned(),
            component_type: component_type.to_owned(),
            affects_readiness: false,
        }
    }

    /// Marks the check as required for readiness.
    pub fn required(mut self) -> Self {
        self.affects_readiness = true;
        self
    }

    /// The `component:measurement` key.
    pub fn key(&self) -> String {
        format!("{}:{}", self.component, self.measurement)
    }
}

/// The result of running one check.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// Which check this is.
    pub spec: CheckSpec,
    /// What it observed.
    pub outcome: CheckOutcome,
    /// When it finished.
    pub time: SystemTime,
}

/// The results of a run of checks, in registration order.
#[derive(Debug, Clone)]
pub struct HealthReport {
    /// Every check's result.
    pub results: Vec<CheckResult>,
}

impl HealthReport {
    /// The worst status of all checks (`pass` when there are none).
    pub fn status(&self) -> HealthStatus {
        self.results
            .iter()
            .map(|r| r.outcome.status)
            .max()
            .unwrap_or(HealthStatus::Pass)
    }

    /// The checks that affect readiness and fail.
    pub fn failing_required(&self) -> impl Iterator<Item = &CheckResult> {
        self.results
            .iter()
            .filter(|r| r.spec.affects_readiness && r.outcome.status == HealthStatus::Fail)
    }
}

/// The registry of health checks.
#[derive(Clone)]
pub struct HealthRegistry {
    checks: Arc<RwLock<Vec<(CheckSpec, HealthCheck)>>>,
    timeout: Duration,
}

impl HealthRegistry {
    /// An empty registry whose checks time out after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            checks: Arc::default(),
            timeout,
        }
    }

    /// Registers a check. A check registered twice under the same key replaces the first.
    pub fn register<F, Fut>(&self, spec: CheckSpec, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckOutcome> + Send + 'static,
    {
        let check: HealthCheck = Arc::new(move || Box::pin(check()) as CheckFuture);
        let mut checks = write(&self.checks);
        let key = spec.key();
        checks.retain(|(s, _)| s.key() != key);
        checks.push((spec, check));
    }

    /// The keys of all registered checks.
    pub fn keys(&self) -> Vec<String> {
        let checks = read(&self.checks);
        checks.iter().map(|(s, _)| s.key()).collect()
    }

    /// Runs every check concurrently.
    pub async fn run_all(&self) -> HealthReport {
        self.run(|_| true).await
    }

    /// Runs only the checks that affect readiness.
    pub async fn run_readiness(&self) -> HealthReport {
        self.run(|s| s.affects_readiness).await
    }

    async fn run(&self, filter: impl Fn(&CheckSpec) -> bool) -> HealthReport {
        let selected: Vec<(CheckSpec, HealthCheck)> = {
            let checks = read(&self.checks);
            checks.iter().filter(|(s, _)| filter(s)).cloned().collect()
        };
        let mut set = JoinSet::new();
        for (index, (_, check)) in selected.iter().enumerate() {
            let fut = check();
            let timeout = self.timeout;
            set.spawn(async move {
                let outcome = match tokio::time::timeout(timeout, fut).await {
                    Ok(outcome) => outcome,
                    Err(_) => CheckOutcome::fail("timed out"),
                };
                (index, outcome, SystemTime::now())
            });
        }
        let mut slots: Vec<Option<(CheckOutcome, SystemTime)>> = vec![None; selected.len()];
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((index, outcome, time)) => slots[index] = Some((outcome, time)),
                Err(e) => tracing::error!(error = %e, "health check task panicked"),
            }
        }
        let results = selected
            .into_iter()
            .zip(slots)
            .map(|((spec, _), slot)| {
                let (outcome, time) = slot
                    .unwrap_or_else(|| (CheckOutcome::fail("check panicked"), SystemTime::now()));
                CheckResult {
                    spec,
                    outcome,
                    time,
                }
            })
            .collect();
        HealthReport { results }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_checks_and_takes_worst_status() {
        let registry = HealthRegistry::new(Duration::from_secs(2));
        registry.register(CheckSpec::new("a", "x", "component"), || async {
            CheckOutcome::pass().observed(3, "items")
        });
        registry.register(CheckSpec::new("b", "y", "component"), || async {
            CheckOutcome::warn("near limit")
        });
        let report = registry.run_all().await;
        assert_eq!(report.results.len(), 2);
        assert_eq!(report.results[0].spec.key(), "a:x");
        assert_eq!(report.status(), HealthStatus::Warn);
        assert_eq!(report.failing_required().count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_that_hangs_fails_with_timed_out() {
        let registry = HealthRegistry::new(Duration::from_secs(2));
        registry.register(
            CheckSpec::new("slow", "ping", "datastore").required(),
            || async {
                std::future::pending::<()>().await;
                CheckOutcome::pass()
            },
        );
        let report = registry.run_readiness().await;
        assert_eq!(report.status(), HealthStatus::Fail);
        let failing: Vec<_> = report.failing_required().collect();
        assert_eq!(failing.len(), 1);
        assert_eq!(failing[0].outcome.output.as_deref(), Some("timed out"));
    }

    #[tokio::test]
    async fn readiness_runs_only_required_checks_and_reregistering_replaces() {
        let registry = HealthRegistry::new(Duration::from_secs(2));
        registry.register(CheckSpec::new("opt", "x", "component"), || async {
            CheckOutcome::fail("optional")
        });
        registry.register(
            CheckSpec::new("req", "x", "component").required(),
            || async { CheckOutcome::fail("first") },
        );
        registry.register(
            CheckSpec::new("req", "x", "component").required(),
            || async { CheckOutcome::pass() },
        );
        assert_eq!(registry.keys(), vec!["opt:x", "req:x"]);
        let report = registry.run_readiness().await;
        assert_eq!(report.results.len(), 1);
        assert_eq!(report.status(), HealthStatus::Pass);
    }
}
