//! The upstream's response body on its way to the client, watched: cut off when the upstream
//! falls silent for `read_timeout` or the exchange passes its total `timeout`, and holding the
//! route's in-flight slot until the last byte is passed on (or the client goes away).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

/// Why a response body was cut off.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyCutOff {
    /// No bytes for `read_timeout`.
    #[error("the upstream sent nothing for {0:?}")]
    Idle(Duration),
    /// The whole exchange took longer than `timeout`.
    #[error("the exchange took longer than {0:?}")]
    Deadline(Duration),
}

/// A response body with timers. Every field is `Unpin` (timers boxed), so no pin projection is
/// needed.
pub(crate) struct Watched<B> {
    inner: B,
    idle: Duration,
    /// Armed only while the upstream keeps us waiting: a body that arrives without a pause
    /// (most do) never touches the timer wheel.
    idle_timer: Option<Pin<Box<Sleep>>>,
    deadline: Option<(Duration, Pin<Box<Sleep>>)>,
    /// Held for the body's lifetime: the route's concurrency slot.
    _permit: Option<OwnedSemaphorePermit>,
    done: bool,
}

impl<B> Watched<B> {
    /// Watches `inner`: at most `idle` between frames; the whole exchange, which started at
    /// `started`, ends by `started + total` unless `total` is zero.
    pub(crate) fn new(
        inner: B,
        idle: Duration,
        total: Duration,
        started: Instant,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            inner,
            idle,
            idle_timer: None,
            deadline: (!total.is_zero())
                .then(|| (total, Box::pin(tokio::time::sleep_until(started + total)))),
            _permit: permit,
            done: false,
        }
    }
}

impl<B> Body for Watched<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.idle_timer = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.done = true;
                this._permit = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some((total, timer)) = &mut this.deadline
                    && timer.as_mut().poll(cx).is_ready()
                {
                    this.done = true;
                    return Poll::Ready(Some(Err(Box::new(BodyCutOff::Deadline(*total)))));
                }
                let idle = this.idle;
                let timer = this
                    .idle_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.done = true;
                    return Poll::Ready(Some(Err(Box::new(BodyCutOff::Idle(this.idle)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body whose data bytes are added to one of a route's counters as they pass.
pub(crate) struct Counted<B> {
    inner: B,
    stats: std::sync::Arc<crate::stats::RouteStats>,
    counter: fn(&crate::stats::RouteStats) -> &std::sync::atomic::AtomicU64,
}

impl<B> Counted<B> {
    pub(crate) fn new(
        inner: B,
        stats: std::sync::Arc<crate::stats::RouteStats>,
        counter: fn(&crate::stats::RouteStats) -> &std::sync::atomic::AtomicU64,
    ) -> Self {
        Self {
            inner,
            stats,
            counter,
        }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            crate::stats::RouteStats::add((this.counter)(&this.stats), data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
