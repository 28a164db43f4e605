use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

use super::*;
use crate::config::TokenConfig;

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
const RSA_PRIVATE: &str = include_str!("../../../keel-test/keys/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../../../keel-test/keys/rsa-public.pem");
const EC_PRIVATE: &str = include_str!("../../../keel-test/keys/ec-private.pem");
const EC_PUBLIC: &str = include_str!("../../../keel-test/keys/ec-public.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn config_with_tokens() -> AuthConfig {
    AuthConfig {
        tokens: vec![
            TokenConfig {
                name: "dash".into(),
                token: Secret::new("viewer-token-0000000"),
                role: Role::Viewer,
            },
            TokenConfig {
                name: "ci".into(),
                token: Secret::new("admin-token-00000000"),
                role: Role::Admin,
            },
        ],
        ..AuthConfig::default()
    }
}

fn hs256_config() -> AuthConfig {
    let mut cfg = AuthConfig::default();
    cfg.jwt.secret = Some(Secret::new(SECRET));
    cfg
}

fn bearer(s: &str) -> Vec<u8> {
    format!("Bearer {s}").into_bytes()
}

fn hs256(claims: serde_json::Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[test]
fn static_tokens_map_to_their_roles() {
    let auth = Authenticator::new(&config_with_tokens(), None).unwrap();
    let p = auth
        .authenticate(Some(&bearer("viewer-token-0000000")))
        .unwrap();
    assert_eq!(
        (&*p.subject, p.role, p.kind),
        ("dash", Role::Viewer, PrincipalKind::Token)
    );
    let p = auth
        .authenticate(Some(b"bearer  admin-token-00000000 "))
        .unwrap();
    assert_eq!(p.role, Role::Admin);
    assert_eq!(
        auth.authenticate(Some(&bearer("admin-token-0000000"))),
        Err(AuthError::InvalidToken)
    );
}

#[test]
fn header_shape_errors() {
    let auth = Authenticator::new(&config_with_tokens(), None).unwrap();
    assert_eq!(auth.authenticate(None), Err(AuthError::Missing));
    assert_eq!(
        auth.authenticate(Some(b"Basic dXNlcjpwYXNz")),
        Err(AuthError::Malformed)
    );
    assert_eq!(
        auth.authenticate(Some(b"Bearer")),
        Err(AuthError::Malformed)
    );
    assert_eq!(
        auth.authenticate(Some(b"Bearer   ")),
        Err(AuthError::Malformed)
    );
    assert_eq!(
        auth.authenticate(Some(&[0xff, 0xfe])),
        Err(AuthError::Malformed)
    );
}

#[test]
fn generated_admin_token_is_admin() {
    let admin = Secret::new(crate::generate_token().unwrap());
    let auth = Authenticator::new(&AuthConfig::default(), Some(&admin)).unwrap();
    assert!(auth.has_credentials());
    let p = auth.authenticate(Some(&bearer(admin.expose()))).unwrap();
    assert_eq!(p.role, Role::Admin);
}

#[test]
fn hs256_jwt_roles_expiry_and_not_before() {
    let auth = Authenticator::new(&hs256_config(), None).unwrap();
    let ok = hs256(json!({"sub": "u1", "role": "worker", "exp": now() + 600}));
    let p = auth.authenticate(Some(&bearer(&ok))).unwrap();
    assert_eq!(
        (&*p.subject, p.role, p.kind),
        ("u1", Role::Worker, PrincipalKind::Jwt)
    );

    let roles = hs256(json!({"role": ["viewer", "admin", "nonsense"], "exp": now() + 600}));
    assert_eq!(
        auth.authenticate(Some(&bearer(&roles))).unwrap().role,
        Role::Admin
    );

    let expired = hs256(json!({"role": "admin", "exp": now() - 3600}));
    assert_eq!(
        auth.authenticate(Some(&bearer(&expired))),
        Err(AuthError::Expired)
    );

    let future = hs256(json!({"role": "admin", "exp": now() + 7200, "nbf": now() + 3600}));
    assert_eq!(
        auth.authenticate(Some(&bearer(&future))),
        Err(AuthError::NotYetValid)
    );

    let no_exp = hs256(json!({"role": "admin"}));
    assert!(matches!(
        auth.authenticate(Some(&bearer(&no_exp))),
        Err(AuthError::InvalidJwt(_))
    ));

    let no_role = hs256(json!({"exp": now() + 600}));
    assert!(matches!(
        auth.authenticate(Some(&bearer(&no_role))),
        Err(AuthError::InvalidJwt(_))
    ));

    let bad_role = hs256(json!({"role": "root", "exp": now() + 600}));
    assert!(matches!(
        auth.authenticate(Some(&bearer(&bad_role))),
        Err(AuthError::InvalidJwt(_))
    ));

    let other_key = encode(
        &Header::default(),
        &json!({"role": "admin", "exp": now() + 600}),
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
    )
    .unwrap();
    assert!(matches!(
        auth.authenticate(Some(&bearer(&other_key))),
        Err(AuthError::InvalidJwt(_))
    ));
}

#[test]
fn default_role_issuer_and_audience() {
    let mut cfg = hs256_config();
    cfg.jwt.default_role = Some(Role::Viewer);
    cfg.jwt.issuer = Some("https://id.example".into());
    cfg.jwt.audience = Some("keel".into());
    let auth = Authenticator::new(&cfg, None).unwrap();
    let good = hs256(json!({"iss": "https://id.example", "aud": "keel", "exp": now() + 60}));
    assert_eq!(
        auth.authenticate(Some(&bearer(&good))).unwrap().role,
        Role::Viewer
    );
    let wrong_iss = hs256(json!({"iss": "https://evil.example", "aud": "keel", "exp": now() + 60}));
    assert_eq!(
        auth.authenticate(Some(&bearer(&wrong_iss))),
        Err(AuthError::InvalidJwt("wrong issuer".into()))
    );
    let wrong_aud = hs256(json!({"iss": "https://id.example", "aud": "other", "exp": now() + 60}));
    assert_eq!(
        auth.authenticate(Some(&bearer(&wrong_aud))),
        Err(AuthError::InvalidJwt("wrong audience".into()))
    );
}

#[test]
fn rs256_and_es256_with_pem_keys() {
    for (alg, jwt_alg, private, public) in [
        (
            Algorithm::RS256,
            JwtAlgorithm::RS256,
            RSA_PRIVATE,
            RSA_PUBLIC,
        ),
        (Algorithm::ES256, JwtAlgorithm::ES256, EC_PRIVATE, EC_PUBLIC),
    ] {
        let mut cfg = AuthConfig::default();
        cfg.jwt.algorithm = jwt_alg;
        cfg.jwt.public_key = Some(public.to_owned());
        let auth = Authenticator::new(&cfg, None).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(private.as_bytes()).unwrap(),
        };
        let token = encode(
            &Header::new(alg),
            &json!({"role": "admin", "exp": now() + 60}),
            &key,
        )
        .unwrap();
        assert_eq!(
            auth.authenticate(Some(&bearer(&token))).unwrap().role,
            Role::Admin,
            "{alg:?}"
        );
        // An HS256 token signed with the public key as secret must not pass (algorithm confusion).
        let confused = encode(
            &Header::default(),
            &json!({"role": "admin", "exp": now() + 60}),
            &EncodingKey::from_secret(public.as_bytes()),
        )
        .unwrap();
        assert!(
            auth.authenticate(Some(&bearer(&confused))).is_err(),
            "{alg:?}"
        );
    }
}

