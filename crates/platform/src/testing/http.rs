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
        let response = self
            .anonymous()
            .post_json(
                "/api/v1/auth/token",
                &serde_json::json!({"client_id": client_id, "client_secret": secret}),
            )
            .await;
        assert_eq!(response.status, StatusCode::OK, "token: {}", response.body);
        response.body["data"]["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
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

    /// The raw `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

/// The value of one sample in Prometheus text output, if present.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}
