//! `GET /api/v1/events`: the queues' live job events as Server-Sent Events (`viewer`).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use keel_queue::{QueueEvent, Queues};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::{Authorized, ViewerRole};

/// Which events to send.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Only this queue's events (and `stalled`, which spans queues); all when absent.
    queue: Option<String>,
}

/// A stream of job events: each SSE event is named after what happened (`added`, `active`,
/// `progress`, `completed`, `failed`, `retrying`, `stalled`, `cancelled`, `paused`,
/// `resumed`) and carries `{"event", "queue", "job", "data"}` as JSON. A client that falls too
/// far behind gets a `lagged` event with `{"missed": n}`. A comment every 15 s keeps idle
/// connections open.
#[utoipa::path(get, path = "/events", tag = "queues", security(("bearer" = [])),
    params(EventsQuery),
    responses((status = 200, description = "`text/event-stream`")))]
pub(crate) async fn events(
    _: Authorized<ViewerRole>,
    State(queues): State<Queues>,
    Query(query): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = queues.subscribe();
    let stream = futures_util::stream::unfold(
        (receiver, query.queue),
        |(mut receiver, queue)| async move {
            loop {
                let event = match receiver.recv().await {
                    Ok(event) => {
                        if !wanted(&event, queue.as_deref()) {
                            continue;
                        }
                        sse_event(&event)
                    }
                    Err(RecvError::Lagged(missed)) => Event::default()
                        .event("lagged")
                        .data(format!("{{\"missed\":{missed}}}")),
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(event), (receiver, queue)));
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn wanted(event: &QueueEvent, queue: Option<&str>) -> bool {
    queue.is_none_or(|q| event.queue == q || event.queue.is_empty())
}

fn sse_event(event: &QueueEvent) -> Event {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned());
    Event::default().event(event.event.as_str()).data(data)
}
