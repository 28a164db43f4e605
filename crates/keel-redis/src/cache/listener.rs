//! Receiving other instances' invalidations: a subscription of its own, re-established with
//! backoff whenever it breaks. Each (re)subscription empties L1 first — invalidations sent
//! while it was down are lost — and while it is down L1 is trusted for `cache.l1_staleness`
//! only. The same task publishes this instance's statistics every two seconds.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use keel_cache::Glob;
use keel_core::sync::lock;

use super::{Inner, Op, STATS_EVERY};

const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Runs until the cache is dropped.
pub(crate) async fn run(cache: Weak<Inner>) {
    let mut pause = RETRY_MIN;
    loop {
        let Some(inner) = cache.upgrade() else { return };
        let subscribed = inner.redis.subscribe(&inner.channel).await;
        let pubsub = match subscribed {
            Ok(pubsub) => pubsub,
            Err(e) => {
                tracing::debug!(error = %e, "cache invalidations: cannot subscribe yet");
                drop(inner);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
                continue;
            }
        };
        pause = RETRY_MIN;
        // Whatever L1 holds may have been invalidated while nobody listened.
        inner.epochs.all_invalidated();
        if inner.l1.stats().entries > 0 {
            inner.l1.reset();
            inner.counters.l1_flushes.fetch_add(1, Ordering::Relaxed);
        }
        *lock(&inner.lost_since) = None;
        inner.subscribed.store(true, Ordering::Release);
        tracing::debug!("cache invalidations: subscribed");
        drop(inner);
        receive(&cache, pubsub).await;
        let Some(inner) = cache.upgrade() else { return };
        *lock(&inner.lost_since) = Some(inner.clock.now());
        inner.subscribed.store(false, Ordering::Release);
        tracing::warn!("cache invalidations: subscription lost; reconnecting");
    }
}

/// Applies messages until the subscription ends (or the cache is dropped); publishes the
/// statistics between them.
async fn receive(cache: &Weak<Inner>, pubsub: redis::aio::PubSub) {
    let mut messages = pubsub.into_on_message();
    let mut stats = tokio::time::interval(STATS_EVERY);
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { return };
                let Some(inner) = cache.upgrade() else { return };
                let Ok(text) = message.get_payload::<String>() else { continue };
                apply(&inner, &text);
            }
            _ = stats.tick() => {
                let Some(inner) = cache.upgrade() else { return };
                if let Err(e) = inner.publish_stats().await {
                    tracing::debug!(error = %e, "cache statistics not published");
                }
            }
        }
    }
}

/// Applies one broadcast, `<instance> <op> <argument>`, unless it is this instance's own.
fn apply(inner: &Inner, message: &str) {
    let mut parts = message.splitn(3, ' ');
    let (Some(instance), Some(op), argument) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    if instance == inner.instance {
        return;
    }
    let Some(op) = Op::from_code(op) else { return };
    let argument = argument.unwrap_or_default();
    // Before the drop: an L2 read or write in flight then will not leave its value in L1.
    match op {
        Op::Key => inner.epochs.key_invalidated(argument),
        Op::Pattern | Op::Tag | Op::Reset => inner.epochs.all_invalidated(),
    }
    match op {
        Op::Key => {
            inner.l1.delete(argument);
        }
        Op::Pattern => {
            inner.l1.delete_all_matching(&Glob::new(argument));
        }
        Op::Tag => {
            inner.l1.invalidate_tag(argument);
        }
        Op::Reset => {
            inner.l1.reset();
        }
    }
    inner.counters.received.fetch_add(1, Ordering::Relaxed);
}
