//! Telling the other instances that jobs were added: every add publishes `<instance> <queue>`
//! on `<prefix>queue:added`, and an instance whose [`Queues`](keel_queue::Queues) asks
//! ([`Store::added_elsewhere`](keel_queue::Store::added_elsewhere)) subscribes, so its waiting
//! fetches wake at once instead of at their next look (every 250 ms). A message lost while the
//! subscription is down costs only that wait.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;

use crate::Redis;

const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// The message an add publishes.
pub(super) fn message(instance: &str, queue: &str) -> String {
    format!("{instance} {queue}")
}

/// Subscribes to `channel` (again after every break, with backoff) and passes on the queues of
/// other instances' adds, until nobody listens.
pub(super) async fn listen(
    redis: Redis,
    channel: String,
    instance: String,
    added: broadcast::Sender<String>,
) {
    let mut pause = RETRY_MIN;
    while added.receiver_count() > 0 {
        let pubsub = match redis.subscribe(&channel).await {
            Ok(pubsub) => pubsub,
            Err(e) => {
                tracing::debug!(error = %e, "job adds of other instances: cannot subscribe yet");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
                continue;
            }
        };
        pause = RETRY_MIN;
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let Ok(text) = message.get_payload::<String>() else {
                continue;
            };
            let Some((from, queue)) = text.split_once(' ') else {
                continue;
            };
            if from != instance && added.send(queue.to_owned()).is_err() {
                return;
            }
        }
        tracing::debug!("job adds of other instances: subscription lost; subscribing again");
    }
}
