//! Tower layers over HTTP services: [`RateLimitLayer`] answers 429 once a key is over its
//! quota, [`BreakerLayer`] answers 503 while the breaker in front of a failing service is open.
//! Both add the headers clients use to back off.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::{CircuitBreaker, Decision, RateLimiter};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Which key a request counts against; `None` lets it through unlimited (an admin, say).
pub type KeyFn<B> = Arc<dyn Fn(&Request<B>) -> Option<String> + Send + Sync>;

/// Limits requests per key with a [`RateLimiter`].
pub struct RateLimitLayer<B> {
    limiter: Arc<RateLimiter>,
    key: KeyFn<B>,
}

impl<B> RateLimitLayer<B> {
    /// Counts each request against the key `key` gives it.
    pub fn new(limiter: Arc<RateLimiter>, key: KeyFn<B>) -> Self {
        Self { limiter, key }
    }
}

impl<B> Clone for RateLimitLayer<B> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            key: self.key.clone(),
        }
    }
}

impl<S, B> Layer<S> for RateLimitLayer<B> {
    type Service = RateLimit<S, B>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
pub struct RateLimit<S, B> {
    inner: S,
    layer: RateLimitLayer<B>,
}

impl<S: Clone, B> Clone for RateLimit<S, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

/// An empty answer with `status`, from a layer that did not call the service.
fn refusal<R: Default>(status: StatusCode) -> Response<R> {
    let mut response = Response::new(R::default());
    *response.status_mut() = status;
    response
}

fn seconds_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (IETF draft), and
/// `Retry-After` when refused.
fn rate_headers<T>(response: &mut Response<T>, decision: &Decision) {
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: u64| {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    };
    set("ratelimit-limit", u64::from(decision.limit));
    set("ratelimit-remaining", u64::from(decision.remaining));
    set("ratelimit-reset", seconds_up(decision.reset_after));
    if !decision.allowed {
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from(seconds_up(decision.retry_after)),
        );
    }
}

impl<S, B, R> Service<Request<B>> for RateLimit<S, B>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(key) = (self.layer.key)(&request) else {
            let call = self.inner.call(request);
            return Box::pin(call);
        };
        let decision = self.layer.limiter.check(&key, 1);
        if !decision.allowed {
            let mut refused = refusal(StatusCode::TOO_MANY_REQUESTS);
            rate_headers(&mut refused, &decision);
            return Box::pin(async move { Ok(refused) });
        }
        let call = self.inner.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            rate_headers(&mut response, &decision);
            Ok(response)
        })
    }
}

/// Puts a [`CircuitBreaker`] in front of a service: 5xx answers and errors count as failures;
/// while open, requests get 503 with `Retry-After` without reaching the service.
#[derive(Clone)]
pub struct BreakerLayer {
    breaker: Arc<CircuitBreaker>,
}

impl BreakerLayer {
    /// Guards services with `breaker`.
    pub fn new(breaker: Arc<CircuitBreaker>) -> Self {
        Self { breaker }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

/// The service of [`BreakerLayer`].
#[derive(Clone)]
pub struct Breaker<S> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
}

impl<S, B, R> Service<Request<B>> for Breaker<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let permit = match CircuitBreaker::call(self.breaker.clone()) {
            Ok(permit) => permit,
            Err(wait) => {
                let mut refused = refusal(StatusCode::SERVICE_UNAVAILABLE);
                refused
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(seconds_up(wait).max(1)));
                return Box::pin(async move { Ok(refused) });
            }
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            // Dropped with this future (the client went away), the permit fails a trial.
            let outcome = call.await;
            let failed = !matches!(&outcome, Ok(response) if !response.status().is_server_error());
            permit.finish(failed, Duration::ZERO);
            outcome
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicU16, Ordering};

    use keel_core::Clock;
    use tower::ServiceExt;

    use super::*;
    use crate::{BreakerConfig, BreakerState, Quota};

    fn request(user: &str) -> Request<()> {
        Request::builder().header("x-user", user).body(()).unwrap()
    }

    async fn ok(_: Request<()>) -> Result<Response<String>, Infallible> {
        Ok(Response::new("ok".to_owned()))
    }

    #[tokio::test]
    async fn over_quota_is_429_with_backoff_headers_and_unkeyed_requests_pass() {
        let (clock, _time) = Clock::mock();
        let quota = Quota {
            max: 1,
            per: Duration::from_secs(2),
            burst: 2,
        };
        let limiter = Arc::new(RateLimiter::new(quota, clock));
        let key: KeyFn<()> = Arc::new(|r| {
            let user = r.headers().get("x-user")?.to_str().ok()?;
            (user != "admin").then(|| user.to_owned())
        });
        let service = RateLimitLayer::new(limiter, key).layer(tower::service_fn(ok));
        let first = service.clone().oneshot(request("ada")).await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()["ratelimit-remaining"], "1");
        service.clone().oneshot(request("ada")).await.unwrap();
        let third = service.clone().oneshot(request("ada")).await.unwrap();
        assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(third.headers()["retry-after"], "2");
        assert_eq!(third.headers()["ratelimit-remaining"], "0");
        for _ in 0..5 {
            let admin = service.clone().oneshot(request("admin")).await.unwrap();
            assert_eq!(admin.status(), StatusCode::OK, "no key, no limit");
        }
        let other = service.clone().oneshot(request("bob")).await.unwrap();
        assert_eq!(other.status(), StatusCode::OK, "keys are separate");
    }

    #[tokio::test]
    async fn the_breaker_opens_on_5xx_answers_503_and_closes_after_a_good_trial() {
        let (clock, time) = Clock::mock();
        let config = BreakerConfig {
            failure_threshold: 2,
            cool_down: Duration::from_secs(5),
            ..BreakerConfig::default()
        };
        let breaker = Arc::new(CircuitBreaker::new(config, clock));
        let status = Arc::new(AtomicU16::new(500));
        let upstream = {
            let status = status.clone();
            tower::service_fn(move |_: Request<()>| {
                let code = status.load(Ordering::SeqCst);
                async move {
                    let mut response = Response::new(String::new());
                    *response.status_mut() = StatusCode::from_u16(code).unwrap();
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let service = BreakerLayer::new(breaker.clone()).layer(upstream);
        for _ in 0..2 {
            let failed = service.clone().oneshot(request("x")).await.unwrap();
            assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        status.store(200, Ordering::SeqCst);
        let refused = service.clone().oneshot(request("x")).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()["retry-after"], "5");
        time.advance(Duration::from_secs(5));
        let trial = service.clone().oneshot(request("x")).await.unwrap();
        assert_eq!(trial.status(), StatusCode::OK);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
