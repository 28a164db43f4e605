//! Authentication middleware and the role extractor.
//!
//! [`authenticate`] runs in front of protected routes: it turns the `Authorization` header into a
//! [`Principal`] (stored in request extensions) or answers 401 with `WWW-Authenticate`. Handlers
//! that need more than `viewer` take an [`Authorized<R>`] argument, which answers 403 when the
//! principal's role is below `R`.

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keel_auth::{AuthError, Principal, Role};
use keel_core::Problem;

use crate::AdminState;

/// Which routes a gate protects, so public health and metrics can be switched by config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Always authenticated (`/api/v1`).
    Always,
    /// Health endpoints: authenticated unless `auth.public_health`.
    Health,
    /// `/metrics`: authenticated unless `auth.public_metrics`.
    Metrics,
}

/// Middleware: authenticates the request unless its gate is public.
pub async fn authenticate(
    State((state, gate)): State<(AdminState, Gate)>,
    mut request: Request,
    next: Next,
) -> Response {
    let public = match gate {
        Gate::Always => false,
        Gate::Health => state.public_health(),
        Gate::Metrics => state.public_metrics(),
    };
    if public {
        return next.run(request).await;
    }
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match state.authenticator().authenticate(header) {
        Ok(principal) => {
            tracing::debug!(subject = %principal.subject, role = %principal.role, "authenticated");
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => unauthorized(&e),
    }
}

fn unauthorized(error: &AuthError) -> Response {
    let (code, description) = match error {
        AuthError::Missing => (None, None),
        AuthError::Malformed => (Some("invalid_request"), Some(error.to_string())),
        _ => (Some("invalid_token"), Some(error.to_string())),
    };
    let mut challenge = String::from("Bearer realm=\"keel\"");
    if let Some(code) = code {
        challenge.push_str(&format!(", error=\"{code}\""));
    }
    if let Some(d) = &description {
        challenge.push_str(&format!(", error_description=\"{}\"", d.replace('"', "'")));
    }
    let problem = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
        .with_detail(error.to_string());
    let mut response = problem.into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// A role an [`Authorized`] extractor demands.
pub trait RequiredRole: Send + Sync + 'static {
    /// The least role allowed.
    const ROLE: Role;
}

/// Marker: any authenticated caller (`viewer` and up).
#[derive(Debug)]
pub struct ViewerRole;
/// Marker: `worker` and up.
#[derive(Debug)]
pub struct WorkerRole;
/// Marker: `admin` only.
#[derive(Debug)]
pub struct AdminRole;

impl RequiredRole for ViewerRole {
    const ROLE: Role = Role::Viewer;
}
impl RequiredRole for WorkerRole {
    const ROLE: Role = Role::Worker;
}
impl RequiredRole for AdminRole {
    const ROLE: Role = Role::Admin;
}

/// The authenticated caller, guaranteed to hold at least role `R`.
#[derive(Debug)]
pub struct Authorized<R: RequiredRole> {
    /// Who is calling.
    pub principal: Principal,
    _role: PhantomData<R>,
}

impl<S: Send + Sync, R: RequiredRole> FromRequestParts<S> for Authorized<R> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(principal) = parts.extensions.get::<Principal>().cloned() else {
            return Err(unauthorized(&AuthError::Missing));
        };
        if !principal.role.allows(R::ROLE) {
            let detail = format!(
                "this operation needs the {} role; your credential has {}",
                R::ROLE,
                principal.role
            );
            return Err(
                Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
                    .with_detail(detail)
                    .into_response(),
            );
        }
        Ok(Self {
            principal,
            _role: PhantomData,
        })
    }
}
