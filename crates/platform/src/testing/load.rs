//! A bounded concurrent load and the answers it saw.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// One answer seen by a load generator, with when it was asked and answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub label: &'static str,
    pub started: std::time::Instant,
    pub finished: std::time::Instant,
    /// `None` when no HTTP answer came back (refused, reset, client timeout).
    pub status: Option<u16>,
    pub body: Value,
    pub error: Option<String>,
}

impl Answer {
    /// Sends `request` and records what came back; never panics.
    pub async fn of(label: &'static str, request: reqwest::RequestBuilder) -> Self {
        let started = std::time::Instant::now();
        let (status, body, error) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(bytes) => (
                        Some(status),
                        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                        None,
                    ),
                    Err(e) => (Some(status), Value::Null, Some(format!("body: {e}"))),
                }
            }
            Err(e) => (None, Value::Null, Some(format!("{e:?}"))),
        };
        Self {
            label,
            started,
            finished: std::time::Instant::now(),
            status,
            body,
            error,
        }
    }

    pub fn latency(&self) -> std::time::Duration {
        self.finished - self.started
    }

    pub fn is_success(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// `error.code` of an envelope, if any.
    pub fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    /// `data.id` of a 201.
    pub fn created_id(&self) -> Option<i64> {
        (self.status == Some(201))
            .then(|| self.body["data"]["id"].as_i64())
            .flatten()
    }
}

/// A bounded concurrent load: `workers` tasks call `step(worker, n)` (which sends
/// a request or two and returns their answers) until stopped or until
/// `max_steps` steps in all have run.
pub struct Load {
    stop: tokio_util::sync::CancellationToken,
    answers: std::sync::Arc<std::sync::Mutex<Vec<Answer>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start<F, Fut>(workers: usize, max_steps: u64, step: F) -> Self
    where
        F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Vec<Answer>> + Send,
    {
        use std::sync::atomic::{AtomicU64, Ordering};
        let stop = tokio_util::sync::CancellationToken::new();
        let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let steps = std::sync::Arc::new(AtomicU64::new(0));
        let workers = (0..workers)
            .map(|worker| {
                let (stop, answers, steps, step) =
                    (stop.clone(), answers.clone(), steps.clone(), step.clone());
                tokio::spawn(async move {
                    while !stop.is_cancelled() {
                        let n = steps.fetch_add(1, Ordering::Relaxed);
                        if n >= max_steps {
                            break;
                        }
                        let got = step(worker, n).await;
                        answers.lock().expect("answers").extend(got);
                    }
                })
            })
            .collect();
        Self {
            stop,
            answers,
            workers,
        }
    }

    /// The answers so far.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().expect("answers").clone()
    }

    /// How many answers so far satisfy `predicate`.
    pub fn count(&self, predicate: impl Fn(&Answer) -> bool) -> usize {
        self.answers
            .lock()
            .expect("answers")
            .iter()
            .filter(|a| predicate(a))
            .count()
    }

    /// Stops the workers after their current step and returns every answer.
    pub async fn finish(self) -> Vec<Answer> {
        self.stop.cancel();
        for worker in self.workers {
            worker.await.expect("load worker");
        }
        std::mem::take(&mut *self.answers.lock().expect("answers"))
    }
}

/// Ids of every 201 among `answers`, asserting none repeats.
///
/// # Panics
/// When an id was handed out twice.
pub fn created_ids(answers: &[Answer]) -> Vec<i64> {
    let ids: Vec<i64> = answers.iter().filter_map(Answer::created_id).collect();
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "an id was handed out twice");
    ids
}

/// Asserts every answer is one the API documents for this situation: `allowed`
/// statuses, or a 503 SERVICE_UNAVAILABLE envelope, within `max_latency`;
/// never a transport error or another 5xx. Returns the count per status.
///
/// # Panics
/// At the first answer that is none of those.
pub fn assert_documented(
    answers: &[Answer],
    allowed: &[u16],
    max_latency: Duration,
) -> BTreeMap<u16, usize> {
    let mut statuses = BTreeMap::new();
    let mut unavailable = BTreeMap::<String, usize>::new();
    for answer in answers {
        assert!(answer.error.is_none(), "no answer: {answer:?}");
        let status = answer.status.expect("status");
        *statuses.entry(status).or_default() += 1;
        if status == 503 {
            assert_eq!(answer.code(), Some("SERVICE_UNAVAILABLE"), "{answer:?}");
            let message = answer.body["error"]["message"].to_string();
            *unavailable.entry(message).or_default() += 1;
        } else {
            assert!(allowed.contains(&status), "undocumented answer: {answer:?}");
        }
        let latency = answer.latency();
        assert!(latency < max_latency, "an answer took {latency:?}");
    }
    if !unavailable.is_empty() {
        println!("503 answers by message: {unavailable:?}");
    }
    statuses
}
