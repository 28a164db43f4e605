//! Shared plumbing every keel subsystem builds on.
//!
//! # Layout
//! - [`clock`]: the injectable [`Clock`]; every TTL, window, cool-down and backoff reads it.
//! - [`shutdown`]: [`Shutdown`], the one signal that starts a graceful stop.
//! - [`health`]: the component [`HealthRegistry`] behind `/ready` and `/health/detailed`.
//! - [`metrics`]: the Prometheus [`Metrics`] registry every subsystem adds its series to.
//! - [`system`]: host and process sampling ([`SystemSampler`]) and the bounded [`History`] ring.
//! - [`units`]: config value types — [`HumanDuration`] (`"30s"`), [`ByteSize`] (`"256MiB"`),
//!   [`Secret`] (never printed).
//! - [`problem`]: RFC 9457 `application/problem+json` errors ([`Problem`]).
//! - [`sync`]: poison-tolerant lock helpers.
//! - [`build`]: version and commit of this build ([`BuildInfo`]).

pub mod build;
pub mod clock;
pub mod health;
pub mod metrics;
pub mod problem;
pub mod shutdown;
pub mod sync;
pub mod system;
pub mod units;

pub use build::BuildInfo;
pub use clock::{Clock, MockClock};
pub use health::{CheckOutcome, HealthCheck, HealthRegistry, HealthStatus};
pub use metrics::Metrics;
pub use problem::Problem;
pub use shutdown::Shutdown;
pub use system::{History, SystemSampler};
pub use units::{ByteSize, HumanDuration, Secret};
