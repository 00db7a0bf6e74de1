//! Walking a list endpoint page by page, by number or by cursor, for the tests
//! of keyset pagination and bounded counts.

use serde_json::Value;

use super::TestClient;

/// The `data[].id` of one answer, asserting 200.
pub fn page_ids(answer: &super::TestResponse) -> Vec<i64> {
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["data"]
        .as_array()
        .expect("data is an array")
        .iter()
        .map(|row| row["id"].as_i64().expect("id"))
        .collect()
}

/// `path` (with its own query, `?` included) and one more parameter.
fn with_param(path: &str, param: &str) -> String {
    let joiner = if path.contains('?') { '&' } else { '?' };
    format!("{path}{joiner}{param}")
}

/// Every id of the list at `path`, following `meta.next_cursor` from the first
/// page; `between` runs after each page (to write while the walk goes on).
pub async fn walk_by_cursor<F, Fut>(client: &TestClient, path: &str, mut between: F) -> Vec<i64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ids = Vec::new();
    let mut next = path.to_owned();
    loop {
        let answer = client.get(&next).await;
        ids.extend(page_ids(&answer));
        let meta = &answer.body["meta"];
        match meta.get("next_cursor").and_then(Value::as_str) {
            Some(cursor) => next = with_param(path, &format!("cursor={cursor}")),
            None => return ids,
        }
        between().await;
    }
}

/// Every id of the list at `path`, page by page by number until an empty page.
pub async fn walk_by_page(client: &TestClient, path: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    for page in 1.. {
        let answer = client.get(&with_param(path, &format!("page={page}"))).await;
        let rows = page_ids(&answer);
        if rows.is_empty() {
            return ids;
        }
        ids.extend(rows);
    }
    unreachable!("pages run out")
}

/// Asserts that `ids` holds no id twice.
pub fn assert_no_repeats(ids: &[i64]) {
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        assert!(seen.insert(*id), "id {id} listed twice in {ids:?}");
    }
}
