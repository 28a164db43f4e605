//! Where the connections go: one fixed Redis, the master that a set of Sentinels names, or a
//! Redis Cluster.
//!
//! With Sentinels, the master's address is asked for (`SENTINEL get-master-addr-by-name`) on
//! first use and again after any outage or `READONLY` answer (a failover turned the old master
//! into a replica): the connections are then rebuilt for the master the Sentinels name now.
//! The configured URL still gives the scheme, credentials, database and TLS files; only its
//! host and port are replaced.
//!
//! A Cluster is reached through the client crate's cluster connection: it learns which node
//! serves which slot from the seed nodes, sends each command to its slot's node, follows
//! `MOVED`/`ASK` redirections and refreshes its map after a failover or a resharding.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use keel_core::sync::{read, write};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisFuture, Value};

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

/// One connection handed to an operation: to one Redis, or to a Cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Connections to a Redis Cluster.
pub(crate) struct Cluster {
    /// The seed nodes' URLs (the configured URL with each seed's host and port), for
    /// subscriptions: a plain connection to any node hears every node's `PUBLISH`.
    pub(crate) seeds: Vec<String>,
    pub(crate) tls: Option<redis::TlsCertificates>,
    pub(crate) connection: ClusterConnection,
}

/// How to open connections.
pub(crate) struct Opener {
    pub(crate) url: String,
    pub(crate) tls: Option<redis::TlsCertificates>,
    pub(crate) config: ConnectionManagerConfig,
    pub(crate) size: usize,
    pub(crate) connect_timeout: Duration,
    /// The longest a cluster connection waits for an answer (operations have shorter timeouts
    /// of their own).
    pub(crate) response_timeout: Duration,
}

impl Opener {
    /// A lazy connection to the Cluster that `seeds` (`host:port`) belong to: it connects in
    /// the background and maps the slots on first use.
    fn open_cluster(&self, seeds: &[String]) -> Result<Cluster, RedisError> {
        let urls = seeds
            .iter()
            .map(|seed| {
                let (host, port) = split_address(seed)?;
                with_address(&self.url, host, port)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut builder = ClusterClientBuilder::new(urls.clone());
        if let Some(certificates) = &self.tls {
            builder = builder.certs(certificates.clone());
        }
        let client = builder.build().map_err(invalid_url)?;
        // The timeouts: the config given to the connection takes precedence over the builder's.
        let config = redis::cluster::ClusterConfig::new()
            .set_connection_timeout(self.connect_timeout)
            .set_response_timeout(self.response_timeout);
        Ok(Cluster {
            seeds: urls,
            tls: self.tls.clone(),
            connection: client.get_pending_async_connection_with_config(config),
        })
    }

    /// Lazy connections to `url` (they connect on first use and reconnect by themselves).
    fn open(&self, url: &str) -> Result<Arc<Connections>, RedisError> {
        let opened = match &self.tls {
            Some(certificates) => redis::Client::build_with_tls(url, certificates.clone()),
            None => redis::Client::open(url),
        };
        let client = opened.map_err(invalid_url)?;
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
    Cluster(Box<Cluster>),
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
        cluster: &[String],
    ) -> Result<Self, RedisError> {
        if !cluster.is_empty() {
            if sentinels.is_some() {
                return Err(RedisError::InvalidUrl(
                    "a Cluster is not followed through Sentinels: give one or the other".into(),
                ));
            }
            return Ok(Self::Cluster(Box::new(opener.open_cluster(cluster)?)));
        }
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

    /// The connections to use now (asking the Sentinels first if needed). Not for a Cluster
    /// (see [`Pool::cluster`]).
    pub(crate) async fn get(&self) -> Result<Arc<Connections>, RedisError> {
        match self {
            Self::Fixed(connections) => Ok(connections.clone()),
            Self::Cluster(_) => Err(RedisError::Connection(
                "a Redis Cluster has no single connection".into(),
            )),
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

    /// The Cluster connections, if this is a Cluster.
    pub(crate) fn cluster(&self) -> Option<&Cluster> {
        match self {
            Self::Cluster(cluster) => Some(cluster),
            _ => None,
        }
    }
}

/// A URL the client crate refused, said without the URL (it may carry a password).
fn invalid_url(e: redis::RedisError) -> RedisError {
    RedisError::InvalidUrl(match e.detail() {
        Some(detail) => detail.to_owned(),
        None => format!("{:?}", e.kind()),
    })
}

/// `host:port` (or `[v6]:port`) as host and port.
pub(crate) fn split_address(address: &str) -> Result<(&str, u16), RedisError> {
    let bad = || RedisError::InvalidUrl(format!("{address:?} is not host:port"));
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse::<u16>().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
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
