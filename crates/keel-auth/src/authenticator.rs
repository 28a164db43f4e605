//! Turning a bearer credential into a [`Principal`].

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use keel_core::Secret;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Role;
use crate::config::{AuthConfig, AuthConfigError, JwtAlgorithm, JwtConfig};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name, or the JWT's `sub` claim (empty if it has none). Shared, since a
    /// principal is cloned into every request it authenticates.
    pub subject: Arc<str>,
    /// What the caller may do.
    pub role: Role,
    /// How the caller authenticated.
    pub kind: PrincipalKind,
}

/// How a principal authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A static API token from config (or the generated admin token).
    Token,
    /// A verified JWT.
    Jwt,
}

/// Why a request is not authenticated. Every variant is a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing credentials: send `Authorization: Bearer <token>`")]
    Missing,
    /// The header is not `Bearer <token>`.
    #[error("malformed Authorization header: expected `Bearer <token>`")]
    Malformed,
    /// Neither a known API token nor a valid JWT.
    #[error("invalid token")]
    InvalidToken,
    /// A JWT whose `exp` has passed.
    #[error("token expired")]
    Expired,
    /// A JWT whose `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// A JWT with a wrong signature, issuer, audience or claims.
    #[error("invalid token: {0}")]
    InvalidJwt(String),
}

struct TokenEntry {
    name: Arc<str>,
    role: Role,
    digest: [u8; 32],
}

struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    role_claim: String,
    default_role: Option<Role>,
}

/// Verifies bearer credentials against the configured tokens and JWT key.
pub struct Authenticator {
    tokens: Vec<TokenEntry>,
    jwt: Option<JwtVerifier>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Authenticator {
    /// Builds the authenticator from config, plus the generated admin token if there is one.
    /// Reads `auth.jwt.public_key_file` if set.
    pub fn new(
        config: &AuthConfig,
        generated_admin: Option<&Secret>,
    ) -> Result<Self, AuthConfigError> {
        config.validate()?;
        let mut tokens: Vec<TokenEntry> = config
            .tokens
            .iter()
            .map(|t| TokenEntry {
                name: Arc::from(t.name.as_str()),
                role: t.role,
                digest: digest(t.token.expose()),
            })
            .collect();
        if let Some(admin) = generated_admin {
            tokens.push(TokenEntry {
                name: Arc::from("generated-admin"),
                role: Role::Admin,
                digest: digest(admin.expose()),
            });
        }
        let jwt = if config.jwt.enabled() {
            Some(JwtVerifier::new(&config.jwt)?)
        } else {
            None
        };
        Ok(Self { tokens, jwt })
    }

    /// Whether any credential at all is configured.
    pub fn has_credentials(&self) -> bool {
        !self.tokens.is_empty() || self.jwt.is_some()
    }

    /// Authenticates the value of an `Authorization` header (`None` when absent).
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
        let (scheme, credential) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed);
        }
        let credential = credential.trim();
        if credential.is_empty() {
            return Err(AuthError::Malformed);
        }
        if let Some(principal) = self.match_token(credential) {
            return Ok(principal);
        }
        match &self.jwt {
            Some(verifier) if credential.matches('.').count() == 2 => verifier.verify(credential),
            _ => Err(AuthError::InvalidToken),
        }
    }

    /// Compares the credential's digest with every configured token's digest in constant time,
    /// without stopping at the first match, so timing reveals neither which token matched nor how
    /// much of one did.
    fn match_token(&self, credential: &str) -> Option<Principal> {
        let candidate = digest(credential);
        let mut found: Option<&TokenEntry> = None;
        for entry in &self.tokens {
            if bool::from(entry.digest.ct_eq(&candidate)) {
                found = Some(entry);
            }
        }
        found.map(|e| Principal {
            subject: e.name.clone(),
            role: e.role,
            kind: PrincipalKind::Token,
        })
    }
}

impl JwtVerifier {
    fn new(cfg: &JwtConfig) -> Result<Self, AuthConfigError> {
        let pem = || -> Result<Vec<u8>, AuthConfigError> {
            if let Some(inline) = &cfg.public_key {
                return Ok(inline.as_bytes().to_vec());
            }
            let path = cfg.public_key_file.as_ref().ok_or_else(|| {
                AuthConfigError::new(
                    "auth.jwt.public_key",
                    "RS256/ES256 need public_key or public_key_file",
                )
            })?;
            std::fs::read(path).map_err(|e| {
                AuthConfigError::new(
                    "auth.jwt.public_key_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })
        };
        let bad_key = |e: jsonwebtoken::errors::Error| {
            AuthConfigError::new(
                "auth.jwt.public_key",
                format!("not a valid PEM public key: {e}"),
            )
        };
        let (key, alg) = match cfg.algorithm {
            JwtAlgorithm::HS256 => {
                let secret = cfg.secret.as_ref().map(Secret::expose).unwrap_or_default();
                (
                    DecodingKey::from_secret(secret.as_bytes()),
                    Algorithm::HS256,
                )
            }
            JwtAlgorithm::RS256 => (
                DecodingKey::from_rsa_pem(&pem()?).map_err(bad_key)?,
                Algorithm::RS256,
            ),
            JwtAlgorithm::ES256 => (
                DecodingKey::from_ec_pem(&pem()?).map_err(bad_key)?,
                Algorithm::ES256,
            ),
        };
        let mut validation = Validation::new(alg);
        validation.leeway = cfg.leeway.get().as_secs();
        validation.validate_nbf = true;
        validation.validate_exp = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if let Some(aud) = &cfg.audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        } else {
            validation.validate_aud = false;
        }
        validation.set_required_spec_claims(&required);
        Ok(Self {
            key,
            validation,
            role_claim: cfg.role_claim.clone(),
            default_role: cfg.default_role,
        })
    }

    fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidSignature => AuthError::InvalidJwt("bad signature".to_owned()),
            ErrorKind::InvalidIssuer => AuthError::InvalidJwt("wrong issuer".to_owned()),
            ErrorKind::InvalidAudience => AuthError::InvalidJwt("wrong audience".to_owned()),
            ErrorKind::InvalidAlgorithm => {
                AuthError::InvalidJwt("algorithm not accepted".to_owned())
            }
            ErrorKind::MissingRequiredClaim(c) => {
                AuthError::InvalidJwt(format!("missing claim `{c}`"))
            }
            _ => AuthError::InvalidToken,
        })?;
        let claims = data.claims;
        let role = match claims.get(&self.role_claim) {
            Some(v) => role_from_claim(v).ok_or_else(|| {
                AuthError::InvalidJwt(format!("claim `{}` names no known role", self.role_claim))
            })?,
            None => self.default_role.ok_or_else(|| {
                AuthError::InvalidJwt(format!("missing role claim `{}`", self.role_claim))
            })?,
        };
        let subject = Arc::from(
            claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        Ok(Principal {
            subject,
            role,
            kind: PrincipalKind::Jwt,
        })
    }
}

/// A role from a claim: a string, or the highest known role in an array of strings.
fn role_from_claim(value: &Value) -> Option<Role> {
    match value {
        Value::String(s) => s.parse().ok(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|s| s.parse::<Role>().ok())
            .max(),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
