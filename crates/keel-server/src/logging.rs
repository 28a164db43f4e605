//! Log setup: human-readable lines or JSON, to stderr. The level filter comes from `KEEL_LOG`,
//! else `RUST_LOG`, else `log.level`. Request logs carry the request id through their span.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Returns an error naming the variable whose filter is invalid.
pub fn init(config: &LogConfig) -> Result<(), String> {
    let (source, directives) = ["KEEL_LOG", "RUST_LOG"]
        .iter()
        .find_map(|name| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (*name, v))
        })
        .unwrap_or(("log.level", config.level.clone()));
    let filter = EnvFilter::builder()
        .parse(&directives)
        .map_err(|e| format!("{source}: invalid log filter {directives:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
    // A subscriber already installed (tests embedding the server) is fine.
    let _ = result;
    Ok(())
}
