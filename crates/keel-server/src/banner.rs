//! The short banner `keel serve` prints once it listens.

use std::net::SocketAddr;

use crate::App;

/// The banner: where the API is, where the admin credential is, how to stop.
pub fn render(app: &App, addr: SocketAddr) -> String {
    let base = format!("http://{addr}");
    let auth_line = match app.admin_token() {
        Some(t) => format!(
            "admin token: in {} (curl -H \"Authorization: Bearer $(cat {})\" {base}/api/v1/stats)",
            t.path.display(),
            t.path.display()
        ),
        None => "admin credentials: as configured in [auth]".to_owned(),
    };
    format!(
        "keel {} listening on {base}  (API {base}/api/v1, health {base}/health)\n{auth_line}\nstop: Ctrl-C or SIGTERM\n",
        env!("CARGO_PKG_VERSION")
    )
}