#[test]
fn config_errors_name_the_field() {
    let mut cfg = config_with_tokens();
    cfg.tokens[1].token = Secret::new("short");
    let err = Authenticator::new(&cfg, None).err().unwrap();
    assert_eq!(err.field, "auth.tokens[1].token");

    let mut cfg = config_with_tokens();
    cfg.tokens[1].name = "dash".into();
    assert_eq!(cfg.validate().unwrap_err().field, "auth.tokens[1].name");

    let mut cfg = AuthConfig::default();
    cfg.jwt.secret = Some(Secret::new("too-short"));
    assert_eq!(cfg.validate().unwrap_err().field, "auth.jwt.secret");

    let mut cfg = AuthConfig::default();
    cfg.jwt.algorithm = JwtAlgorithm::RS256;
    cfg.jwt.public_key = Some("not a pem".into());
    let err = Authenticator::new(&cfg, None).err().unwrap();
    assert_eq!(err.field, "auth.jwt.public_key");

    let mut cfg = AuthConfig::default();
    cfg.jwt.algorithm = JwtAlgorithm::ES256;
    cfg.jwt.public_key_file = Some("/nonexistent/key.pem".into());
    let err = Authenticator::new(&cfg, None).err().unwrap();
    assert_eq!(err.field, "auth.jwt.public_key_file");
}
