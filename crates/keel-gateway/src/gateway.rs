//! The gateway as a whole: built from its config, served on its own listener.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::{GatewayConfig, GatewayConfigError};
use crate::forwarded::TrustedProxies;
use crate::proxy::Proxy;
use crate::request_id::RequestIds;
use crate::routes::RouteTable;
use crate::upstream::{Upstream, UpstreamAddr};

/// A reverse proxy in front of one upstream app. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    proxy: Arc<Proxy>,
    max_header_size: usize,
}

impl Gateway {
    /// Builds the gateway; `config.upstream` must be set.
    pub fn new(config: &GatewayConfig) -> Result<Self, GatewayConfigError> {
        config.validate()?;
        let url = config.upstream.as_deref().ok_or_else(|| {
            GatewayConfigError::new("gateway.upstream", "must be set to run the gateway")
        })?;
        let addr = UpstreamAddr::parse(url)
            .map_err(|reason| GatewayConfigError::new("gateway.upstream", reason))?;
        let upstream_host = HeaderValue::from_str(addr.authority.as_str())
            .map_err(|e| GatewayConfigError::new("gateway.upstream", e.to_string()))?;
        let proxy = Proxy {
            routes: RouteTable::compile(config)?,
            upstream: Upstream::new(addr, config),
            trusted: TrustedProxies::parse(&config.trusted_proxies)?,
            request_ids: RequestIds::new(),
            preserve_host: config.preserve_host,
            upstream_host,
        };
        Ok(Self {
            proxy: Arc::new(proxy),
            max_header_size: usize::try_from(config.max_header_size.bytes()).unwrap_or(usize::MAX),
        })
    }

    /// The names of the route rules, in order, then `default`.
    pub fn route_names(&self) -> Vec<String> {
        self.proxy.routes.all().map(|r| r.name.clone()).collect()
    }

    /// Serves clients on `listener` (HTTP/1.1, and HTTP/2 with prior knowledge) until
    /// `stop_accepting` resolves, then waits for open connections to finish their requests.
    /// The caller bounds that wait (keel's `server.shutdown_grace`).
    pub async fn serve(
        self,
        listener: TcpListener,
        stop_accepting: impl Future<Output = ()> + Send,
    ) {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .max_buf_size(self.max_header_size)
            .header_read_timeout(Duration::from_secs(30));
        let graceful = GracefulShutdown::new();
        let mut stop_accepting = std::pin::pin!(stop_accepting);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "gateway: accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut stop_accepting => break,
            };
            let _ = stream.set_nodelay(true);
            let proxy = self.proxy.clone();
            let service = service_fn(move |request| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(request, peer).await) }
            });
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::trace!(error = %e, "gateway connection ended with an error");
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
    }
}
