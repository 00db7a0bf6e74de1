//! Bad input and abuse: every request gets a clear 4xx envelope and the service keeps serving.
//!
//! Where hyper answers by itself (a request head it cannot parse or will not hold)
//! the answer is hyper's bare status with an empty body, not our envelope: the
//! request never reaches the router. Those cases assert exactly that.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, TestApp, client_from, spawn_app, spawn_app_with};
use platform::backend_tests;
use platform::testing::{TestResponse, assert_no_internals, metric_value};

/// The service still creates and reads users after whatever came before.
async fn assert_still_serving(app: &TestApp) {
    let email = format!("alive-{}@example.com", uuid::Uuid::new_v4().simple());
    let user = app.create_user(&email, "Still Serving", 33).await;
    let fetched = app.get(&format!("/api/v1/users/{}", user["id"])).await;
    assert_eq!(fetched.status, StatusCode::OK, "{}", fetched.body);
}

/// Writes raw bytes on a fresh connection and returns whatever the server sends
/// back before it closes the connection or `wait` passes.
async fn raw_exchange(address: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    // The server may answer and close before reading everything; that is fine.
    let _ = stream.write_all(request).await;
    let mut received = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut received)).await;
    String::from_utf8_lossy(&received).into_owned()
}

/// The status code of a raw HTTP/1.1 answer (0 when there was none).
fn raw_status(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The body of a raw HTTP/1.1 answer, parsed as JSON (`Null` when it is not).
fn raw_json(response: &str) -> Value {
    response
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null)
}

/// The early 413 for a declared oversize body reaches a client that writes the
/// whole body before it reads (curl does not, so it always saw it; reqwest and
/// Python's urllib do, and lost it to a reset in about half their tries).
#[tokio::test]
async fn a_client_that_writes_its_whole_oversized_body_before_reading_gets_the_413() {
    let app = spawn_app(Backend::Sqlite).await;
    let body = vec![b'x'; 1024 * 1024];
    let head = post_head(
        "/api/v1/users",
        &format!("Content-Length: {}\r\n", body.len()),
    );
    for _ in 0..5 {
        let mut stream = TcpStream::connect(app.address).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("head sent");
        // A slow uploader: by now the server has refused the body and answered.
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream
            .write_all(&body)
            .await
            .expect("the whole body is accepted, not reset");
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received))
            .await
            .expect("answered in time")
            .expect("answer read, not reset");
        let answer = String::from_utf8_lossy(&received);
        assert_eq!(raw_status(&answer), 413, "{answer}");
        assert_eq!(
            raw_json(&answer)["error"]["code"],
            "PAYLOAD_TOO_LARGE",
            "{answer}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
    assert_still_serving(&app).await;
}

/// Sends `request` on a fresh connection and asserts the answer is `status` with
/// the envelope's `code`.
async fn assert_raw_error(address: SocketAddr, request: &[u8], status: u16, code: &str) {
    let answer = raw_exchange(address, request, Duration::from_secs(5)).await;
    assert_eq!(raw_status(&answer), status, "{answer}");
    assert_eq!(raw_json(&answer)["error"]["code"], code, "{answer}");
}

fn post_head(path: &str, extra_headers: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nConnection: close\r\n{extra_headers}\r\n"
    )
}

async fn post_raw_body(app: &TestApp, path: &str, body: impl Into<reqwest::Body>) -> TestResponse {
    app.send(
        app.http
            .post(app.url(path))
            .header("content-type", "application/json")
            .body(body),
    )
    .await
}

/// `depth` levels of `open`, then `leaf`, then as many `close`.
fn nested(open: &str, leaf: &str, close: &str, depth: usize) -> String {
    format!("{}{leaf}{}", open.repeat(depth), close.repeat(depth))
}

