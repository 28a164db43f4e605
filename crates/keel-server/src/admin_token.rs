//! The admin token keel generates on first start when no credential is configured.
//!
//! It is stored in `<data_dir>/admin-token` with mode 0600 and reused by later starts. The banner
//! names the file, never the token. Once `[auth]` configures tokens or a JWT key, the file is
//! ignored.

use std::io::Write;
use std::path::{Path, PathBuf};

use keel_core::Secret;

/// The file name under the data directory.
pub const FILE_NAME: &str = "admin-token";

/// The generated admin token and where it lives.
#[derive(Debug, Clone)]
pub struct AdminToken {
    /// `<data_dir>/admin-token`.
    pub path: PathBuf,
    /// The token.
    pub token: Secret,
    /// Whether this start created it.
    pub created: bool,
}

/// Why the admin token cannot be read or created.
#[derive(Debug, thiserror::Error)]
#[error("admin token file {path}: {reason}")]
pub struct AdminTokenError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// Reads `<data_dir>/admin-token`, creating it (mode 0600) with a fresh token if missing.
pub fn ensure(data_dir: &Path) -> Result<AdminToken, AdminTokenError> {
    let path = data_dir.join(FILE_NAME);
    let err = |reason: String| AdminTokenError {
        path: path.clone(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim();
            if token.len() < 16 {
                return Err(err("holds no usable token (at least 16 characters); delete it to generate a new one".into()));
            }
            warn_if_readable_by_others(&path);
            return Ok(AdminToken {
                path: path.clone(),
                token: Secret::new(token),
                created: false,
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
    }
    let token =
        keel_auth::generate_token().map_err(|e| err(format!("no randomness available: {e}")))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(|e| err(e.to_string()))?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| err(e.to_string()))?;
    Ok(AdminToken {
        path,
        token: Secret::new(token),
        created: true,
    })
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "admin token file is readable by other users; chmod 600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_private_mode_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path()).unwrap();
        assert!(first.created);
        assert!(first.token.expose().starts_with("keel_"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let second = ensure(dir.path()).unwrap();
        assert!(!second.created);
        assert_eq!(second.token, first.token);
    }

    #[test]
    fn an_empty_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "\n").unwrap();
        let err = ensure(dir.path()).unwrap_err();
        assert!(err.to_string().contains("admin-token"), "{err}");
    }
}
