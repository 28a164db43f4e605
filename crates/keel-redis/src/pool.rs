//! Where the connections go: one fixed Redis, or the master that a set of Sentinels names.
//!
//! With Sentinels, the master's address is asked for (`SENTINEL get-master-addr-by-name`) on
//! first use and again after any outage or `READONLY` answer (a failover turned the old master
//! into a replica): the connections are then rebuilt for the master the Sentinels name now.
//! The configured URL still gives the scheme, credentials, database and TLS files; only its
//! host and port are replaced.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use keel_core::sync::{read, write};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::RedisError;

/// Sentinels watching the master keel should use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelOptions {
    /// `host:port` of each Sentinel (asked in order until one answers).
    pub addresses: Vec<String>,
    /// The name the Sentinels monitor the master under.
    pub master: String,
}

/// A client and its multiplexed connections to one Redis.
pub(crate) struct Connections {
    /// For connections of their own (subscriptions).
    pub(crate) client: redis::Client,
    pub(crate) managers: Vec<ConnectionManager>,
}

/// How to open connections.
pub(crate) struct Opener {
    pub(crate) url: String,
    pub(crate) tls: Option<redis::TlsCertificates>,
    pub(crate) config: ConnectionManagerConfig,
    pub(crate) size: usize,
    pub(crate) connect_timeout: Duration,
}

impl Opener {
    /// Lazy connections to `url` (they connect on first use and reconnect by themselves).
    fn open(&self, url: &str) -> Result<Arc<Connections>, RedisError> {
        let opened = match &self.tls {
            Some(certificates) => redis::Client::build_with_tls(url, certificates.clone()),
            None => redis::Client::open(url),
        };
        let client = opened.map_err(|e| {
            RedisError::InvalidUrl(match e.detail() {
                Some(detail) => detail.to_owned(),
                None => format!("{:?}", e.kind()),
            })
        })?;
        let managers = (0..self.size.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), self.config.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RedisError::InvalidUrl(format!("{:?}", e.kind())))?;
        Ok(Arc::new(Connections { client, managers }))
    }
}

/// The connections in use.
pub(crate) enum Pool {
    Fixed(Arc<Connections>),
    Sentinel(Box<Followed>),
}

/// Connections to the master the Sentinels name.
pub(crate) struct Followed {
    sentinels: SentinelOptions,
    opener: Opener,
    current: RwLock<Option<Arc<Connections>>>,
    /// One resolution at a time; the others wait for its result.
    resolving: tokio::sync::Mutex<()>,
}

impl Pool {
    pub(crate) fn new(
        opener: Opener,
        sentinels: Option<SentinelOptions>,
    ) -> Result<Self, RedisError> {
        match sentinels {
            None => Ok(Self::Fixed(opener.open(&opener.url)?)),
            Some(sentinels) => {
                if sentinels.addresses.is_empty() {
                    return Err(RedisError::InvalidUrl("no Sentinel addresses".into()));
                }
                // The URL must parse, even though its host is replaced.
                with_address(&opener.url, "127.0.0.1", 6379)?;
                Ok(Self::Sentinel(Box::new(Followed {
                    sentinels,
                    opener,
                    current: RwLock::new(None),
                    resolving: tokio::sync::Mutex::new(()),
                })))
            }
        }
    }

    /// The connections to use now (asking the Sentinels first if needed).
    pub(crate) async fn get(&self) -> Result<Arc<Connections>, RedisError> {
        match self {
            Self::Fixed(connections) => Ok(connections.clone()),
            Self::Sentinel(followed) => {
                let Followed {
                    sentinels,
                    opener,
                    current,
                    resolving,
                } = &**followed;
                if let Some(connections) = read(current).clone() {
                    return Ok(connections);
                }
                let _one = resolving.lock().await;
                if let Some(connections) = read(current).clone() {
                    return Ok(connections);
                }
                let (host, port) = master_address(sentinels, opener.connect_timeout).await?;
                tracing::info!(master = %sentinels.master, %host, port, "Redis master from Sentinel");
                let connections = opener.open(&with_address(&opener.url, &host, port)?)?;
                *write(current) = Some(connections.clone());
                Ok(connections)
            }
        }
    }

    /// After an outage or a `READONLY` answer on `used`: with Sentinels, ask them again on
    /// the next use.
    pub(crate) fn forget(&self, used: &Arc<Connections>) {
        if let Self::Sentinel(followed) = self {
            let mut current = write(&followed.current);
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, used)) {
                *current = None;
            }
        }
    }

    /// Whether the connections follow Sentinels.
    pub(crate) fn follows_sentinels(&self) -> bool {
        matches!(self, Self::Sentinel(_))
    }
}

/// Asks each Sentinel in turn for the master's address.
async fn master_address(
    sentinels: &SentinelOptions,
    timeout: Duration,
) -> Result<(String, u16), RedisError> {
    let mut last = RedisError::Connection("no Sentinel answered".into());
    for address in &sentinels.addresses {
        let ask = async {
            let client = redis::Client::open(format!("redis://{address}"))?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&sentinels.master)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
        };
        match tokio::time::timeout(timeout, ask).await {
            Ok(Ok(Some(master))) => return Ok(master),
            Ok(Ok(None)) => {
                last = RedisError::Connection(format!(
                    "Sentinel {address} does not know a master named {:?}",
                    sentinels.master
                ));
            }
            Ok(Err(e)) => last = RedisError::from(e),
            Err(_) => last = RedisError::Timeout(timeout),
        }
    }
    Err(last)
}

/// `url` with its host and port replaced: `redis://:pw@old:1/2` → `redis://:pw@host:port/2`.
pub(crate) fn with_address(url: &str, host: &str, port: u16) -> Result<String, RedisError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| RedisError::InvalidUrl("a URL needs a scheme, e.g. redis://".into()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let userinfo = authority.rfind('@').map_or("", |at| &authority[..=at]);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Ok(format!("{scheme}://{userinfo}{host}:{port}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_replaced_and_the_rest_kept() {
        let cases = [
            (
                "redis://:pw@master/2",
                "10.0.0.5",
                6380,
                "redis://:pw@10.0.0.5:6380/2",
            ),
            ("rediss://app:pw@x:1", "h", 7, "rediss://app:pw@h:7"),
            ("redis://placeholder", "::1", 6379, "redis://[::1]:6379"),
        ];
        for (url, host, port, expected) in cases {
            assert_eq!(with_address(url, host, port).unwrap(), expected);
        }
        assert!(with_address("no-scheme", "h", 1).is_err());
    }
}
