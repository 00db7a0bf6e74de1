//! Reading the audit log: entries as stored, idempotent storing, filters, the
//! keyset cursor, and every bad parameter named.

use platform::backend_tests;
use platform::events::Event;
use platform::metrics::Metrics;
use serde_json::json;
use tracing::Span;

use audit_log_service::consumer::{ConsumerMetrics, handler};
use audit_log_service::model::AuditLogQuery;
use audit_log_service::store::store_events;

use crate::helpers::{AuditService, at, event, ids, metric_value};

backend_tests! {
    async fn an_entry_reads_back_as_the_event_that_was_stored(backend) {
        let audit = AuditService::start(backend).await;
        // Nanoseconds in, microseconds stored: what both backends keep.
        let occurred_at = at(1, 2) + chrono::Duration::nanoseconds(123_456_789);
        let stored = event("order.status_changed", "42", ("order", "7"), occurred_at,
            json!({"from": "pending", "to": "cancelled", "reason": "user deleted"}));
        audit.store(std::slice::from_ref(&stored)).await;
        let answer = audit.get(&format!("/api/v1/audit-logs/{}", stored.id)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let entry = &answer.body["data"];
        assert_eq!(entry["id"], stored.id.to_string());
        assert_eq!(entry["action"], "order.status_changed");
        assert_eq!(entry["actor"], json!({"sub": "42", "roles": ["admin"]}));
        assert_eq!((entry["resource_type"].as_str(), entry["resource_id"].as_str()), (Some("order"), Some("7")));
        assert_eq!(entry["request_id"], "req-42");
        assert_eq!(entry["occurred_at"], "2026-12-04T10:01:02.123456Z");
        assert_eq!(entry["payload"], stored.payload);
        assert!(entry["recorded_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{entry}");
        let listed = audit.get("/api/v1/audit-logs").await;
        assert_eq!(listed.body["data"], json!([entry]), "the list shows the same entry");
        assert!(listed.body["meta"].get("next_cursor").is_none());
    }

    async fn storing_the_same_event_twice_keeps_one_row(backend) {
        let audit = AuditService::start(backend).await;
        let first = event("user.created", "anonymous", ("user", "1"), at(0, 0), json!({"id": 1}));
        let alone = |event: &Event| vec![(event.clone(), Span::none())];
        assert_eq!(store_events(&audit.db, &alone(&first)).await.unwrap(), [true], "new");
        assert_eq!(store_events(&audit.db, &alone(&first)).await.unwrap(), [false], "a redelivery is not new");
        // The consumer's handler counts which deliveries were stored, alone
        // or several in one batch (a redelivery within the batch too).
        let metrics = Metrics::new("t");
        let counters = ConsumerMetrics::register(&metrics, "t");
        let consume = handler(audit.db.clone(), counters);
        let second = event("user.deleted", "operator", ("user", "1"), at(0, 1), json!(null));
        consume(alone(&second)).await.expect("handled");
        let batch = [second.clone(), first.clone()].iter().flat_map(alone).collect();
        consume(batch).await.expect("handled");
        let text = metrics.render();
        assert_eq!(metric_value(&text, "t_events_stored_total"), Some(1.0));
        assert_eq!(metric_value(&text, "t_events_duplicate_total"), Some(2.0));
        let rows = audit.db.query_one("SELECT COUNT(*) AS n FROM audit_logs", &[]).await.unwrap();
        assert_eq!(rows.get::<i64>("n").unwrap(), 2);
        let listed = audit.get("/api/v1/audit-logs").await;
        assert_eq!(ids(listed.body["data"].as_array().unwrap()), [second.id.to_string(), first.id.to_string()]);
    }

    async fn filters_select_exact_matches_and_combine(backend) {
        let audit = AuditService::start(backend).await;
        let events = [
            event("user.created", "anonymous", ("user", "1"), at(0, 0), json!({})),
            event("auth.token_issued", "operator", ("auth", "operator"), at(1, 0), json!({})),
            event("order.created", "1", ("order", "1"), at(2, 0), json!({})),
            event("order.status_changed", "operator", ("order", "1"), at(3, 0), json!({})),
            event("order.status_changed", "system", ("order", "2"), at(4, 0), json!({})),
            event("user.updated", "1", ("user", "1"), at(5, 0), json!({})),
        ];
        audit.store(&events).await;
        let id = |i: usize| events[i].id.to_string();
        for (query, expected) in [
            ("", vec![id(5), id(4), id(3), id(2), id(1), id(0)]),
            ("actor=operator", vec![id(3), id(1)]),
            ("action=order.status_changed", vec![id(4), id(3)]),
            ("resource_type=order", vec![id(4), id(3), id(2)]),
            ("resource_id=1", vec![id(5), id(3), id(2), id(0)]),
            ("resource_type=user&resource_id=1", vec![id(5), id(0)]),
            ("actor=1&action=order.created", vec![id(2)]),
            // from is inclusive, to exclusive, offsets honoured.
            ("from=2026-12-04T10:02:00Z&to=2026-12-04T10:04:00Z", vec![id(3), id(2)]),
            ("from=2026-12-04T11:01:00%2B01:00", vec![id(5), id(4), id(3), id(2), id(1)]),
            ("to=2026-12-04T10:00:00Z", vec![]),
            ("from=2026-12-04T10:05:00Z&to=2026-12-04T10:00:00Z", vec![]),
            ("actor=nobody", vec![]),
            ("actor=%25", vec![]),
        ] {
            assert_eq!(ids(&audit.walk(query, 100).await), expected, "{query}");
        }
    }

    async fn a_cursor_walk_visits_every_entry_once_newest_first(backend) {
        let audit = AuditService::start(backend).await;
        // Groups of entries at the same instant: the id breaks the ties.
        let events: Vec<_> = (0..23)
            .map(|i| event("order.created", "1", ("order", &i.to_string()), at(i / 4, 0), json!({"n": i})))
            .collect();
        audit.store(&events).await;
        let mut expected: Vec<_> = events.iter().map(|e| (e.occurred_at, e.id)).collect();
        expected.sort_by(|a, b| b.cmp(a));
        let expected: Vec<String> = expected.into_iter().map(|(_, id)| id.to_string()).collect();
        assert_eq!(ids(&audit.walk("", 100).await), expected, "one page holds all");
        for page_size in [1, 4, 7, 23] {
            assert_eq!(ids(&audit.walk("", page_size).await), expected, "pages of {page_size}");
        }
        let default = audit.get("/api/v1/audit-logs").await;
        assert_eq!(default.body["meta"]["page_size"], 20);
        assert_eq!(default.body["data"].as_array().unwrap().len(), 20);
        // Filters hold across pages, and a new entry does not shift a walk in progress.
        let first = audit.get("/api/v1/audit-logs?page_size=5&resource_id=3").await;
        assert_eq!(first.body["data"].as_array().unwrap().len(), 1);
        assert!(first.body["meta"].get("next_cursor").is_none());
        let page = audit.get("/api/v1/audit-logs?page_size=10").await;
        let cursor = page.body["meta"]["next_cursor"].as_str().unwrap().to_owned();
        audit.store(&[event("order.created", "1", ("order", "new"), at(59, 0), json!({}))]).await;
        let rest = audit.get(&format!("/api/v1/audit-logs?page_size=10&cursor={cursor}")).await;
        assert_eq!(ids(rest.body["data"].as_array().unwrap()), expected[10..20]);
    }

    async fn bad_parameters_are_400_naming_each_one(backend) {
        let audit = AuditService::start(backend).await;
        let stored = event("user.created", "1", ("user", "1"), at(0, 0), json!({}));
        audit.store(std::slice::from_ref(&stored)).await;
        let good = audit.get("/api/v1/audit-logs?page_size=1").await;
        assert!(good.body["meta"].get("next_cursor").is_none());
        let cursor = platform::cursor::Cursor { at: stored.occurred_at, id: stored.id }.encode(&AuditLogQuery::default().scope());
        let other_filter = platform::cursor::Cursor { at: stored.occurred_at, id: stored.id }.encode("audit-logs|another filter");
        for (query, field) in [
            ("cursor=abc", "cursor"),
            (&format!("cursor={}", &cursor[1..]) as &str, "cursor"),
            (&format!("cursor={cursor}A"), "cursor"),
            (&format!("cursor={}%2B", &cursor[1..]), "cursor"),
            (&format!("cursor={}=", &cursor[1..]), "cursor"),
            ("cursor=", "cursor"),
            (&format!("cursor={other_filter}"), "cursor"),
            (&format!("cursor={cursor}&action=user.created"), "cursor"),
            ("from=yesterday", "from"),
            ("to=2026-13-01T00:00:00Z", "to"),
            // An unencoded + offset arrives as a space.
            ("from=2026-12-04T10:00:00+01:00", "from"),
            ("page_size=0", "page_size"),
            ("page_size=101", "page_size"),
            ("actor=", "actor"),
            ("action=%20x", "action"),
        ] {
            let answer = audit.get(&format!("/api/v1/audit-logs?{query}")).await;
            let message = answer.assert_clean_error(400, "VALIDATION_ERROR");
            assert_eq!(answer.invalid_fields(), [field], "{query}: {message}");
        }
        let answer = audit.get("/api/v1/audit-logs?to=x&cursor=y&page_size=z").await;
        assert_eq!(answer.invalid_fields(), ["to", "cursor", "page_size"], "every one, in order");
        // A cursor of this list and filter is a position (past the one entry: an empty page).
        let moved = audit.get(&format!("/api/v1/audit-logs?cursor={cursor}")).await;
        assert_eq!(moved.status, 200, "{}", moved.body);
        assert_eq!(moved.body["data"], json!([]));
        // One of the right shape but not handed out for this list is refused.
        let forged = audit.get(&format!("/api/v1/audit-logs?cursor={}", "_".repeat(32))).await;
        assert_eq!(forged.invalid_fields(), ["cursor"]);
        for id in ["1", "not-a-uuid", "0190a5e4-0000-7000-8000-00000000000g"] {
            audit.get(&format!("/api/v1/audit-logs/{id}")).await.assert_clean_error(400, "BAD_REQUEST");
        }
        let missing = uuid::Uuid::now_v7();
        let message = audit.get(&format!("/api/v1/audit-logs/{missing}")).await.assert_clean_error(404, "NOT_FOUND");
        assert!(message.contains(&missing.to_string()), "{message}");
    }

    async fn the_log_cannot_be_written_through_the_api(backend) {
        let audit = AuditService::start(backend).await;
        let stored = event("user.created", "1", ("user", "1"), at(0, 0), json!({}));
        audit.store(std::slice::from_ref(&stored)).await;
        let one = format!("/api/v1/audit-logs/{}", stored.id);
        let body = json!({"action": "forged", "actor": {"sub": "admin", "roles": []}});
        for (method, path) in [
            (reqwest::Method::POST, "/api/v1/audit-logs"),
            (reqwest::Method::PUT, one.as_str()),
            (reqwest::Method::PATCH, one.as_str()),
            (reqwest::Method::DELETE, one.as_str()),
            (reqwest::Method::DELETE, "/api/v1/audit-logs"),
        ] {
            let request = audit.http.request(method.clone(), audit.url(path)).json(&body);
            audit.send(request).await.assert_clean_error(405, "METHOD_NOT_ALLOWED");
        }
        let after = audit.get(&one).await;
        assert_eq!(after.body["data"]["action"], "user.created", "unchanged");
    }
}
