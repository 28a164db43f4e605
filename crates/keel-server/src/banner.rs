//! The short banner `keel serve` prints once it listens.

use std::net::SocketAddr;

use crate::App;

/// The banner: where the API (and the gateway) is, where the admin credential is, how to stop.
pub fn render(app: &App, addr: SocketAddr, gateway: Option<SocketAddr>) -> String {
    let base = format!("http://{addr}");
    let auth_line = match app.admin_token() {
        Some(t) => format!(
            "admin token: in {} (curl -H \"Authorization: Bearer $(cat {})\" {base}/api/v1/stats)",
            t.path.display(),
            t.path.display()
        ),
        None => "admin credentials: as configured in [auth]".to_owned(),
    };
    let gateway_line = match (gateway, &app.config().gateway.upstream) {
        (Some(gateway), Some(upstream)) => {
            format!("gateway on http://{gateway} in front of {upstream}\n")
        }
        _ => String::new(),
    };
    let redis = &app.config().redis;
    let jobs = match app.config().queue.backend {
        keel_queue::QueueBackend::Redis => ", job queues included",
        keel_queue::QueueBackend::Sqlite => "",
    };
    let redis_line = if !redis.cluster.is_empty() {
        format!(
            "shared through a Redis Cluster of {} (keys under {:?}{jobs})\n",
            redis.cluster.join(", "),
            redis.key_prefix
        )
    } else if !redis.sentinels.is_empty() {
        format!(
            "shared through Redis: master {:?} of Sentinels {} (keys under {:?}{jobs})\n",
            redis.sentinel_master.as_deref().unwrap_or_default(),
            redis.sentinels.join(", "),
            redis.key_prefix
        )
    } else {
        match redis.connection_url() {
            // Redacted: the URL may carry a password.
            Some(url) => format!(
                "shared through Redis at {} (keys under {:?}{jobs})\n",
                crate::config::redis::redact_url(url.expose()),
                redis.key_prefix
            ),
            None => String::new(),
        }
    };
    format!(
        "keel {} listening on {base}  (API {base}/api/v1, health {base}/health)\n{gateway_line}{redis_line}{auth_line}\nstop: Ctrl-C or SIGTERM\n",
        env!("CARGO_PKG_VERSION")
    )
}
