//! Keep-alive HTTP/1.1 connections to the upstream, on hyper's connection API.
//!
//! keel talks to one upstream, so its pool is a queue of idle connections. hyper_util's pooled
//! client, used before, keys its pool by scheme and authority (a SipHash per checkout and per
//! return) and spawns a task for every request to hand its connection back once the response
//! has been read: about a ninth of keel's instructions per pass-through request
//! (`SCENARIOS=instructions bench/gateway.sh`). Here a connection goes back to the queue when
//! its response body ends, from the task reading it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request did not get a response head.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened.
    Connect(std::io::Error),
    /// Opening a connection took longer than the connect timeout (this long).
    ConnectTimeout(Duration),
    /// The connection failed while the request was sent or its response read.
    Request(hyper::Error),
}

/// How long a checkout waits for a handed-back connection to become ready for a request.
const READY_GRACE: Duration = Duration::from_millis(10);

/// Idle connections to one upstream, oldest first.
pub(crate) struct Pool {
    /// `host:port` to connect to.
    address: String,
    idle: Mutex<VecDeque<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    /// Whether the task closing connections idle past `idle_timeout` runs (started with the
    /// first connection, inside the runtime).
    reaper: AtomicBool,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl Pool {
    /// A pool for `address` (`host:port`).
    pub(crate) fn new(
        address: String,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            address,
            idle: Mutex::new(VecDeque::new()),
            max_idle,
            idle_timeout,
            connect_timeout,
            reaper: AtomicBool::new(false),
        })
    }

    /// Sends `request` (in origin form, with its `Host`) on an idle connection, or a new one.
    /// A request that an idle connection turned out closed for (the upstream closed it while
    /// it sat in the pool; nothing of the request was written) goes again, on the next one or
    /// a new one.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<Response<PooledBody>, SendError> {
        loop {
            let (mut sender, reused) = match self.checkout().await {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.wrap(response, sender)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Request(e.into_error())),
                },
            }
        }
    }

    /// The oldest idle connection that can take a request, if any.
    async fn checkout(&self) -> Option<SendRequest<Body>> {
        loop {
            let Idle { mut sender, since } = self.lock().pop_front()?;
            if sender.is_closed() || since.elapsed() >= self.idle_timeout {
                continue;
            }
            if sender.is_ready() {
                return Some(sender);
            }
            // Handed back as its response ended, a connection may not have marked itself idle
            // yet, which takes microseconds; one still sending an upload after an early
            // response would take as long as the upload, so it is let go instead (it closes
            // once that exchange is over).
            if let Ok(Ok(())) = tokio::time::timeout(READY_GRACE, sender.ready()).await {
                return Some(sender);
            }
        }
    }

    async fn connect(self: &Arc<Self>) -> Result<SendRequest<Body>, SendError> {
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&*self.address))
                .await
            {
                Err(_) => return Err(SendError::ConnectTimeout(self.connect_timeout)),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(SendError::ConnectTimeout(self.connect_timeout));
                }
                Ok(Err(e)) => return Err(SendError::Connect(e)),
                Ok(Ok(stream)) => stream,
            };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Request)?;
        tokio::spawn(async move {
            // With upgrades: a WebSocket tunnel takes the connection over after a 101.
            if let Err(e) = connection.with_upgrades().await {
                tracing::trace!(error = %e, "upstream connection ended with an error");
            }
        });
        if !self.reaper.swap(true, Ordering::Relaxed) {
            tokio::spawn(reap(Arc::downgrade(self), self.idle_timeout));
        }
        Ok(sender)
    }

    /// `response` with a body that hands `sender` back when it ends. A connection that switched
    /// protocols belongs to the tunnel and is not handed back.
    fn wrap(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: SendRequest<Body>,
    ) -> Response<PooledBody> {
        let back = (response.status() != StatusCode::SWITCHING_PROTOCOLS)
            .then(|| (sender, Arc::clone(self)));
        response.map(|inner| {
            let mut body = PooledBody { inner, back };
            if http_body::Body::is_end_stream(&body.inner) {
                body.hand_back();
            }
            body
        })
    }

    fn put(&self, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push_back(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Closes connections idle for `timeout` or longer, until the pool is gone.
async fn reap(pool: Weak<Pool>, timeout: Duration) {
    let every = (timeout / 2).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        pool.lock()
            .retain(|i| !i.sender.is_closed() && i.since.elapsed() < timeout);
    }
}

/// An upstream response body that hands its connection back to the pool when it ends. Dropped
/// before its end (the client went away), it closes the connection instead: the rest of the
/// response would have to be read first.
pub(crate) struct PooledBody {
    inner: Incoming,
    back: Option<(SendRequest<Body>, Arc<Pool>)>,
}

impl PooledBody {
    fn hand_back(&mut self) {
        if let Some((sender, pool)) = self.back.take() {
            pool.put(sender);
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.hand_back(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.hand_back(),
            // A connection that failed mid-body is not reused.
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    /// An upstream on loopback answering every request with `size` bytes; counts the
    /// connections it accepted. With `close_idle`, it closes each connection after one
    /// response (keeping it alive in the headers, as an app whose idle timeout is short).
    async fn upstream(size: usize, close_idle: bool) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(move |_request| async move {
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            Bytes::from(vec![b'x'; size]),
                        )))
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .keep_alive(!close_idle)
                        .serve_connection(TokioIo::new(stream), service);
                    let _ = connection.await;
                });
            }
        });
        (address, accepted)
    }

    fn pool(address: String, idle_timeout: Duration) -> Arc<Pool> {
        Pool::new(address, 8, idle_timeout, Duration::from_secs(5))
    }

    fn get(address: &str) -> Request<Body> {
        Request::builder()
            .uri("/")
            .header(http::header::HOST, address)
            .body(Body::empty())
            .unwrap()
    }

    async fn read_all(pool: &Arc<Pool>, address: &str) -> usize {
        let response = pool.send(get(address)).await.unwrap();
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .len()
    }

    /// The connections `requests` requests, read to the end one after another, took.
    async fn connections_for(
        size: usize,
        close_idle: bool,
        idle_timeout: Duration,
        requests: usize,
    ) -> usize {
        let (address, accepted) = upstream(size, close_idle).await;
        let pool = pool(address.clone(), idle_timeout);
        for _ in 0..requests {
            assert_eq!(read_all(&pool, &address).await, size);
        }
        accepted.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn responses_read_to_the_end_leave_their_connection_for_the_next_request() {
        assert_eq!(
            connections_for(20_000, false, Duration::from_secs(60), 5).await,
            1
        );
    }

    #[tokio::test]
    async fn connections_the_upstream_closed_are_not_used_again() {
        assert_eq!(
            connections_for(100, true, Duration::from_secs(60), 3).await,
            3
        );
    }

    #[tokio::test]
    async fn connections_idle_for_the_timeout_are_not_used_again() {
        assert_eq!(connections_for(100, false, Duration::ZERO, 3).await, 3);
    }

    #[tokio::test]
    async fn a_response_dropped_before_its_end_closes_its_connection() {
        let (address, accepted) = upstream(1 << 20, false).await;
        let pool = pool(address.clone(), Duration::from_secs(60));
        let unread = pool.send(get(&address)).await.unwrap();
        drop(unread);
        assert_eq!(read_all(&pool, &address).await, 1 << 20);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(read_all(&pool, &address).await, 1 << 20);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the second one was kept"
        );
    }

    #[tokio::test]
    async fn no_more_connections_are_kept_than_allowed() {
        let (address, _) = upstream(100, false).await;
        let pool = Pool::new(
            address.clone(),
            2,
            Duration::from_secs(60),
            Duration::from_secs(5),
        );
        let responses =
            futures_util::future::join_all((0..4).map(|_| pool.send(get(&address)))).await;
        for response in responses {
            response.unwrap().into_body().collect().await.unwrap();
        }
        assert_eq!(pool.lock().len(), 2);
    }

    #[tokio::test]
    async fn a_connection_still_sending_an_upload_is_not_waited_for() {
        // The upstream answers without reading the body, and the upload never ends: the next
        // request must not wait for that exchange (hyper closes such a connection; a checkout
        // also waits at most READY_GRACE for one that is not ready).
        let (address, accepted) = upstream(100, false).await;
        let pool = pool(address.clone(), Duration::from_secs(60));
        let never_ends = futures_util::stream::pending::<
            Result<http_body::Frame<Bytes>, std::convert::Infallible>,
        >();
        let upload = Request::builder()
            .method(http::Method::POST)
            .uri("/")
            .header(http::header::HOST, &address)
            .body(Body::new(http_body_util::StreamBody::new(never_ends)))
            .unwrap();
        let early = pool.send(upload).await.unwrap();
        assert_eq!(
            early.into_body().collect().await.unwrap().to_bytes().len(),
            100
        );
        let next = tokio::time::timeout(Duration::from_secs(10), read_all(&pool, &address));
        assert_eq!(
            next.await.expect("the next request waited for the upload"),
            100
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_upstream_that_is_not_listening_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let pool = pool(address.clone(), Duration::from_secs(60));
        let Err(e) = pool.send(get(&address)).await else {
            panic!("a response from a closed port");
        };
        assert!(matches!(e, SendError::Connect(_)), "{e:?}");
    }
}
