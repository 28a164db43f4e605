//! The `[auth]` config section.

use std::path::PathBuf;

use keel_core::{HumanDuration, Secret};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Role;

/// Credentials for the API under `/api/v1`, and which endpoints stay public.
///
/// With no token and no JWT key configured, keel generates an admin token on first start and
/// stores it in `<data_dir>/admin-token`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether `/health`, `/health/detailed`, `/alive` and `/ready` are served without credentials.
    pub public_health: bool,
    /// Whether `/metrics` is served without credentials.
    pub public_metrics: bool,
    /// API tokens, each with a role, as `[[auth.tokens]]` tables: `name`, `token`, `role`.
    pub tokens: Vec<TokenConfig>,
    /// JWT verification; enabled when `secret` (HS256) or a public key (RS256/ES256) is set.
    pub jwt: JwtConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            public_health: true,
            public_metrics: true,
            tokens: Vec::new(),
            jwt: JwtConfig::default(),
        }
    }
}

/// One static API token.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs and audit (the token itself is never logged).
    pub name: String,
    /// The bearer token; at least 16 characters.
    pub token: Secret,
    /// What the token may do.
    pub role: Role,
}

/// JWT signature algorithms keel verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 and a shared `secret`.
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256 and an RSA public key.
    RS256,
    /// ECDSA P-256 with SHA-256 and an EC public key.
    ES256,
}

/// How JWTs are verified.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// The signature algorithm tokens must use.
    pub algorithm: JwtAlgorithm,
    /// The shared secret for HS256 (at least 32 bytes).
    pub secret: Option<Secret>,
    /// The PEM public key for RS256/ES256, inline.
    pub public_key: Option<String>,
    /// A file holding the PEM public key for RS256/ES256 (instead of `public_key`).
    pub public_key_file: Option<PathBuf>,
    /// If set, the `iss` claim must equal it.
    pub issuer: Option<String>,
    /// If set, the `aud` claim must contain it.
    pub audience: Option<String>,
    /// The claim holding the role (a string, or an array whose highest role wins).
    pub role_claim: String,
    /// The role of a valid token without a role claim; unset rejects such tokens.
    pub default_role: Option<Role>,
    /// Clock skew tolerated when checking `exp` and `nbf`.
    pub leeway: HumanDuration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            algorithm: JwtAlgorithm::HS256,
            secret: None,
            public_key: None,
            public_key_file: None,
            issuer: None,
            audience: None,
            role_claim: "role".to_owned(),
            default_role: None,
            leeway: HumanDuration::from_secs(5),
        }
    }
}

impl JwtConfig {
    /// Whether any verification key is configured.
    pub fn enabled(&self) -> bool {
        self.secret.is_some() || self.public_key.is_some() || self.public_key_file.is_some()
    }
}

/// A problem in the `[auth]` section, naming the field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct AuthConfigError {
    /// The key path, e.g. `auth.tokens[1].token`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

impl AuthConfigError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl AuthConfig {
    /// Checks the section without touching the file system.
    pub fn validate(&self) -> Result<(), AuthConfigError> {
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            if t.name.trim().is_empty() {
                return Err(AuthConfigError::new(
                    format!("auth.tokens[{i}].name"),
                    "must not be empty",
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err(AuthConfigError::new(
                    format!("auth.tokens[{i}].name"),
                    format!("duplicate token name {:?}", t.name),
                ));
            }
            if t.token.expose().chars().count() < 16 {
                return Err(AuthConfigError::new(
                    format!("auth.tokens[{i}].token"),
                    "must be at least 16 characters (generate one with `openssl rand -hex 32`)",
                ));
            }
            if t.token
                .expose()
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(AuthConfigError::new(
                    format!("auth.tokens[{i}].token"),
                    "must not contain whitespace or control characters",
                ));
            }
        }
        let jwt = &self.jwt;
        if !jwt.enabled() {
            return Ok(());
        }
        if jwt.role_claim.is_empty() {
            return Err(AuthConfigError::new(
                "auth.jwt.role_claim",
                "must not be empty",
            ));
        }
        match jwt.algorithm {
            JwtAlgorithm::HS256 => {
                let Some(secret) = &jwt.secret else {
                    return Err(AuthConfigError::new(
                        "auth.jwt.secret",
                        "HS256 needs a secret",
                    ));
                };
                if secret.expose().len() < 32 {
                    return Err(AuthConfigError::new(
                        "auth.jwt.secret",
                        "must be at least 32 bytes for HS256",
                    ));
                }
                if jwt.public_key.is_some() || jwt.public_key_file.is_some() {
                    return Err(AuthConfigError::new(
                        "auth.jwt.public_key",
                        "HS256 uses `secret`; set algorithm = \"RS256\" or \"ES256\" to use a public key",
                    ));
                }
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
                if jwt.secret.is_some() {
                    return Err(AuthConfigError::new(
                        "auth.jwt.secret",
                        "RS256/ES256 verify with a public key; remove `secret` or set algorithm = \"HS256\"",
                    ));
                }
                if jwt.public_key.is_some() && jwt.public_key_file.is_some() {
                    return Err(AuthConfigError::new(
                        "auth.jwt.public_key_file",
                        "set either public_key or public_key_file, not both",
                    ));
                }
            }
        }
        Ok(())
    }
}
