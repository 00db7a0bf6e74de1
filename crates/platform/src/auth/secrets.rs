//! Client secrets and the signing key: never printed, compared in constant time,
//! never a value anyone could know, and generated on first start for the
//! embedded default so that `cargo run` needs no set-up and shares no secret.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ConfigError;

/// A secret value. `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A secret sent by a client (the token endpoint's `client_secret`).
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

impl utoipa::PartialSchema for Secret {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Password,
            )))
            .min_length(Some(1))
            .max_length(Some(512))
            .write_only(true)
            .into()
    }
}

impl utoipa::ToSchema for Secret {}

impl Secret {
    /// 32 random bytes, base64url: 43 characters.
    ///
    /// # Panics
    /// When the system has no random source (nothing could be kept secret then).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the system's random source");
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Equality that takes the same time wherever the inputs differ, and whatever
    /// their lengths (both sides are hashed first).
    pub fn matches(&self, given: &str) -> bool {
        let ours = Sha256::digest(self.0.as_bytes());
        let theirs = Sha256::digest(given.as_bytes());
        ours.ct_eq(&theirs).into()
    }
}

/// Fewer characters than this is a guessable secret.
const MIN_SECRET_LEN: usize = 16;

/// Words that only appear in placeholders and examples.
const PLACEHOLDER_WORDS: [&str; 6] = [
    "change",
    "example",
    "placeholder",
    "secret",
    "password",
    "default",
];

/// Accepts a configured secret only when nobody else could know it: long enough,
/// and not a placeholder from a README, `.env.example` or a tutorial.
///
/// # Errors
/// A [`ConfigError`] naming the variable (the value is not repeated).
pub fn configured_secret(variable: &str, value: &str) -> Result<Secret, ConfigError> {
    let lower = value.to_ascii_lowercase();
    let reason = if value.chars().count() < MIN_SECRET_LEN {
        Some(format!("must be at least {MIN_SECRET_LEN} characters"))
    } else if PLACEHOLDER_WORDS.iter().any(|w| lower.contains(w)) {
        Some("looks like a placeholder; generate one (e.g. `openssl rand -base64 32`)".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ConfigError {
            variable: variable.to_owned(),
            value: "<hidden>".to_owned(),
            reason,
        }),
        None => Ok(Secret(value.to_owned())),
    }
}

/// Secrets generated on first start beside the embedded database (`./data/`),
/// readable by the owner only, and reused on every later start.
#[derive(Debug, Clone)]
pub struct EmbeddedSecrets {
    dir: PathBuf,
}

/// The file holding the generated client secrets, in `.env` syntax.
pub const CLIENTS_FILE: &str = "auth.env";
/// The file holding the generated signing key (PKCS#8 PEM).
pub const SIGNING_KEY_FILE: &str = "jwt-signing-key.pem";

impl EmbeddedSecrets {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The generated value of `variable` (`AUTH_CLIENT_SECRET` or
    /// `AUTH_SERVICE_CLIENT_SECRET`), creating the file with fresh secrets when
    /// it does not exist yet.
    ///
    /// # Errors
    /// When the file cannot be created or read, or lacks the variable.
    pub fn client_secret(&self, variable: &str) -> Result<Secret, ConfigError> {
        let path = self.dir.join(CLIENTS_FILE);
        let contents = format!(
            "# Generated on first start; keep private. Used when the variables are not set.\n\
             AUTH_CLIENT_SECRET={}\nAUTH_SERVICE_CLIENT_SECRET={}\n",
            Secret::generate().0,
            Secret::generate().0
        );
        create_once(&path, &contents).map_err(|e| file_error(variable, &path, &e))?;
        let found = dotenvy::from_path_iter(&path)
            .map_err(|e| file_error(variable, &path, &e))?
            .filter_map(Result::ok)
            .find(|(name, _)| name == variable)
            .map(|(_, value)| Secret(value));
        found.ok_or_else(|| file_error(variable, &path, &"the variable is missing"))
    }

    /// The generated signing key's PEM, created on first need.
    ///
    /// # Errors
    /// When the key cannot be generated, stored or read.
    pub fn signing_key_pem(&self, variable: &str) -> Result<String, ConfigError> {
        let path = self.dir.join(SIGNING_KEY_FILE);
        if !path.exists() {
            let (_, pem) =
                super::SigningKey::generate().map_err(|e| file_error(variable, &path, &e))?;
            create_once(&path, &pem).map_err(|e| file_error(variable, &path, &e))?;
        }
        std::fs::read_to_string(&path).map_err(|e| file_error(variable, &path, &e))
    }
}

fn file_error(variable: &str, path: &Path, err: &dyn std::fmt::Display) -> ConfigError {
    ConfigError {
        variable: variable.to_owned(),
        value: String::new(),
        reason: format!("not set, and {} could not be used: {err}", path.display()),
    }
}

/// Writes `contents` to `path` unless it exists, atomically: a temporary file
/// (mode 0600) is linked into place, so two processes starting at once agree on
/// one file and nobody reads a half-written one.
fn create_once(path: &Path, contents: &str) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("secret"),
        std::process::id()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&temporary)
        .and_then(|mut file| file.write_all(contents.as_bytes()).and(file.sync_all()));
    let linked = written.and_then(|()| match std::fs::hard_link(&temporary, path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    });
    let _ = std::fs::remove_file(&temporary);
    linked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_themselves_and_never_print() {
        let secret = Secret::generate();
        assert_eq!(secret.expose().len(), 43);
        assert!(secret.matches(secret.expose()));
        assert!(!secret.matches(""));
        assert!(!secret.matches(&format!("{}x", secret.expose())));
        assert_eq!(format!("{secret:?}"), "Secret(***)");
    }

    #[test]
    fn short_and_placeholder_secrets_are_refused_without_repeating_them() {
        for bad in [
            "short",
            "change-me-please-now",
            "my-example-secret-123",
            "SuperSecretValue123",
        ] {
            let err = configured_secret("AUTH_CLIENT_SECRET", bad).unwrap_err();
            assert_eq!(err.variable, "AUTH_CLIENT_SECRET");
            assert!(!err.to_string().contains(bad), "{err}");
        }
        configured_secret("AUTH_CLIENT_SECRET", "q8Vn2LrX0aZp5WcT7yHk").unwrap();
    }

    #[test]
    fn generated_secrets_are_private_and_reused() {
        let dir = tempfile_dir();
        let secrets = EmbeddedSecrets::new(dir.join("data"));
        let first = secrets.client_secret("AUTH_CLIENT_SECRET").unwrap();
        let service = secrets.client_secret("AUTH_SERVICE_CLIENT_SECRET").unwrap();
        assert_ne!(first.expose(), service.expose());
        let again = EmbeddedSecrets::new(dir.join("data"))
            .client_secret("AUTH_CLIENT_SECRET")
            .unwrap();
        assert_eq!(first.expose(), again.expose());
        let pem = secrets
            .signing_key_pem("AUTH_JWT_PRIVATE_KEY_FILE")
            .unwrap();
        assert_eq!(
            pem,
            secrets
                .signing_key_pem("AUTH_JWT_PRIVATE_KEY_FILE")
                .unwrap()
        );
        #[cfg(unix)]
        for file in [CLIENTS_FILE, SIGNING_KEY_FILE] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("data").join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("secrets-test-{}", Secret::generate().0));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
