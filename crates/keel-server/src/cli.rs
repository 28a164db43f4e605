//! The `keel` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{LogFormat, Overrides};

/// keel — the performance-and-scalability layer beside your web backend.
#[derive(Debug, Parser)]
#[command(name = "keel", version, about, arg_required_else_help = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `keel serve` flags; they override the file and the environment.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "KEEL_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:7070 (server.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Data directory (server.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format (log.format).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormatArg>,
    /// The gateway's listen address, e.g. 127.0.0.1:8080 (gateway.listen).
    #[arg(long, value_name = "ADDR")]
    pub gateway_listen: Option<SocketAddr>,
    /// The app to put the gateway in front of, e.g. http://127.0.0.1:3000 (gateway.upstream).
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl ServeArgs {
    /// The flags as config overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            log_format: self.log_format.map(|f| match f {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            }),
            gateway_listen: self.gateway_listen,
            upstream: self.upstream.clone(),
        }
    }
}

/// `keel config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file (with the environment applied) and print the effective config,
    /// secrets redacted. Exits non-zero if invalid.
    Check {
        /// The file to check.
        path: PathBuf,
    },
    /// Print a fully commented default keel.toml.
    Default,
    /// Print the Markdown reference of every key (embedded in docs/configuration.md).
    Reference,
}
