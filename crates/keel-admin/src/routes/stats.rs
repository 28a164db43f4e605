//! `/api/v1/stats`: one document aggregating every subsystem.

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

use crate::AdminState;
use crate::auth::{Authorized, ViewerRole};

/// System, health, HTTP API and every registered subsystem's statistics (cache, queue, … as they
/// are enabled), in one document.
#[utoipa::path(get, path = "/stats", tag = "system", security(("bearer" = [])),
    responses((status = 200, description = "Sections keyed by subsystem", body = Object)))]
pub(crate) async fn stats(
    _: Authorized<ViewerRole>,
    State(state): State<AdminState>,
) -> Json<Value> {
    let report = state.health().run_all().await;
    let mut doc = Map::new();
    doc.insert("system".into(), json!(state.sampler().sample()));
    doc.insert(
        "health".into(),
        json!({
            "status": report.status(),
            "checks": report.results.iter().map(|r| (r.spec.key(), json!(r.outcome.status))).collect::<Map<_, _>>(),
        }),
    );
    doc.insert(
        "http".into(),
        json!({"requests_total": state.http().total(), "server_errors_total": state.http().server_errors()}),
    );
    for (name, source) in state.stats_sources() {
        doc.insert(name, source().await);
    }
    Json(Value::Object(doc))
}