#[tokio::test]
async fn oversized_bodies_are_413_however_their_length_is_declared() {
    let app = spawn_app(Backend::Sqlite).await;
    let big_name = "x".repeat(70 * 1024);
    let body = json!({"email": "big@example.com", "name": big_name, "age": 30}).to_string();

    // Honest Content-Length over 64 KiB.
    let declared = post_raw_body(&app, "/api/v1/users", body.clone()).await;
    declared.assert_clean_error(413, "PAYLOAD_TOO_LARGE");

    // No Content-Length at all: chunked transfer encoding, counted as it arrives.
    let mut chunked = post_head("/api/v1/users", "Transfer-Encoding: chunked\r\n");
    for chunk in body.as_bytes().chunks(4096) {
        chunked.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            String::from_utf8_lossy(chunk)
        ));
    }
    chunked.push_str("0\r\n\r\n");
    assert_raw_error(app.address, chunked.as_bytes(), 413, "PAYLOAD_TOO_LARGE").await;

    // A Content-Length of a terabyte with two bytes behind it: refused at once
    // from the header, not after waiting for the request timeout.
    let started = Instant::now();
    let head = post_head("/api/v1/users", "Content-Length: 1000000000000\r\n");
    assert_raw_error(
        app.address,
        format!("{head}{{}}").as_bytes(),
        413,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    // A Content-Length smaller than the body: only the declared bytes are the
    // body (broken JSON, 400); the rest is not a request, and hyper answers 400.
    let head = post_head("/api/v1/users", "Content-Length: 10\r\n");
    assert_raw_error(
        app.address,
        format!("{head}{body}").as_bytes(),
        400,
        "BAD_REQUEST",
    )
    .await;

    // A Content-Length larger than what arrives before the client stops sending.
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let head = post_head("/api/v1/users", "Content-Length: 500\r\n");
    stream
        .write_all(format!("{head}{{\"email\":").as_bytes())
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
    let answer = String::from_utf8_lossy(&received);
    assert_eq!(raw_status(&answer), 400, "{answer}");
    assert_eq!(
        raw_json(&answer)["error"]["code"],
        "BAD_REQUEST",
        "{answer}"
    );
    assert_no_internals(&answer);

    assert_still_serving(&app).await;
}

