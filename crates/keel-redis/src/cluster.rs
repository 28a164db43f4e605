//! What keel does itself on a Redis Cluster, beyond the client crate's routing of single
//! commands: pipelines split by slot, scripts loaded on the node that lacks them, and `SCAN`
//! over every master in turn.

use futures_util::future::try_join_all;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Value};

use crate::RedisError;
use crate::pipe::{Destination, Part, Pipeline};
use crate::pool::Cluster;

/// Bits of a keel cluster `SCAN` cursor that hold the node's own cursor; the bits above say
/// which master (in address order) is being scanned. A node's cursor never needs them all
/// (it is below the size of the node's key table).
const NODE_CURSOR_BITS: u32 = 54;
const NODE_CURSOR_MASK: u64 = (1 << NODE_CURSOR_BITS) - 1;

/// Whether `e` is Redis saying it does not know a script.
pub(crate) fn is_noscript(e: &redis::RedisError) -> bool {
    e.code() == Some("NOSCRIPT")
}

/// Runs `pipe` on the Cluster, one pipeline per slot, concurrently; a part whose node answers
/// NOSCRIPT has `loads` (SCRIPT LOAD commands) run there at once (MULTI) and is sent again.
/// Returns the answers of the kept commands in order, as one array.
pub(crate) async fn run_split(
    conn: &ClusterConnection,
    pipe: &Pipeline,
    loads: &[Cmd],
) -> redis::RedisResult<Value> {
    if pipe.is_transaction() {
        // One slot only, as the Cluster requires; the client crate says so if not.
        let mut conn = conn.clone();
        return pipe.as_redis().query_async(&mut conn).await;
    }
    let parts = pipe.split();
    let answers =
        try_join_all(parts.iter().map(|part| run_part(conn.clone(), part, loads))).await?;
    let mut ordered: Vec<Option<Value>> = vec![None; pipe.len()];
    for (part, values) in parts.iter().zip(answers) {
        for (&position, value) in part.positions.iter().zip(values) {
            ordered[position] = Some(value);
        }
    }
    let kept = ordered
        .into_iter()
        .enumerate()
        .filter(|(i, _)| pipe.kept(*i))
        .map(|(_, v)| v.unwrap_or(Value::Nil))
        .collect();
    Ok(Value::Array(kept))
}

async fn run_part(
    mut conn: ClusterConnection,
    part: &Part,
    loads: &[Cmd],
) -> redis::RedisResult<Vec<Value>> {
    match part.pipeline.query_async::<Vec<Value>>(&mut conn).await {
        Err(e) if is_noscript(&e) && !loads.is_empty() => {
            let Destination::Slot(route) = part.destination else {
                return Err(e);
            };
            let mut load = redis::pipe();
            load.atomic();
            for cmd in loads {
                load.add_command(cmd.clone());
            }
            conn.route_pipeline(
                load,
                loads.len() + 1,
                1,
                SingleNodeRoutingInfo::SpecificNode(route),
            )
            .await?;
            part.pipeline.query_async(&mut conn).await
        }
        other => other,
    }
}

/// The masters' addresses, in order (so a cursor means the same node from call to call while
/// the Cluster's shape holds).
async fn masters(conn: &mut ClusterConnection) -> redis::RedisResult<Vec<(String, u16)>> {
    let slots = conn
        .route_command(
            redis::cmd("CLUSTER").arg("SLOTS").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    let ranges: Vec<Vec<Value>> = redis::from_redis_value(slots)?;
    let mut masters: Vec<(String, u16)> = ranges
        .iter()
        .filter_map(|range| {
            let node: Vec<Value> = redis::from_redis_value_ref(range.get(2)?).ok()?;
            let host: String = redis::from_redis_value_ref(node.first()?).ok()?;
            let port: u16 = redis::from_redis_value_ref(node.get(1)?).ok()?;
            Some((host, port))
        })
        .collect();
    masters.sort();
    masters.dedup();
    Ok(masters)
}

/// One `SCAN` step over the Cluster: masters one after the other. The cursor carries which
/// master is being scanned; 0 starts at the first and is returned after the last.
pub(crate) async fn scan(
    conn: &ClusterConnection,
    cursor: u64,
    pattern: &str,
    count: usize,
) -> redis::RedisResult<(u64, Vec<String>)> {
    let mut conn = conn.clone();
    let masters = masters(&mut conn).await?;
    let index = (cursor >> NODE_CURSOR_BITS) as usize;
    let Some((host, port)) = masters.get(index) else {
        return Ok((0, Vec::new()));
    };
    let answer = conn
        .route_command(
            redis::cmd("SCAN")
                .arg(cursor & NODE_CURSOR_MASK)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(count)
                .clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port: *port,
            }),
        )
        .await?;
    let (next, keys): (u64, Vec<String>) = redis::from_redis_value(answer)?;
    let next = if next > NODE_CURSOR_MASK {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "SCAN cursor out of range",
        )));
    } else if next != 0 {
        ((index as u64) << NODE_CURSOR_BITS) | next
    } else if index + 1 < masters.len() {
        ((index as u64) + 1) << NODE_CURSOR_BITS
    } else {
        0
    };
    Ok((next, keys))
}

/// A connection subscribed to `channel` on the first seed node that answers: a node relays
/// every `PUBLISH` of the Cluster to its subscribers, so any one will do.
pub(crate) async fn subscribe(
    cluster: &Cluster,
    channel: &str,
) -> Result<redis::aio::PubSub, RedisError> {
    let mut last = RedisError::Connection("no Cluster node to subscribe on".into());
    for url in &cluster.seeds {
        let subscribed = async {
            let client = match &cluster.tls {
                Some(certificates) => {
                    redis::Client::build_with_tls(url.as_str(), certificates.clone())?
                }
                None => redis::Client::open(url.as_str())?,
            };
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match subscribed.await {
            Ok(pubsub) => return Ok(pubsub),
            Err(e) => last = RedisError::from(e),
        }
    }
    Err(last)
}
