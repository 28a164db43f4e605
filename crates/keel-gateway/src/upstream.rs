//! The upstream app: its address, a keep-alive connection pool to it, and sending one request
//! with the connect and response-header timeouts applied.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use http_body_util::LengthLimitError;

use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::pool::{Pool, PooledBody, SendError};

/// Where the upstream listens: `http://host:port`.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamAddr {
    pub(crate) authority: Authority,
}

impl UpstreamAddr {
    /// Parses `http://host[:port]` (a trailing `/` is allowed; no other path, query or
    /// credentials).
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("\"{url}\" is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(format!(
                    "the scheme must be http (keel speaks plain HTTP to the app behind it), not {other}"
                ));
            }
            None => return Err(format!("\"{url}\" needs a scheme: http://host:port")),
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("\"{url}\" needs a host: http://host:port"))?;
        if authority.as_str().contains('@') {
            return Err("credentials in the upstream URL are not supported".to_owned());
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "\"{url}\" must not have a path or query: requests keep their own path"
            ));
        }
        Ok(Self { authority })
    }

    /// The upstream request's URI for a client's: its path and query, in origin form (the
    /// request line of HTTP/1.1; `Host` names the upstream).
    pub(crate) fn uri_for(&self, request: &Uri) -> Uri {
        // The path and query are reused as they are (a reference-counted clone).
        Uri::from(
            request
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        )
    }

    /// `host:port` to connect to (port 80 when the URL has none).
    fn address(&self) -> String {
        let port = self.authority.port_u16().unwrap_or(80);
        format!("{}:{port}", self.authority.host())
    }
}

/// A pooled HTTP/1.1 client to the upstream.
#[derive(Clone)]
pub(crate) struct Upstream {
    pub(crate) addr: UpstreamAddr,
    pool: Arc<Pool>,
}

impl Upstream {
    pub(crate) fn new(addr: UpstreamAddr, config: &GatewayConfig) -> Self {
        let pool = Pool::new(
            addr.address(),
            config.pool_max_idle,
            config.pool_idle_timeout.get(),
            config.connect_timeout.get(),
        );
        Self { addr, pool }
    }

    /// Sends `request` (in origin form, whose body is limited to `max_body` bytes) and waits
    /// at most `wait` for the response headers.
    pub(crate) async fn send(
        &self,
        request: Request<Body>,
        wait: Duration,
        max_body: u64,
    ) -> Result<Response<PooledBody>, GatewayError> {
        match tokio::time::timeout(wait, self.pool.send(request)).await {
            Err(_) => Err(GatewayError::Timeout(wait)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(classify(&e, max_body)),
        }
    }
}

/// The gateway's error for a failed send; `max_body` names the limit a body went over.
fn classify(e: &SendError, max_body: u64) -> GatewayError {
    match e {
        SendError::ConnectTimeout(after) => GatewayError::ConnectTimeout(*after),
        SendError::Connect(io) => GatewayError::Connect(root_cause(io)),
        SendError::Request(e) => {
            let mut source: Option<&(dyn StdError + 'static)> = e.source();
            while let Some(cause) = source {
                if cause.is::<LengthLimitError>() {
                    return GatewayError::BodyTooLarge { limit: max_body };
                }
                source = cause.source();
            }
            GatewayError::Upstream(root_cause(e))
        }
    }
}

/// The innermost error's message: the useful part of a chain like "client error (Connect)".
fn root_cause(e: &(dyn StdError + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_are_plain_http_without_paths() {
        assert_eq!(
            UpstreamAddr::parse("http://127.0.0.1:3000/")
                .unwrap()
                .authority,
            "127.0.0.1:3000"
        );
        assert!(UpstreamAddr::parse("http://app").is_ok());
        for (url, says) in [
            ("https://app", "scheme must be http"),
            ("127.0.0.1:3000", "needs a scheme"),
            ("http://app/api", "must not have a path"),
            ("http://u:p@app", "credentials"),
            ("http://", "not a URL"),
        ] {
            let e = UpstreamAddr::parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn requests_keep_their_path_and_query() {
        let a = UpstreamAddr::parse("http://app:3000").unwrap();
        let uri = a.uri_for(&"http://keel:8080/x/y?z=1".parse().unwrap());
        assert_eq!(uri, "/x/y?z=1");
        assert_eq!(a.uri_for(&"http://keel".parse().unwrap()), "/");
        assert_eq!(a.address(), "app:3000");
        assert_eq!(
            UpstreamAddr::parse("http://app").unwrap().address(),
            "app:80"
        );
    }
}
