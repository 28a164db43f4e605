//! What this build is: version and source commit, reported by `/health/detailed`, `/metrics` and
//! `/api/v1/system/info`.

use serde::Serialize;

/// Version and commit of the running keel.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BuildInfo {
    /// Semantic version of the keel crates.
    pub version: &'static str,
    /// Source commit the binary was built from (`KEEL_BUILD_COMMIT` at build time), or `unknown`.
    pub commit: &'static str,
}

impl BuildInfo {
    /// The build info of this binary.
    pub fn current() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION"),
            commit: option_env!("KEEL_BUILD_COMMIT").unwrap_or("unknown"),
        }
    }
}
