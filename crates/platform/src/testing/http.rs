//! An HTTP client for one running service that reads our envelope, and the
//! checks that an answer gives nothing of the inside away.

use std::net::{IpAddr, SocketAddr};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// One HTTP answer, body parsed as JSON (`Value::Null` when it is not JSON).
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// Words that would mean an answer leaks SQL, driver, panic or source details.
pub const INTERNALS: [&str; 15] = [
    "SELECT",
    "INSERT",
    "UPDATE users",
    "UPDATE orders",
    "sqlx",
    "SqlxError",
    "tokio_postgres",
    "deadpool",
    "panicked",
    ".rs:",
    "/src/",
    "constraint",
    "SQLSTATE",
    "syntax error at",
    "rust_decimal",
];

/// # Panics
/// When `text` contains one of [`INTERNALS`].
pub fn assert_no_internals(text: &str) {
    for word in INTERNALS {
        assert!(!text.contains(word), "leaks {word:?}: {text}");
    }
}

impl TestResponse {
    /// The `access_token` of a token answer (user-service's token or login).
    ///
    /// # Panics
    /// When the answer is not 200 with a token.
    pub fn access_token(&self) -> String {
        assert_eq!(self.status, StatusCode::OK, "token: {}", self.body);
        self.body["data"]["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Asserts the error envelope like [`Self::assert_error`], and that the body
    /// gives nothing of the inside away; returns the message.
    ///
    /// # Panics
    /// When the status, code or envelope differ, or the body leaks internals.
    pub fn assert_clean_error(&self, status: u16, code: &str) -> String {
        let message = self.assert_error(status, code);
        assert_no_internals(&self.body.to_string());
        message
    }

    /// Asserts the error envelope with this status and code, and returns its message.
    ///
    /// # Panics
    /// When the answer is anything else.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.body["success"], false, "body: {}", self.body);
        assert_eq!(self.body["error"]["code"], code, "body: {}", self.body);
        self.body["error"]["message"]
            .as_str()
            .expect("error message")
            .to_owned()
    }

    /// The field names listed in `error.details`.
    pub fn invalid_fields(&self) -> Vec<String> {
        self.body["error"]["details"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A client for one running service.
#[derive(Clone)]
pub struct TestClient {
    pub address: SocketAddr,
    pub http: reqwest::Client,
}

/// A client whose connections come from `local` (any 127.x address works on
/// Linux), so tests can act as different client IPs.
pub fn client_from(local: IpAddr) -> reqwest::Client {
    client_builder(local).build().expect("client")
}

fn client_builder(local: IpAddr) -> reqwest::ClientBuilder {
    reqwest::Client::builder().local_address(local).no_proxy()
}

impl TestClient {
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            http: client_from(IpAddr::from([127, 0, 0, 1])),
        }
    }

    /// A client for the same service that sends `Authorization: Bearer <token>`
    /// on every request (also those built from its `http`).
    ///
    /// # Panics
    /// When the token is not a valid header value.
    pub fn with_token(&self, token: &str) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("token header"),
        );
        Self {
            address: self.address,
            http: client_builder(IpAddr::from([127, 0, 0, 1]))
                .default_headers(headers)
                .build()
                .expect("client"),
        }
    }

    /// A client for the same service without any token.
    pub fn anonymous(&self) -> Self {
        Self::new(self.address)
    }

    /// A token from the service's `/api/v1/auth/token` for this client.
    ///
    /// # Panics
    /// When the service does not answer 200 with a token.
    pub async fn client_token(&self, client_id: &str, secret: &str) -> String {
        let body = serde_json::json!({"client_id": client_id, "client_secret": secret});
        self.token("/api/v1/auth/token", &body).await
    }

    /// Logs a user in at user-service and returns its token, asserting 200.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let body = serde_json::json!({"email": email, "password": password});
        self.token("/api/v1/auth/login", &body).await
    }

    /// The token user-service answers to `body` at `path`, sent without one.
    async fn token(&self, path: &str, body: &Value) -> String {
        self.anonymous().post_json(path, body).await.access_token()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// # Panics
    /// When the request cannot be sent at all.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> TestResponse {
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(self.http.get(self.url(path))).await
    }

    /// GET with one extra header (a request id, a forwarded-for chain).
    pub async fn get_with_header(&self, path: &str, name: &str, value: &str) -> TestResponse {
        self.send(self.http.get(self.url(path)).header(name, value))
            .await
    }

    pub async fn delete(&self, path: &str) -> TestResponse {
        self.send(self.http.delete(self.url(path))).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> TestResponse {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> TestResponse {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    /// POST with an `Idempotency-Key`.
    pub async fn post_json_keyed(&self, path: &str, key: &str, body: &Value) -> TestResponse {
        self.send_keyed(self.http.post(self.url(path)), key, body)
            .await
    }

    /// PUT with an `Idempotency-Key`.
    pub async fn put_json_keyed(&self, path: &str, key: &str, body: &Value) -> TestResponse {
        self.send_keyed(self.http.put(self.url(path)), key, body)
            .await
    }

    async fn send_keyed(
        &self,
        request: reqwest::RequestBuilder,
        key: &str,
        body: &Value,
    ) -> TestResponse {
        self.send(request.header("Idempotency-Key", key).json(body))
            .await
    }

    /// The raw body of a GET, whatever its status (`/metrics`, the JWKS).
    ///
    /// # Panics
    /// When the request cannot be sent or the body read.
    pub async fn get_text(&self, path: &str) -> String {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {path} body: {e}"))
    }

    /// The raw `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.get_text("/metrics").await
    }

    /// Registers a user by itself (no token, with a password) and logs it in,
    /// against user-service; returns the user's `data` and its access token.
    ///
    /// # Panics
    /// When the registration is not 201 or the login not 200.
    pub async fn register_and_log_in(&self, email: &str, password: &str) -> (Value, String) {
        let registered = self
            .anonymous()
            .post_json(
                "/api/v1/users",
                &serde_json::json!({"email": email, "name": "Registered User", "age": 30, "password": password}),
            )
            .await;
        assert_eq!(
            registered.status,
            StatusCode::CREATED,
            "register: {}",
            registered.body
        );
        let token = self.login(email, password).await;
        (registered.body["data"].clone(), token)
    }
}

/// The value of one sample in Prometheus text output, if present.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}
