//! Webhook delivery: keel POSTs each job of a queue to the app and records the answer, as an
//! in-process worker whose handler is the HTTP call — so deliveries have the same leases,
//! retries, concurrency and cancellation as any worker.
//!
//! The request body is the job as JSON; with a `secret`, a `Keel-Signature: t=<unix
//! seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` header lets the app check that keel sent it.
//! The answer decides:
//! - 2xx: completed; a JSON body is kept as the job's result (other text as a string);
//! - `Keel-Retry: false` on any other answer: failed without retry;
//! - 429 or 503 with `Retry-After: <seconds>`: retried after that long;
//! - any other answer, a timeout or no connection: retried after the job's backoff.
//!
//! A circuit breaker per endpoint counts deliveries without an answer, timeouts and 5xx; once
//! open, no jobs are taken (they wait in the queue, attempts untouched) until its cool-down
//! ends and one trial delivery succeeds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use keel_core::Clock;
use keel_resilience::{BreakerConfig, BreakerState, CircuitBreaker};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::QueueError;
use crate::config::DeliverSettings;
use crate::model::Job;
use crate::service::Queues;
use crate::worker::{Gate, Outcome, Worker};

/// How often a worker held back by a trial delivery looks again.
const TRIAL_WAIT: Duration = Duration::from_millis(50);

/// Most bytes of an error answer kept in the job's history.
const ERROR_EXCERPT: usize = 200;

/// What a queue's webhook delivery has done since start, and its breaker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryReport {
    /// Where jobs go (with any credentials in it removed).
    pub url: String,
    /// The endpoint's breaker: `closed`, `open` or `half_open`.
    pub breaker: BreakerState,
    /// Failed deliveries in a row.
    pub failures_in_a_row: u32,
    /// Times the breaker opened.
    pub breaker_opened: u64,
    /// Deliveries the app accepted (2xx).
    pub delivered: u64,
    /// Deliveries that failed (any other answer, timeout, no connection).
    pub failed: u64,
}

/// One queue's webhook delivery.
pub(crate) struct Delivery {
    url: reqwest::Url,
    /// `url` without credentials, for errors and reports.
    shown_url: String,
    settings: DeliverSettings,
    client: reqwest::Client,
    breaker: CircuitBreaker,
    clock: Clock,
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl Gate for Delivery {
    fn admit(&self) -> Result<usize, Duration> {
        match self.breaker.state() {
            BreakerState::Closed => Ok(usize::MAX),
            // One trial at a time; further jobs wait for its outcome.
            BreakerState::HalfOpen if self.breaker.trial_in_flight() => Err(TRIAL_WAIT),
            BreakerState::HalfOpen => Ok(1),
            BreakerState::Open => Err(self.breaker.open_for()),
        }
    }
}

impl Delivery {
    /// Starts delivering `queue`'s jobs per `settings`.
    pub(crate) fn start(
        queues: &Queues,
        queue: &str,
        settings: &DeliverSettings,
        clock: Clock,
    ) -> Result<(Arc<Self>, Worker), QueueError> {
        let url = reqwest::Url::parse(&settings.url)
            .map_err(|e| QueueError::invalid("deliver.url", e.to_string()))?;
        let client = reqwest::Client::builder()
            .timeout(settings.timeout.get())
            .build()
            .map_err(|e| QueueError::Store(format!("cannot build the webhook client: {e}")))?;
        let breaker = CircuitBreaker::new(
            BreakerConfig {
                failure_threshold: settings.breaker_failures,
                cool_down: settings.breaker_cool_down.get(),
                ..BreakerConfig::default()
            },
            clock.clone(),
        );
        let mut shown = url.clone();
        let _ = shown.set_password(None);
        let _ = shown.set_username("");
        let delivery = Arc::new(Self {
            url,
            shown_url: shown.to_string(),
            settings: settings.clone(),
            client,
            breaker,
            clock,
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        let handler = delivery.clone();
        let worker = queues
            .worker(queue)
            .concurrency(settings.concurrency as usize)
            .id(format!("webhook:{queue}"))
            .gate(delivery.clone())
            .run(move |job| {
                let delivery = handler.clone();
                async move { delivery.deliver(job).await }
            })?;
        Ok((delivery, worker))
    }

    /// What it has done so far.
    pub(crate) fn report(&self) -> DeliveryReport {
        DeliveryReport {
            url: self.shown_url.clone(),
            breaker: self.breaker.state(),
            failures_in_a_row: self.breaker.failures(),
            breaker_opened: self.breaker.times_opened(),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    async fn deliver(&self, job: Job) -> Outcome {
        let body = json!({
            "id": job.id,
            "queue": job.queue,
            "name": job.name,
            "payload": job.payload,
            "attempt": job.attempts_made,
            "max_attempts": job.max_attempts,
            "created_at": job.created_at,
        })
        .to_string();
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Keel-Job-Id", &job.id)
            .header("Keel-Queue", &job.queue)
            .header("Keel-Attempt", job.attempts_made.to_string());
        for (name, value) in &self.settings.headers {
            request = request.header(name.as_str(), value.expose());
        }
        if let Some(secret) = &self.settings.secret {
            let timestamp = self.clock.unix_ms() / 1000;
            request = request.header(
                "Keel-Signature",
                format!(
                    "t={timestamp},v1={}",
                    sign(secret.expose(), timestamp, &body)
                ),
            );
        }
        // While half-open this is the trial; otherwise it changes nothing.
        let _ = self.breaker.try_acquire();
        let outcome = match request.body(body).send().await {
            Ok(response) => self.answer(response).await,
            Err(e) => {
                self.breaker.on_failure();
                let why = if e.is_timeout() {
                    format!("no answer within {}", self.settings.timeout)
                } else {
                    format!("cannot reach {}: {}", self.shown_url, root_cause(&e))
                };
                Outcome::retry(why)
            }
        };
        let counter = match outcome {
            Outcome::Done(_) => &self.delivered,
            _ => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    async fn answer(&self, response: reqwest::Response) -> Outcome {
        let status = response.status();
        if status.is_server_error() {
            self.breaker.on_failure();
        } else {
            self.breaker.on_success();
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let no_retry = header("Keel-Retry").is_some_and(|v| v.eq_ignore_ascii_case("false"));
        let retry_after = header("Retry-After").and_then(|v| v.trim().parse::<u64>().ok());
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => {
                return Outcome::retry(format!("the answer's body broke off: {}", root_cause(&e)));
            }
        };
        if status.is_success() {
            let result = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            return Outcome::Done(result);
        }
        let error = format!("HTTP {}: {}", status.as_u16(), excerpt(&text));
        match (no_retry, retry_after) {
            (true, _) => Outcome::fail(error),
            (false, Some(secs)) if matches!(status.as_u16(), 429 | 503) => {
                Outcome::retry_after(error, Duration::from_secs(secs))
            }
            _ => Outcome::retry(error),
        }
    }
}

/// Lowercase hex of HMAC-SHA256(`secret`, `"<timestamp>.<body>"`).
pub fn sign(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(ERROR_EXCERPT) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The innermost error of a chain (reqwest's own message is generic).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut e = e;
    while let Some(source) = e.source() {
        e = source;
    }
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
        // Independently computed: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            sign("key", 1_700_000_000, r#"{"a":1}"#),
            "a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
    }

    #[test]
    fn excerpts_are_cut_on_a_character() {
        assert_eq!(excerpt("  short  "), "short");
        let long = "é".repeat(300);
        assert_eq!(excerpt(&long).chars().count(), ERROR_EXCERPT + 1);
    }
}
