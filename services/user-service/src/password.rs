//! Passwords: 8..128 characters and nothing else asked of them (NIST SP 800-63B),
//! stored only as an argon2id PHC string with OWASP's parameters, never printed.

use std::sync::{Arc, LazyLock};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::Deserialize;
use utoipa::openapi::{KnownFormat, ObjectBuilder, RefOr, Schema, SchemaFormat, Type};

pub const MIN_CHARS: usize = 8;
pub const MAX_CHARS: usize = 128;

/// A password as the client sent it. `Debug` hides it and it has no `Serialize`,
/// so it cannot reach a log line or an answer by accident.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Password(Arc<str>);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    /// # Errors
    /// When the length is outside 8..128 characters.
    pub fn parse(value: &str) -> Result<Self, String> {
        let chars = value.chars().count();
        if (MIN_CHARS..=MAX_CHARS).contains(&chars) {
            Ok(Self(value.into()))
        } else {
            Err(format!(
                "must be between {MIN_CHARS} and {MAX_CHARS} characters"
            ))
        }
    }

    /// The argon2id PHC string of this password (on a blocking thread: it costs
    /// tens of milliseconds of CPU by design).
    ///
    /// # Errors
    /// When hashing fails (no randomness for the salt).
    pub async fn hash(&self) -> anyhow::Result<String> {
        let password = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|e| anyhow::anyhow!("password hashing failed: {e}"))
        })
        .await?
    }

    /// Whether this password matches `stored`, or the dummy hash when there is no
    /// stored hash (unknown user), so both cases cost the same time.
    pub async fn verify(&self, stored: Option<String>) -> bool {
        let password = Arc::clone(&self.0);
        let known = stored.is_some();
        let checked = tokio::task::spawn_blocking(move || {
            let phc = stored.as_deref().unwrap_or(DUMMY_HASH.as_str());
            PasswordHash::new(phc).is_ok_and(|hash| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &hash)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        known && checked
    }
}

impl TryFrom<String> for Password {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

/// The hash an unknown email is checked against: a random password nobody knows,
/// hashed with the same parameters as real ones.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let unguessable = platform::auth::Secret::generate();
    Argon2::default()
        .hash_password(unguessable.expose().as_bytes())
        .expect("hashing a random password")
        .to_string()
});

/// Computes the dummy hash now, so the first failed login costs no more than later ones.
pub fn warm_up() {
    LazyLock::force(&DUMMY_HASH);
}

impl utoipa::PartialSchema for Password {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Password)))
            .min_length(Some(MIN_CHARS))
            .max_length(Some(MAX_CHARS))
            .write_only(true)
            .description(Some(
                "8 to 128 characters, no other rule; stored only as an argon2id hash",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Password {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only_and_is_argon2id() {
        let password = Password::parse("correct horse battery").unwrap();
        let hash = password.hash().await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(!hash.contains("correct horse"));
        assert!(password.verify(Some(hash.clone())).await);
        assert!(
            !Password::parse("wrong horse battery")
                .unwrap()
                .verify(Some(hash))
                .await
        );
        assert!(
            !password.verify(None).await,
            "no stored hash never verifies"
        );
        assert!(!password.verify(Some("not a hash".to_owned())).await);
    }

    #[test]
    fn length_counts_characters_and_debug_hides_the_value() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse(&"é".repeat(8)).is_ok());
        assert!(Password::parse(&"x".repeat(129)).is_err());
        let password = Password::parse("hunter2hunter2").unwrap();
        assert_eq!(format!("{password:?}"), "Password(***)");
    }
}
