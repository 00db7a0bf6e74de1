//! A NATS JetStream stream of its own for one test, on the shared server: the
//! services under test publish and consume on it through `NATS_STREAM` and
//! `NATS_SUBJECT_PREFIX`, so tests running at once never see each other's
//! events, and the stream is deleted when the test is done.

use crate::events::{Bus, EventSettings, NatsBus};

/// The server for the NATS tests; `TEST_NATS_URL` overrides it.
pub fn nats_url() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A uniquely named stream and subject prefix, deleted when this value drops.
pub struct TestStream {
    pub url: String,
    pub stream: String,
    pub prefix: String,
}

impl Default for TestStream {
    fn default() -> Self {
        Self::new()
    }
}

impl TestStream {
    pub fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            url: nats_url(),
            stream: format!("TEST_{id}"),
            prefix: format!("test_{id}"),
        }
    }

    /// `NATS_URL`, `NATS_STREAM` and `NATS_SUBJECT_PREFIX` for a service under test.
    pub fn vars(&self) -> [(&'static str, String); 3] {
        [
            ("NATS_URL", self.url.clone()),
            ("NATS_STREAM", self.stream.clone()),
            ("NATS_SUBJECT_PREFIX", self.prefix.clone()),
        ]
    }

    /// [`Self::vars`] with owned names, for the overrides a test service takes.
    pub fn owned_vars(&self) -> Vec<(String, String)> {
        self.vars()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect()
    }

    /// The settings a service reads from [`Self::vars`].
    pub fn settings(&self) -> EventSettings {
        EventSettings {
            nats_url: Some(self.url.clone()),
            stream: self.stream.clone(),
            subject_prefix: self.prefix.clone(),
            ..EventSettings::default()
        }
    }

    /// A connection to the stream, which exists once this returns.
    ///
    /// # Panics
    /// When NATS JetStream cannot be reached: those tests fail, never skip.
    pub async fn bus(&self) -> NatsBus {
        let Some(bus @ Bus::Nats(_)) = self.settings().bus().await else {
            panic!(
                "NATS tests need JetStream at {} (set TEST_NATS_URL)",
                self.url
            );
        };
        bus.ensure_stream()
            .await
            .unwrap_or_else(|e| panic!("NATS tests need JetStream at {}: {e:#}", self.url));
        match bus {
            Bus::Nats(nats) => nats,
            Bus::InProcess(_) => unreachable!("matched above"),
        }
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let (url, stream) = (self.url.clone(), self.stream.clone());
        super::block_on_own_thread(async move {
            if let Ok(client) = async_nats::connect(url).await {
                let _ = async_nats::jetstream::new(client)
                    .delete_stream(&stream)
                    .await;
            }
        });
    }
}
