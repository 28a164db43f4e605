//! Reading, merging and validating configuration.
//!
//! Precedence, lowest first: defaults, the TOML file, environment variables, command-line
//! flags. Every source is merged into one TOML table, which is then deserialized once, so an
//! error names the key path wherever the value came from (and says which variable or flag set
//! it, when not the file).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::schema::{Kind, config_tree};
use super::{Config, LogFormat};

/// Values given on the command line; they win over every other source.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--gateway-listen`.
    pub gateway_listen: Option<SocketAddr>,
    /// `--upstream`.
    pub upstream: Option<String>,
}

/// Where configuration comes from.
pub struct ConfigSources<'a> {
    /// The TOML file, if any.
    pub file: Option<&'a Path>,
    /// Looks up an environment variable (the process environment, or a map in tests).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Command-line flags.
    pub overrides: Overrides,
}

/// Why the configuration cannot be used. Each message names the file, key or variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// An environment variable's value has the wrong type.
    #[error("environment variable {name}: {reason}")]
    Env {
        /// The variable.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A key is unknown or its value is invalid.
    #[error("{field}: {reason}{origin}")]
    Field {
        /// The key path, e.g. `server.listen`.
        field: String,
        /// What is wrong and how to fix it.
        reason: String,
        /// ` (set by …)` when the value came from the environment or a flag.
        origin: String,
    },
}

/// The environment variables Node deployments set for Redis, and the keys they fill.
/// `KEEL_REDIS_*` variables win over these.
pub const REDIS_ALIASES: &[(&str, &str, Kind)] = &[
    ("REDIS_URL", "url", Kind::String),
    ("REDIS_HOST", "host", Kind::String),
    ("REDIS_PORT", "port", Kind::Integer),
    ("REDIS_PASSWORD", "password", Kind::String),
    ("REDIS_DB", "db", Kind::Integer),
    ("REDIS_KEY_PREFIX", "key_prefix", Kind::String),
];

/// Loads, merges and validates the configuration.
pub fn load(sources: &ConfigSources<'_>) -> Result<Config, ConfigError> {
    let mut table = match sources.file {
        Some(path) => read_file(path)?,
        None => Table::new(),
    };
    let mut origin: HashMap<String, String> = HashMap::new();

    for (name, field, kind) in REDIS_ALIASES {
        if let Some(raw) = (sources.env)(name).filter(|v| !v.is_empty()) {
            let value = env_value(name, &raw, kind)?;
            set(
                &mut table,
                &["redis", field],
                value,
                &mut origin,
                format!("environment variable {name}"),
            )?;
        }
    }
    for key in config_tree().all_keys() {
        let name = key.env_name();
        if let Some(raw) = (sources.env)(&name).filter(|v| !v.is_empty()) {
            let value = env_value(&name, &raw, &key.kind)?;
            let path: Vec<&str> = key.path.iter().map(String::as_str).collect();
            set(
                &mut table,
                &path,
                value,
                &mut origin,
                format!("environment variable {name}"),
            )?;
        }
    }
    apply_overrides(&mut table, &sources.overrides, &mut origin)?;

    let config: Config = serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
        let (field, reason) = split_path_error(&e.path().to_string(), &e.inner().to_string());
        field_error(field, reason, &origin)
    })?;
    config
        .validate()
        .map_err(|e| field_error(e.field, e.reason, &origin))?;
    Ok(config)
}

fn read_file(path: &Path) -> Result<Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<Table>().map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        message: e.to_string().trim().replace('\n', " ").replace("  ", " "),
    })
}

fn apply_overrides(
    table: &mut Table,
    o: &Overrides,
    origin: &mut HashMap<String, String>,
) -> Result<(), ConfigError> {
    if let Some(listen) = o.listen {
        set(
            table,
            &["server", "listen"],
            Value::String(listen.to_string()),
            origin,
            "--listen".into(),
        )?;
    }
    if let Some(dir) = &o.data_dir {
        let dir = Value::String(dir.to_string_lossy().into_owned());
        set(
            table,
            &["server", "data_dir"],
            dir,
            origin,
            "--data-dir".into(),
        )?;
    }
    if let Some(format) = o.log_format {
        let text = match format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        set(
            table,
            &["log", "format"],
            Value::String(text.into()),
            origin,
            "--log-format".into(),
        )?;
    }
    if let Some(listen) = o.gateway_listen {
        set(
            table,
            &["gateway", "listen"],
            Value::String(listen.to_string()),
            origin,
            "--gateway-listen".into(),
        )?;
    }
    if let Some(upstream) = &o.upstream {
        set(
            table,
            &["gateway", "upstream"],
            Value::String(upstream.clone()),
            origin,
            "--upstream".into(),
        )?;
    }
    Ok(())
}

fn set(
    table: &mut Table,
    path: &[&str],
    value: Value,
    origin: &mut HashMap<String, String>,
    source: String,
) -> Result<(), ConfigError> {
    let (last, parents) = path.split_last().expect("key paths are never empty");
    let mut current = table;
    for (depth, part) in parents.iter().enumerate() {
        let entry = current
            .entry((*part).to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        current = match entry {
            Value::Table(t) => t,
            _ => {
                return Err(ConfigError::Field {
                    field: path[..=depth].join("."),
                    reason: "must be a table".to_owned(),
                    origin: String::new(),
                });
            }
        };
    }
    current.insert((*last).to_owned(), value);
    origin.insert(path.join("."), source);
    Ok(())
}

fn env_value(name: &str, raw: &str, kind: &Kind) -> Result<Value, ConfigError> {
    let bad = |what: &str| ConfigError::Env {
        name: name.to_owned(),
        reason: format!("expected {what}, got {raw:?}"),
    };
    Ok(match kind {
        Kind::String => Value::String(raw.to_owned()),
        Kind::Integer => Value::Integer(raw.trim().parse().map_err(|_| bad("a whole number"))?),
        Kind::Number => Value::Float(raw.trim().parse().map_err(|_| bad("a number"))?),
        Kind::Boolean => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::Boolean(true),
            "false" | "0" | "no" | "off" => Value::Boolean(false),
            _ => return Err(bad("true or false")),
        },
        Kind::List => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
    })
}

/// The key path and a one-line reason (toml appends an "in `table`" line; the path says that).
fn split_path_error(path: &str, message: &str) -> (String, String) {
    let field = if path == "." || path.is_empty() {
        "(top level)".to_owned()
    } else {
        path.to_owned()
    };
    let first_line = message.lines().next().unwrap_or_default();
    let reason = match first_line.strip_prefix("unknown field `") {
        Some(rest) => {
            let expected = rest
                .split_once('`')
                .map_or("", |(_, tail)| tail.trim_start_matches(", "));
            format!("unknown key; {expected}")
        }
        None => first_line.to_owned(),
    };
    (field, reason)
}

fn field_error(field: String, reason: String, origin: &HashMap<String, String>) -> ConfigError {
    let origin = origin
        .get(&field)
        .map(|source| format!(" (set by {source})"))
        .unwrap_or_default();
    ConfigError::Field {
        field,
        reason,
        origin,
    }
}

#[cfg(test)]
mod tests;
