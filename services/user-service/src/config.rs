//! user-service settings from `USER_SERVICE_*` variables (names and defaults as
//! the contract) and the shared `AUTH_*` variables.

use platform::cli::ServiceConfig;
use platform::config::{ConfigError, Env, HttpSettings, Lookup};
use platform::db::DatabaseSettings;

use crate::auth::config::AuthConfig;

pub const SERVICE_NAME: &str = "user-service";
const PREFIX: &str = "USER_SERVICE";

/// Everything the service reads at start.
#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub auth: AuthConfig,
    pub events: platform::events::EventSettings,
}

impl ServiceConfig for Config {
    fn http(&self) -> &HttpSettings {
        &self.http
    }

    fn database(&self) -> &DatabaseSettings {
        &self.database
    }

    fn from_lookup(lookup: Lookup<'_>) -> Result<Self, ConfigError> {
        let env = Env::new(PREFIX, lookup);
        let database = DatabaseSettings::from_env(&env, "userdb", SERVICE_NAME)?;
        Ok(Self {
            http: HttpSettings::from_env(&env, SERVICE_NAME, 8081)?,
            auth: AuthConfig::from_env(&Env::new("", lookup), &env, &database)?,
            events: platform::events::EventSettings::from_env(&Env::new("", lookup))?,
            database,
        })
    }
}