/// A body that stops arriving (declared longer than sent, connection left open)
/// cannot be told from a slow network; it is bounded by the request timeout and
/// answered as every timeout is, 503 in the envelope, not held forever.
#[tokio::test]
async fn a_body_that_stops_arriving_is_cut_at_the_request_timeout() {
    let app = spawn_app_with(Backend::Sqlite, &[("USER_SERVICE_REQUEST_TIMEOUT", "1")]).await;
    let head = post_head("/api/v1/users", "Content-Length: 500\r\n");
    let started = Instant::now();
    let answer = raw_exchange(
        app.address,
        format!("{head}{{\"email\":").as_bytes(),
        Duration::from_secs(4),
    )
    .await;
    let elapsed = started.elapsed();
    println!("stalled body answered after {elapsed:?}");
    assert_eq!(raw_status(&answer), 503, "{answer}");
    assert_eq!(raw_json(&answer)["error"]["message"], "request timed out");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn deeply_nested_json_is_a_400_not_a_crash() {
    let app = spawn_app(Backend::Sqlite).await;
    let user = app.create_user("deep@example.com", "Deep Diver", 30).await;
    let user_path = format!("/api/v1/users/{}", user["id"]);
    let depth = 10_000;
    let cases = [
        // Not an object at all.
        (nested("[", "", "]", depth), "body"),
        // An unknown key is refused before its value is read.
        (nested("{\"a\":", "1", "}", depth), "a"),
        // A known field whose value is a deep structure: refused at its first token.
        (
            format!(r#"{{"name":{}}}"#, nested("[", "", "]", depth)),
            "name",
        ),
        (
            format!(r#"{{"age":{}}}"#, nested("{\"a\":", "1", "}", depth)),
            "age",
        ),
        // Never closed.
        (format!(r#"{{"name":{}"#, "[".repeat(depth)), "name"),
    ];
    for (body, field) in cases {
        assert!(body.len() < 64 * 1024, "stays under the body limit");
        for (method, path) in [("POST", "/api/v1/users"), ("PUT", user_path.as_str())] {
            let request = app
                .http
                .request(method.parse().unwrap(), app.url(path))
                .header("content-type", "application/json")
                .body(body.clone());
            let response = app.send(request).await;
            let message = response.assert_clean_error(400, "VALIDATION_ERROR");
            assert!(
                response.invalid_fields().contains(&field.to_owned()),
                "{method} {field}: {message}"
            );
        }
    }
    // Deep garbage that is not even valid JSON.
    let broken = post_raw_body(&app, "/api/v1/users", format!("{{{}", "[{".repeat(depth))).await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST, "{}", broken.body);
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn invalid_utf8_in_body_query_and_path_is_a_400() {
    let app = spawn_app(Backend::Sqlite).await;
    // Invalid bytes inside a string value: the document is not JSON text.
    let response = post_raw_body(
        &app,
        "/api/v1/users",
        &b"{\"email\":\"a@example.com\",\"name\":\"J\xffo\",\"age\":3}"[..],
    )
    .await;
    response.assert_clean_error(400, "BAD_REQUEST");
    // An escaped lone surrogate is well-formed JSON but no Unicode text: the field is named.
    let response = post_raw_body(
        &app,
        "/api/v1/users",
        r#"{"email":"a@example.com","name":"J\ud800o","age":3}"#,
    )
    .await;
    response.assert_clean_error(400, "VALIDATION_ERROR");
    assert_eq!(response.invalid_fields(), ["name"]);
    // A byte-order mark is not JSON (RFC 8259 lets parsers refuse it).
    let bom = post_raw_body(
        &app,
        "/api/v1/users",
        &b"\xef\xbb\xbf{\"email\":\"a@example.com\",\"name\":\"Bom\",\"age\":3}"[..],
    )
    .await;
    assert_eq!(bom.status, StatusCode::BAD_REQUEST, "{}", bom.body);
    assert_no_internals(&bom.body.to_string());
    // Percent-encoded invalid UTF-8 in a query value names the parameter.
    let response = app.get("/api/v1/users?search=%FF%FE").await;
    let message = response.assert_clean_error(400, "VALIDATION_ERROR");
    assert_eq!(response.invalid_fields(), ["search"], "{message}");
    // ... in a parameter name it cannot name it.
    app.get("/api/v1/users?%C0%AF=1")
        .await
        .assert_clean_error(400, "BAD_REQUEST");
    // ... in the id segment.
    for path in [
        "/api/v1/users/%FF",
        "/api/v1/users/%C0%AF",
        "/api/v1/users/1%00",
    ] {
        app.get(path).await.assert_clean_error(400, "BAD_REQUEST");
    }
    // Raw bytes outside ASCII in the request line never reach the router: hyper
    // answers a bare 400 and closes.
    let answer = raw_exchange(
        app.address,
        b"GET /api/v1/users?search=\xff HTTP/1.1\r\nHost: test\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    assert_still_serving(&app).await;
}

backend_tests! {
    async fn wrong_types_missing_and_extra_fields_name_the_field(backend) {
        let app = spawn_app(backend).await;
        let user = app.create_user("types@example.com", "Type Checker", 30).await;
        let path = format!("/api/v1/users/{}", user["id"]);
        let creates: Vec<(Value, &str)> = vec![
            (json!({"email": ["a@example.com"], "name": "Jo", "age": 3}), "email"),
            (json!({"email": "a@example.com", "name": {"first": "Jo"}, "age": 3}), "name"),
            (json!({"email": "a@example.com", "name": null, "age": 3}), "name"),
            (json!({"email": "a@example.com", "name": "Jo", "age": true}), "age"),
            (json!({"email": "a@example.com", "name": "Jo", "age": "30"}), "age"),
            (json!({"email": "a@example.com", "name": "Jo", "age": null}), "age"),
            (json!({"email": "a@example.com", "name": "Jo", "age": 3, "id": 1}), "id"),
            (json!({"email": "a@example.com", "name": "Jo", "age": 3, "active": false}), "active"),
            (json!({"email": "a@example.com", "name": "Jo", "age": 3, "": 1}), ""),
            (json!({}), "email"),
            (json!(null), "body"),
            (json!("a@example.com"), "body"),
            (json!(42), "body"),
        ];
        for (body, field) in creates {
            let response = app.post_json("/api/v1/users", &body).await;
            response.assert_clean_error(400, "VALIDATION_ERROR");
            assert!(response.invalid_fields().contains(&field.to_owned()), "{body} -> {}", response.body);
        }
        let updates: Vec<(Value, &str)> = vec![
            (json!({"active": "true"}), "active"),
            (json!({"active": 1}), "active"),
            (json!({"age": "31"}), "age"),
            (json!({"age": 2147483648_i64}), "age"),
            (json!({"name": ["Jo"]}), "name"),
            (json!({"id": 7}), "id"),
            (json!({"created_at": "2020-01-01T00:00:00Z"}), "created_at"),
            (json!({"deleted_at": null}), "deleted_at"),
        ];
        for (body, field) in updates {
            let response = app.put_json(&path, &body).await;
            response.assert_clean_error(400, "VALIDATION_ERROR");
            assert!(response.invalid_fields().contains(&field.to_owned()), "{body} -> {}", response.body);
        }
        let unchanged = app.get(&path).await;
        assert_eq!(unchanged.body["data"], user, "no rejected update changed anything");
        assert_still_serving(&app).await;
    }

    async fn duplicate_json_keys_are_rejected_naming_the_field(backend) {
        let app = spawn_app(backend).await;
        let user = app.create_user("dupkey@example.com", "Dup Key", 30).await;
        let path = format!("/api/v1/users/{}", user["id"]);
        let cases = [
            ("POST", "/api/v1/users", r#"{"email":"a@example.com","email":"b@example.com","name":"Jo","age":3}"#, "email"),
            ("POST", "/api/v1/users", r#"{"email":"a@example.com","name":"Jo","age":3,"age":150}"#, "age"),
            ("PUT", path.as_str(), r#"{"name":"Jo","name":"Admin"}"#, "name"),
            ("PUT", path.as_str(), r#"{"active":true,"active":false}"#, "active"),
            ("PUT", path.as_str(), r#"{"age":null,"age":40}"#, "age"),
        ];
        for (method, path, body, field) in cases {
            // Twice: the answer does not depend on anything but the body.
            for _ in 0..2 {
                let request = app.http.request(method.parse().unwrap(), app.url(path))
                    .header("content-type", "application/json").body(body);
                let response = app.send(request).await;
                let message = response.assert_clean_error(400, "VALIDATION_ERROR");
                assert_eq!(response.invalid_fields(), [field], "{body}: {message}");
                assert!(message.contains("duplicate field"), "{message}");
            }
        }
        assert_eq!(app.get(&path).await.body["data"], user, "nothing changed");
        assert_eq!(app.get("/api/v1/users").await.body["meta"]["total_count"], 1, "nothing created");
    }

    async fn ids_and_page_values_at_the_edges_are_400_naming_them(backend) {
        let app = spawn_app(backend).await;
        let long_digits = "9".repeat(5_000);
        for id in ["1e3", "0x10", "%201", "1%20", "-0", "\u{0661}", "1.0", "NaN", "18446744073709551616", long_digits.as_str()] {
            let response = app.get(&format!("/api/v1/users/{id}")).await;
            let message = response.assert_clean_error(400, "BAD_REQUEST");
            assert!(message.len() < 200, "echo is truncated: {message}");
        }
        let cases: Vec<(String, &str)> = vec![
            ("page_size=-1".into(), "page_size"),
            ("page_size=18446744073709551616".into(), "page_size"),
            ("page_size=1.0".into(), "page_size"),
            ("page_size=".into(), "page_size"),
            ("page=".into(), "page"),
            ("page=1e3".into(), "page"),
            ("page=-9223372036854775808".into(), "page"),
            ("page=%00".into(), "page"),
            (format!("page={long_digits}"), "page"),
            ("page=1&page=2".into(), "page"),
            ("page_size=10&page_size=100".into(), "page_size"),
            ("active=1".into(), "active"),
            ("active=TRUE".into(), "active"),
        ];
        for (query, field) in cases {
            let response = app.get(&format!("/api/v1/users?{query}")).await;
            let message = response.assert_clean_error(400, "VALIDATION_ERROR");
            assert_eq!(response.invalid_fields(), [field], "{query}: {message}");
            assert!(message.len() < 300, "echo is truncated: {message}");
        }
        // Every bad parameter at once is named at once.
        let response = app.get("/api/v1/users?page=0&page_size=0&active=maybe").await;
        response.assert_clean_error(400, "VALIDATION_ERROR");
        assert_eq!(response.invalid_fields(), ["page", "page_size", "active"]);
        assert_still_serving(&app).await;
    }

    async fn sql_injection_and_like_wildcards_are_stored_and_searched_literally(backend) {
        let app = spawn_app(backend).await;
        let hostile = [
            "Robert'); DROP TABLE users;--",
            "x' OR '1'='1",
            "100%_done\\",
            "a%b_c\\%",
            "\" OR \"\"=\"",
            "1; SELECT pg_sleep(5)",
        ];
        for (i, name) in hostile.iter().enumerate() {
            let user = app.create_user(&format!("inj{i}@example.com"), name, 30).await;
            assert_eq!(user["name"], *name);
        }
        app.create_user("plain@example.com", "Plain Name", 30).await;
        let search = |term: &str| {
            let url = reqwest::Url::parse_with_params(&app.url("/api/v1/users"), &[("search", term)]).unwrap();
            app.send(app.http.get(url))
        };
        let count = |response: &TestResponse| response.body["meta"]["total_count"].as_u64().unwrap();
        let started = Instant::now();
        for (term, expected) in [
            ("'", 2), ("%", 2), ("_", 3), ("\\", 2), ("%%", 0), ("__", 0), ("\\%", 1), ("%_", 1),
            ("' OR '1'='1", 1), ("') OR 1=1 --", 0), ("DROP TABLE", 1), ("pg_sleep(5)", 1),
            ("*", 0), ("[a-z]", 0), ("' UNION SELECT email FROM users --", 0),
        ] {
            let response = search(term).await;
            assert_eq!(response.status, StatusCode::OK, "{term}: {}", response.body);
            assert_eq!(count(&response), expected, "{term:?} matches literally");
        }
        assert!(started.elapsed() < Duration::from_secs(5), "nothing slept");
        // NUL cannot be in any name or email; PostgreSQL would refuse it as a text parameter.
        for term in ["\0", "a\0b", "\u{1b}[2J"] {
            let response = search(term).await;
            response.assert_clean_error(400, "VALIDATION_ERROR");
            assert_eq!(response.invalid_fields(), ["search"], "{term:?}");
        }
        // The table is intact: every user is still listed.
        assert_eq!(count(&app.get("/api/v1/users?page_size=100").await), 7);
        assert_still_serving(&app).await;
    }

    async fn unicode_names_are_counted_in_characters_and_round_trip_exactly(backend) {
        let app = spawn_app(backend).await;
        let accepted = [
            "Zoe\u{301} Combining",
            "Ab\u{202e}cd Override",
            "Jo\u{200b}hn Zero Width",
            "\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467} Family",
            &"\u{1f980}".repeat(100),
            "\u{10ffff}\u{fffd}",
            "\u{5d0}\u{5d1} \u{627}\u{644}",
        ];
        for (i, name) in accepted.iter().enumerate() {
            let user = app.create_user(&format!("name{i}@example.com"), name, 30).await;
            let fetched = app.get(&format!("/api/v1/users/{}", user["id"])).await;
            assert_eq!(fetched.body["data"]["name"], *name, "byte for byte");
        }
        let rejected = [
            "\u{1f980}".repeat(101),
            "e\u{301}".repeat(51),
            "Nul\u{0}Byte".to_owned(),
            "\u{0}\u{0}".to_owned(),
            "Bell\u{7}".to_owned(),
            "C1\u{85}Control".to_owned(),
            "\u{3000}Ideographic Space".to_owned(),
            "Nbsp\u{a0}".to_owned(),
        ];
        for (i, name) in rejected.iter().enumerate() {
            let response = app.post_json("/api/v1/users", &json!({"email": format!("bad{i}@example.com"), "name": name, "age": 30})).await;
            response.assert_clean_error(400, "VALIDATION_ERROR");
            assert_eq!(response.invalid_fields(), ["name"], "{name:?}");
            let response = app.put_json("/api/v1/users/1", &json!({"name": name})).await;
            response.assert_clean_error(400, "VALIDATION_ERROR");
        }
        assert_eq!(app.get("/api/v1/users").await.body["meta"]["total_count"], accepted.len());
        assert_still_serving(&app).await;
    }

    async fn unicode_and_control_characters_in_emails_are_400_naming_email(backend) {
        let app = spawn_app(backend).await;
        let long_local = format!("{}@example.com", "a".repeat(64));
        let too_long = format!("{}@{}.com", "a".repeat(60), "b".repeat(190));
        for email in [
            "nul\u{0}@example.com", "a@exa\u{0}mple.com", "\u{0}", "rtl\u{202e}@example.com",
            "a@exam\u{202e}ple.com", "zw\u{200b}@example.com", "\u{1f980}@example.com",
            "a@example.com\u{0}", "a\n@example.com", too_long.as_str(),
        ] {
            let response = app.post_json("/api/v1/users", &json!({"email": email, "name": "Mail Tester", "age": 30})).await;
            response.assert_clean_error(400, "VALIDATION_ERROR");
            assert_eq!(response.invalid_fields(), ["email"], "{email:?}");
        }
        // A long but valid address is stored and found as sent (lower-cased).
        let user = app.create_user(&long_local, "Long Local", 30).await;
        assert_eq!(user["email"], long_local);
        assert_still_serving(&app).await;
    }
}

#[tokio::test]
async fn long_query_strings_and_urls_get_a_clean_4xx_and_the_server_keeps_serving() {
    let app = spawn_app(Backend::Sqlite).await;
    // Under hyper's URI limit (65534 bytes): our own 400 naming the parameter.
    let search = "s".repeat(60 * 1024);
    let response = app.get(&format!("/api/v1/users?search={search}")).await;
    let message = response.assert_clean_error(400, "VALIDATION_ERROR");
    assert_eq!(response.invalid_fields(), ["search"]);
    assert!(
        message.len() < 300,
        "the term is not echoed: {}",
        message.len()
    );
    let many_params: String = (0..6_000).map(|i| format!("p{i}=1&")).collect();
    let response = app.get(&format!("/api/v1/users?{many_params}page=1")).await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "unknown parameters are ignored"
    );

    // Over it: hyper answers 414 itself, with an empty body, and closes.
    for target in [
        format!("/api/v1/users?search={}", "s".repeat(64 * 1024)),
        format!("/api/v1/users/{}", "1".repeat(100 * 1024)),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n");
        let answer = raw_exchange(app.address, request.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(
            raw_status(&answer),
            414,
            "{}",
            &answer[..answer.len().min(200)]
        );
        assert!(answer.contains("content-length: 0"), "{answer}");
    }
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn header_floods_are_refused_by_hyper_with_431_and_the_server_keeps_serving() {
    let app = spawn_app(Backend::Sqlite).await;
    // hyper holds at most 100 headers per request.
    let mut request = app.http.get(app.url("/api/v1/users"));
    for i in 0..300 {
        request = request.header(format!("x-flood-{i}"), "1");
    }
    let response = request.send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(
        response.text().await.unwrap(),
        "",
        "hyper's bare answer, not our envelope"
    );

    // A head over hyper's ~400 KiB read buffer.
    let huge = "v".repeat(512 * 1024);
    let head = format!("GET /api/v1/users HTTP/1.1\r\nHost: test\r\nX-Huge: {huge}\r\n\r\n");
    let answer = raw_exchange(app.address, head.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(
        raw_status(&answer),
        431,
        "{}",
        &answer[..answer.len().min(200)]
    );

    // A big header under the limit reaches the app and is served normally.
    let response = app
        .get_with_header("/api/v1/users", "x-big", &"v".repeat(32 * 1024))
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_client_that_stops_mid_request_line_is_disconnected_after_the_header_read_timeout() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("USER_SERVICE_HEADER_READ_TIMEOUT", "0.5")],
    )
    .await;
    let cases: [&[u8]; 3] = [
        b"GET /api/v1/us",
        b"GET /api/v1/users HTTP/1.1\r\nHost: test\r\nX-Slow: 1",
        b"",
    ];
    for partial in cases {
        let started = Instant::now();
        let mut stream = TcpStream::connect(app.address).await.unwrap();
        stream.write_all(partial).await.unwrap();
        let mut received = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
        let elapsed = started.elapsed();
        println!(
            "{:?}: closed after {elapsed:?}",
            String::from_utf8_lossy(partial)
        );
        assert!(read.is_ok(), "{partial:?}: still connected after 5 s");
        assert!(
            received.is_empty(),
            "closed without an answer: {:?}",
            String::from_utf8_lossy(&received)
        );
        assert!(
            elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(3),
            "{partial:?}: closed after {elapsed:?}"
        );
    }
    // A request sent in good time is unaffected.
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn unusable_request_ids_are_replaced_by_generated_ones() {
    let app = spawn_app(Backend::Sqlite).await;
    let generated = |response: &TestResponse| {
        let id = response.headers["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            uuid::Uuid::parse_str(&id).is_ok(),
            "a fresh UUID, got {id:?}"
        );
        id
    };
    for bad in [
        "x".repeat(129),
        "x".repeat(60 * 1024),
        "has space".to_owned(),
        "tab\there".to_owned(),
        "semi;colon".to_owned(),
        "<script>".to_owned(),
        "{\"json\":1}".to_owned(),
    ] {
        let response = app
            .get_with_header("/api/v1/users", "x-request-id", bad.as_str())
            .await;
        assert_eq!(response.status, StatusCode::OK);
        generated(&response);
    }
    // Bytes outside ASCII (obs-text) cannot be set through reqwest's checks: raw.
    let mut request = format!(
        "GET /api/v1/users HTTP/1.1\r\nHost: test\r\nConnection: close\r\nAuthorization: Bearer {}\r\nX-Request-ID: caf",
        app.admin_token
    )
    .into_bytes();
    request.extend_from_slice(b"\xc3\xa9\r\n\r\n");
    let answer = raw_exchange(app.address, &request, Duration::from_secs(5)).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert!(!answer.contains("caf"), "{answer}");
    // Two ids are one too many.
    let two = app
        .send(
            app.http
                .get(app.url("/api/v1/users"))
                .header("x-request-id", "first-id")
                .header("x-request-id", "second-id"),
        )
        .await;
    generated(&two);
    // A well-formed id of the maximum length is kept.
    let kept = "A-z.0_9".repeat(18) + "12";
    assert_eq!(kept.len(), 128);
    let response = app
        .get_with_header("/api/v1/users", "x-request-id", kept.as_str())
        .await;
    assert_eq!(response.headers["x-request-id"], kept.as_str());
}

#[tokio::test]
async fn spoofed_forwarding_headers_never_buy_a_fresh_bucket() {
    // 1 request/s: a burst of 2 per client.
    let direct = spawn_app_with(Backend::Sqlite, &[("USER_SERVICE_RATE_LIMIT", "1")]).await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let request = direct
            .http
            .get(direct.url("/api/v1/users"))
            .header("x-forwarded-for", format!("198.51.100.{i}, 203.0.113.{i}"))
            .header("x-real-ip", format!("198.51.100.{i}"))
            .header("forwarded", format!("for=198.51.100.{i}"));
        statuses.push(direct.send(request).await.status.as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 429, 429],
        "no forwarding header is believed without a trusted proxy"
    );
    let limited = direct.get("/api/v1/users").await;
    limited.assert_clean_error(429, "RATE_LIMIT_EXCEEDED");

    // Behind a trusted proxy the client can still prepend whatever it likes; only
    // the hop the proxy appended (rightmost untrusted) counts.
    let proxied = spawn_app_with(
        Backend::Sqlite,
        &[
            ("USER_SERVICE_RATE_LIMIT", "1"),
            ("USER_SERVICE_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let chain = format!("10.9.9.{i}, 127.0.0.1, 192.0.2.77, 127.0.0.1");
        let request = proxied
            .http
            .get(proxied.url("/api/v1/users"))
            .header("x-forwarded-for", chain);
        statuses.push(proxied.send(request).await.status.as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 429, 429],
        "all counted against 192.0.2.77"
    );
    // A garbled chain falls back to the proxy's own address, which has its own bucket.
    let garbled = proxied
        .get_with_header("/api/v1/users", "x-forwarded-for", "not-an-ip, 999.1.1.1")
        .await;
    assert_eq!(garbled.status, StatusCode::OK);
    let huge_chain: String = (0..5_000)
        .map(|i| format!("10.{}.{}.1, ", i / 256, i % 256))
        .collect::<String>()
        + "192.0.2.77";
    let flooded = proxied
        .get_with_header("/api/v1/users", "x-forwarded-for", &huge_chain)
        .await;
    flooded.assert_clean_error(429, "RATE_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn limiter_memory_stays_bounded_as_many_client_ips_come_and_go() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("USER_SERVICE_RATE_LIMIT", "1"),
            ("USER_SERVICE_RATE_LIMIT_EVICTION_INTERVAL", "0.2"),
        ],
    )
    .await;
    let clients: Vec<(IpAddr, reqwest::Client)> = (0..300u32)
        .map(|i| {
            let ip = IpAddr::from([127, 1, (i / 250) as u8, (i % 250 + 1) as u8]);
            (ip, client_from(ip))
        })
        .collect();
    let gauge = "user_service_rate_limiter_clients";
    let url = app.url("/api/v1/users");
    let requests = clients
        .iter()
        .map(|(_, client)| client.get(&url).bearer_auth(&app.admin_token).send());
    let started = Instant::now();
    let responses = futures::future::join_all(requests).await;
    let flood_time = started.elapsed();
    assert!(
        responses
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.status() == StatusCode::OK))
    );
    let during = metric_value(&app.metrics().await, gauge).unwrap();
    // One request each leaves a bucket that refills in 1 s; eviction runs every 0.2 s.
    let mut after = during;
    let deadline = Instant::now() + Duration::from_secs(5);
    while after > 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = metric_value(&app.metrics().await, gauge).unwrap();
    }
    println!("300 clients in {flood_time:?}: tracked {during} right after, {after} after eviction");
    assert!(during > 0.0 && during <= 300.0, "tracked {during}");
    if flood_time < Duration::from_millis(800) {
        assert_eq!(
            during, 300.0,
            "every client tracked until its bucket refills"
        );
    }
    assert_eq!(after, 0.0, "idle clients are forgotten");
    assert_still_serving(&app).await;
}
