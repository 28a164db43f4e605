//! The keel server: configuration, assembly and lifecycle, and the `keel` binary's commands.
//!
//! # Layout
//! - [`config`]: the composed [`Config`](config::Config), its sources, schema and rendering.
//! - [`app`]: [`App`] — `App::builder(config).build()` then `App::run(listener, shutdown)` (or
//!   `App::run_on` with the gateway's listener too);
//!   tests run the real server on `127.0.0.1:0` with their own shutdown future.
//! - [`checks`]: the built-in health checks (data dir, disk, memory, process, uptime, Redis).
//! - [`admin_token`]: the admin token generated on first start when no credential is configured.
//! - [`banner`], [`logging`], [`cli`]: what the binary prints, logs and parses.

pub mod admin_token;
pub mod app;
pub mod banner;
pub mod checks;
pub mod cli;
pub mod config;
pub mod logging;

pub use app::{App, AppBuilder, Listeners, StartError};
