//! Who may call keel's API, and as what.
//!
//! # Layout
//! - [`Role`]: `viewer` < `worker` < `admin`.
//! - [`AuthConfig`]: the `[auth]` config section — API tokens, JWT verification, public endpoints.
//! - [`Authenticator`]: turns an `Authorization: Bearer …` header into a [`Principal`] or an
//!   [`AuthError`].
//! - [`generate_token`]: a fresh random API token.

mod authenticator;
mod config;
mod role;

pub use authenticator::{AuthError, Authenticator, Principal, PrincipalKind};
pub use config::{AuthConfig, AuthConfigError, JwtAlgorithm, JwtConfig, TokenConfig};
pub use role::Role;

/// A fresh API token: `keel_` followed by 64 hex digits (256 random bits from the OS).
pub fn generate_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let mut token = String::with_capacity(69);
    token.push_str("keel_");
    for b in bytes {
        token.push_str(&format!("{b:02x}"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_tokens_are_long_and_distinct() {
        let a = super::generate_token().unwrap();
        let b = super::generate_token().unwrap();
        assert_eq!(a.len(), 69);
        assert!(a.starts_with("keel_"));
        assert_ne!(a, b);
    }
}
