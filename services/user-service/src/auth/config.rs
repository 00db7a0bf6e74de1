//! The identity provider's settings: the signing key, the clients of the token
//! endpoint, token lifetime, registration and login throttling.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use platform::auth::{
    ClientCredentials, EmbeddedSecrets, Role, SigningKey, VerifierSettings, client_credentials,
    embedded_secrets, public_jwk_from_pem, required_on_postgres,
};
use platform::config::{ConfigError, Env};
use platform::db::DatabaseSettings;

/// Everything user-service needs to issue and verify tokens.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub verifier: VerifierSettings,
    pub signing_key: Arc<SigningKey>,
    /// Public keys of earlier signing keys, still published so their live
    /// tokens keep verifying after a rotation.
    pub previous_keys: Vec<Jwk>,
    /// `AUTH_TOKEN_TTL_MINUTES`
    pub token_ttl: Duration,
    /// The operator client and the roles it may ask for (`AUTH_CLIENT_ROLES`).
    pub operator: ClientCredentials,
    pub operator_roles: Vec<Role>,
    /// The client other services use; it gets the role `service`.
    pub service: ClientCredentials,
    /// `USER_SERVICE_OPEN_REGISTRATION`: `POST /users` without a token registers.
    pub open_registration: bool,
    /// Failed logins allowed per email and per client IP within the window.
    pub login_max_failures: u32,
    pub login_failure_window: Duration,
    /// Where secrets were generated, when they were (logged once at start).
    pub generated_in: Option<EmbeddedSecrets>,
}

impl AuthConfig {
    /// Reads `AUTH_*` (shared) and `USER_SERVICE_*` (own) variables. On the
    /// embedded SQLite default, a missing key or secret is generated beside the
    /// database file; on PostgreSQL it is an error naming the variable.
    ///
    /// # Errors
    /// The first variable that is missing where required, or invalid.
    pub fn from_env(
        shared: &Env<'_>,
        own: &Env<'_>,
        database: &DatabaseSettings,
    ) -> Result<Self, ConfigError> {
        let embedded = embedded_secrets(database);
        let (signing_key, generated_key) = signing_key(shared, embedded.as_ref())?;
        let operator = client_credentials(
            shared,
            "AUTH_CLIENT_ID",
            "operator",
            "AUTH_CLIENT_SECRET",
            embedded.as_ref(),
        )?;
        let service = client_credentials(
            shared,
            "AUTH_SERVICE_CLIENT_ID",
            "order-service",
            "AUTH_SERVICE_CLIENT_SECRET",
            embedded.as_ref(),
        )?;
        if service.id == operator.id {
            return Err(invalid(
                shared,
                "AUTH_SERVICE_CLIENT_ID",
                &service.id,
                "must differ from AUTH_CLIENT_ID",
            ));
        }
        let generated_secrets = shared.raw("AUTH_CLIENT_SECRET").is_none()
            || shared.raw("AUTH_SERVICE_CLIENT_SECRET").is_none();
        Ok(Self {
            verifier: VerifierSettings::from_env(shared)?,
            signing_key: Arc::new(signing_key),
            previous_keys: previous_keys(shared)?,
            token_ttl: Duration::from_secs(
                60 * shared
                    .parse_or::<u64>("AUTH_TOKEN_TTL_MINUTES", 15)?
                    .clamp(1, 24 * 60),
            ),
            operator,
            operator_roles: operator_roles(shared)?,
            service,
            open_registration: own.parse_or("OPEN_REGISTRATION", true)?,
            login_max_failures: shared.parse_or("AUTH_LOGIN_MAX_FAILURES", 5)?,
            login_failure_window: shared.seconds_or("AUTH_LOGIN_FAILURE_WINDOW", 15 * 60)?,
            generated_in: embedded.filter(|_| generated_key || generated_secrets),
        })
    }
}

/// The signing key from `AUTH_JWT_PRIVATE_KEY_FILE`, or generated (embedded
/// default); the flag says whether it came from the generated file.
fn signing_key(
    env: &Env<'_>,
    embedded: Option<&EmbeddedSecrets>,
) -> Result<(SigningKey, bool), ConfigError> {
    const VARIABLE: &str = "AUTH_JWT_PRIVATE_KEY_FILE";
    let (pem, path, generated) = match (env.raw(VARIABLE), embedded) {
        (Some(path), _) => {
            let pem = std::fs::read(&path)
                .map_err(|e| invalid(env, VARIABLE, &path, &format!("cannot read: {e}")))?;
            (pem, path, false)
        }
        (None, Some(embedded)) => {
            let pem = embedded.signing_key_pem(VARIABLE)?;
            (pem.into_bytes(), embedded.dir().display().to_string(), true)
        }
        (None, None) => return Err(required_on_postgres(VARIABLE)),
    };
    let key = SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| invalid(env, VARIABLE, &path, &e.to_string()))?;
    Ok((key, generated))
}

fn previous_keys(env: &Env<'_>) -> Result<Vec<Jwk>, ConfigError> {
    const VARIABLE: &str = "AUTH_JWT_PREVIOUS_PUBLIC_KEY_FILES";
    let Some(list) = env.raw(VARIABLE) else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(str::trim)
        .filter(|path| !path.is_empty())
        .map(|path| {
            let pem = std::fs::read(path)
                .map_err(|e| invalid(env, VARIABLE, path, &format!("cannot read: {e}")))?;
            public_jwk_from_pem(&pem).map_err(|e| invalid(env, VARIABLE, path, &e.to_string()))
        })
        .collect()
}

fn operator_roles(env: &Env<'_>) -> Result<Vec<Role>, ConfigError> {
    const VARIABLE: &str = "AUTH_CLIENT_ROLES";
    let list = env.raw(VARIABLE).unwrap_or_else(|| "admin".to_owned());
    let roles = list
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            Role::parse(name)
                .ok_or_else(|| invalid(env, VARIABLE, &list, "roles are user, admin or service"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if roles.is_empty() {
        return Err(invalid(env, VARIABLE, &list, "name at least one role"));
    }
    Ok(roles)
}

fn invalid(env: &Env<'_>, variable: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError {
        variable: env.name(variable),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}
