//! The worker: retries, Retry-After, permanent failures, dead and replayed, ordering, template errors,
//! crashes and restarts, multi-step flows, outbound formats.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

fn config(receiver: &str) -> String {
    format!(
        r#"
worker: {{ shutdown_grace: 100ms }}
tables:
  approvers:
    key: applicant
    rows: [ {{ applicant: 山田太郎, approver1: 佐藤花子, approver2: 鈴木一郎 }} ]
sources:
  rakuraku:
    event_type: "{{{{ body.processType }}}}"
destinations:
  esm:
    type: http
    base_url: "{receiver}/esm"
    headers: {{ Authorization: "Bearer ${{ESM_TOKEN}}", X-ESM-TIMEZONE: Asia/Tokyo }}
flows:
  approval:
    source: rakuraku
    when: "event.type is startingwith('rakuraku_')"
    order_key: "{{{{ body.keyId }}}}"
    retry: {{ max_attempts: 3, initial: 10s, max: 1m }}
    steps:
      - to: esm
        method: PUT
        path: "/sheet/deal/{{{{ body.keyId }}}}"
        body:
          deals.deal.status: "{{{{ {{'rakuraku_submission': '申請中', 'rakuraku_approval': '承認済'}}[event.type] }}}}"
          deals.deal.approver: "{{{{ lookup('approvers', body.applicant).approver1 }}}}"
          deals.deal.note: "{{{{ body.note }}}}"
          deals.deal.amount: "{{{{ body.amount }}}}"
"#
    )
}

async fn app() -> (TestApp, Receiver) {
    let rx = Receiver::start().await;
    let app = spawn_app_env(&config(&rx.url), &[("ESM_TOKEN", "esm-secret-token")]).await;
    (app, rx)
}

fn submission(key: &str) -> serde_json::Value {
    json!({"processType": "rakuraku_submission", "keyId": key, "applicant": "山田太郎", "note": "見積 \"特急\"\n2行目", "amount": 12000})
}

#[tokio::test]
async fn delivers_the_rendered_request_with_json_safe_values() {
    let (app, rx) = app().await;
    assert_eq!(app.post_json("/hooks/rakuraku", submission("1001")).await.status(), 202);
    assert_eq!(app.drain().await, 1);
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "PUT");
    assert_eq!(got[0].path, "/esm/sheet/deal/1001");
    assert_eq!(got[0].header("authorization"), Some("Bearer esm-secret-token"));
    assert_eq!(got[0].header("x-esm-timezone"), Some("Asia/Tokyo"));
    assert_eq!(
        got[0].json(),
        json!({"deals.deal.status": "申請中", "deals.deal.approver": "佐藤花子", "deals.deal.note": "見積 \"特急\"\n2行目", "deals.deal.amount": 12000})
    );

    let d = &app.deliveries().await[0];
    assert_eq!(d["status"], "succeeded");
    let detail = app.delivery(d["id"].as_i64().unwrap()).await;
    let attempt = &detail["attempts"][0];
    assert_eq!(attempt["response"]["status"], 200);
    assert_eq!(attempt["request"]["method"], "PUT");
    // The secret is in the request that was sent, never in the history.
    let text = detail.to_string();
    assert!(!text.contains("esm-secret-token"), "{text}");
    assert!(text.contains("[REDACTED]"));
}

#[tokio::test]
async fn retries_500_with_backoff_then_succeeds() {
    let (app, rx) = app().await;
    rx.script([Reply::status(500), Reply::status(503)]);
    app.post_json("/hooks/rakuraku", submission("1")).await;

    assert_eq!(app.drain().await, 1);
    let d = &app.deliveries().await[0];
    assert_eq!(d["status"], "retrying");
    assert_eq!(d["last_error"], "step 0: HTTP 500");
    // First retry: 10 s scaled by jitter into [5 s, 10 s].
    let next = chrono::DateTime::parse_from_rfc3339(d["next_at"].as_str().unwrap()).unwrap();
    let wait = (next.with_timezone(&chrono::Utc) - t0()).num_milliseconds();
    assert!((5_000..=10_000).contains(&wait), "first retry after {wait} ms");

    // Not due yet: nothing happens.
    app.advance(Duration::from_millis(wait as u64 - 1));
    assert_eq!(app.drain().await, 0);
    app.advance(Duration::from_millis(1));
    assert_eq!(app.drain().await, 1);
    assert_eq!(app.deliveries().await[0]["status"], "retrying");
    // Second retry: 20 s scaled into [10 s, 20 s].
    app.advance(Duration::from_secs(20));
    assert_eq!(app.drain().await, 1);
    let d = &app.deliveries().await[0];
    assert_eq!(d["status"], "succeeded");
    assert_eq!(d["attempts"], 3);
    assert_eq!(rx.received().len(), 3);
    let detail = app.delivery(d["id"].as_i64().unwrap()).await;
    let outcomes: Vec<&str> =
        detail["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["transient", "transient", "success"]);
}

#[tokio::test]
async fn honours_retry_after_on_429() {
    let (app, rx) = app().await;
    rx.script([Reply::status(429).header("retry-after", "120")]);
    app.post_json("/hooks/rakuraku", submission("1")).await;
    app.drain().await;
    let d = &app.deliveries().await[0];
    assert_eq!(d["status"], "retrying");
    let next = chrono::DateTime::parse_from_rfc3339(d["next_at"].as_str().unwrap()).unwrap();
    assert_eq!((next.with_timezone(&chrono::Utc) - t0()).num_seconds(), 120);
    app.advance(Duration::from_secs(119));
    assert_eq!(app.drain().await, 0);
    app.advance(Duration::from_secs(1));
    assert_eq!(app.drain().await, 1);
    assert_eq!(app.deliveries().await[0]["status"], "succeeded");
}

#[tokio::test]
async fn a_permanent_4xx_fails_at_once_with_the_reason() {
    let (app, rx) = app().await;
    rx.script([Reply::json(400, json!({"message": "status is not a valid choice"}))]);
    app.post_json("/hooks/rakuraku", submission("1")).await;
    app.drain().await;
    let d = &app.deliveries().await[0];
    assert_eq!(d["status"], "dead");
    assert_eq!(d["last_error"], "step 0: HTTP 400");
    let detail = app.delivery(d["id"].as_i64().unwrap()).await;
    assert_eq!(detail["attempts"][0]["response"]["body"], r#"{"message":"status is not a valid choice"}"#);
    app.advance(Duration::from_secs(3600));
    assert_eq!(app.drain().await, 0, "a dead delivery is not retried by itself");
}

#[tokio::test]
async fn dead_after_max_attempts_then_retried_and_replayed() {
    let (app, rx) = app().await;
    rx.script([Reply::status(500), Reply::status(500), Reply::status(500)]);
    let ev: serde_json::Value = app.post_json("/hooks/rakuraku", submission("1")).await.json();
    for _ in 0..3 {
        app.drain().await;
        app.advance(Duration::from_secs(60));
    }
    let d = &app.deliveries().await[0];
    assert_eq!(d["status"], "dead");
    assert_eq!(d["last_error"], "step 0: HTTP 500 (gave up after 3 tries)");
    let id = d["id"].as_i64().unwrap();

    // Retry the one delivery.
    let r = app.api_post(&format!("/deliveries/{id}/retry"), json!({})).await;
    assert_eq!(r.status(), 202);
    app.drain().await;
    assert_eq!(app.delivery(id).await["status"], "succeeded");
    assert_eq!(rx.received().len(), 4);

    // A succeeded delivery cannot be retried; the event can be replayed.
    assert_eq!(app.api_post(&format!("/deliveries/{id}/retry"), json!({})).await.status(), 409);
    let r = app.api_post(&format!("/events/{}/replay", ev["event_id"].as_str().unwrap()), json!({})).await;
    assert_eq!(r.status(), 202);
    let v: serde_json::Value = r.json();
    assert_eq!(v["delivery_ids"].as_array().unwrap().len(), 1);
    app.drain().await;
    assert_eq!(rx.received().len(), 5);
}

#[tokio::test]
async fn bulk_retry_of_dead_deliveries_matching_a_filter() {
    let (app, rx) = app().await;
    rx.script([Reply::status(404), Reply::status(404), Reply::status(404)]);
    for k in ["1", "2", "3"] {
        app.post_json("/hooks/rakuraku", submission(k)).await;
    }
    app.drain().await;
    assert!(app.deliveries().await.iter().all(|d| d["status"] == "dead"));
    let dead = app.api("/deliveries?status=dead&q=HTTP%20404").await;
    assert_eq!(dead["items"].as_array().unwrap().len(), 3);

    let r: serde_json::Value = app.api_post("/deliveries/retry", json!({"flow": "approval"})).await.json();
    assert_eq!(r["retried"], 3);
    app.drain().await;
    assert!(app.deliveries().await.iter().all(|d| d["status"] == "succeeded"));
}

#[tokio::test]
async fn same_key_is_delivered_in_arrival_order_even_across_retries() {
    let (app, rx) = app().await;
    // The submission fails once; the approval for the same deal must wait for it.
    rx.script([Reply::status(503)]);
    app.post_json("/hooks/rakuraku", submission("A")).await;
    app.post_json(
        "/hooks/rakuraku",
        json!({"processType": "rakuraku_approval", "keyId": "A", "applicant": "山田太郎", "note": "", "amount": 1}),
    )
    .await;
    app.drain().await;
    // Another deal goes through while A's approval waits behind A's failed submission.
    app.post_json("/hooks/rakuraku", submission("B")).await;
    app.drain().await;
    let paths: Vec<String> = rx.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/esm/sheet/deal/A", "/esm/sheet/deal/B"], "A's approval waits behind A's failed submission");

    app.advance(Duration::from_secs(60));
    app.drain().await;
    let got = rx.received();
    let a: Vec<String> = got
        .iter()
        .filter(|r| r.path.ends_with("/A"))
        .map(|r| r.json()["deals.deal.status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(a, ["申請中", "申請中", "承認済"]);
}

#[tokio::test]
async fn ordering_holds_under_concurrency() {
    let (app, rx) = app().await;
    // 5 keys × 20 events, posted concurrently per key but in order within a key.
    let mut tasks = Vec::new();
    for k in 0..5 {
        let http = app.http.clone();
        let url = app.url("/hooks/rakuraku");
        tasks.push(tokio::spawn(async move {
            for n in 0..20 {
                let body = json!({"processType": "rakuraku_submission", "keyId": format!("K{k}"), "applicant": "山田太郎", "note": n.to_string(), "amount": n});
                assert_eq!(http.post(&url).json(&body).send().await.unwrap().status(), 202);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(app.drain().await, 100);
    let got = rx.received();
    for k in 0..5 {
        let seq: Vec<i64> = got
            .iter()
            .filter(|r| r.path.ends_with(&format!("/K{k}")))
            .map(|r| r.json()["deals.deal.amount"].as_i64().unwrap())
            .collect();
        assert_eq!(seq, (0..20).collect::<Vec<_>>(), "key K{k}");
    }
}

#[tokio::test]
async fn a_template_error_fails_that_delivery_only() {
    let (app, rx) = app().await;
    // No `note`: printing an undefined value is an error for this event.
    app.post_json(
        "/hooks/rakuraku",
        json!({"processType": "rakuraku_submission", "keyId": "bad", "applicant": "山田太郎", "amount": 1}),
    )
    .await;
    app.post_json("/hooks/rakuraku", submission("good")).await;
    app.drain().await;
    let ds = app.deliveries().await;
    assert_eq!(ds[0]["status"], "dead");
    let err = ds[0]["last_error"].as_str().unwrap();
    assert!(err.contains("deals.deal.note") && err.contains("undefined"), "{err}");
    assert_eq!(ds[1]["status"], "succeeded");
    assert_eq!(rx.received().len(), 1);
    // The event is kept and can be replayed once fixed.
    let e = app.api(&format!("/events/{}", ds[0]["event_id"].as_str().unwrap())).await;
    assert_eq!(e["body"]["keyId"], "bad");
}

#[tokio::test]
async fn when_false_is_recorded_as_skipped() {
    let (app, rx) = app().await;
    app.post_json("/hooks/rakuraku", json!({"processType": "other", "keyId": "1"})).await;
    assert_eq!(app.drain().await, 0);
    assert_eq!(app.deliveries().await[0]["status"], "skipped");
    assert!(rx.received().is_empty());
}

#[tokio::test]
async fn a_worker_killed_mid_delivery_is_taken_over_after_its_lease() {
    let (app, rx) = app().await;
    rx.script([Reply::hang()]);
    app.post_json("/hooks/rakuraku", submission("1")).await;
    let worker = app.worker.clone();
    let run = tokio::spawn(async move { worker.run_once().await });
    rx.wait_for(1).await;
    run.abort(); // the worker dies with the request in flight: nothing is recorded
    let _ = run.await;
    assert_eq!(app.deliveries().await[0]["status"], "in_flight");

    // Another worker cannot take it while the lease holds (2 minutes by default)...
    let other = std::sync::Arc::new(renkei::worker::Worker::new(app.app.clone()));
    assert_eq!(other.drain().await.unwrap(), 0);
    // ...and finishes it once the lease has run out.
    app.advance(Duration::from_secs(121));
    assert_eq!(other.drain().await.unwrap(), 1);
    assert_eq!(app.deliveries().await[0]["status"], "succeeded");
    assert_eq!(rx.received().len(), 2, "at least once: the receiver saw the interrupted try too");
}

#[tokio::test]
async fn a_delivery_longer_than_its_lease_is_renewed_not_taken_over() {
    let (app, rx) = app().await;
    rx.script([Reply::hang()]);
    app.post_json("/hooks/rakuraku", submission("1")).await;
    let worker = app.worker.clone();
    let run = tokio::spawn(async move { worker.run_once().await });
    rx.wait_for(1).await;
    // The request is still running 100 seconds in: the worker renews its lease (as its loop does every third
    // of a lease), and 50 seconds past the first lease nobody may take the delivery.
    app.advance(Duration::from_secs(100));
    assert_eq!(app.worker.renew_leases().await.unwrap(), 1);
    app.advance(Duration::from_secs(70));
    let other = std::sync::Arc::new(renkei::worker::Worker::new(app.app.clone()));
    assert_eq!(other.drain().await.unwrap(), 0, "renewed: not taken over");
    assert_eq!(other.renew_leases().await.unwrap(), 0, "another worker renews nothing");
    // When the worker stops renewing (it died), the delivery is taken over after the renewed lease.
    run.abort();
    let _ = run.await;
    assert_eq!(app.worker.renew_leases().await.unwrap(), 0, "a dead run's deliveries are no longer its work");
    app.advance(Duration::from_secs(51));
    assert_eq!(other.drain().await.unwrap(), 1);
    assert_eq!(app.deliveries().await[0]["status"], "succeeded");
}

#[tokio::test]
async fn restart_with_pending_deliveries_delivers_them() {
    let (app, rx) = app().await;
    for k in ["1", "2"] {
        app.post_json("/hooks/rakuraku", submission(k)).await;
    }
    // Claimed by a worker that then dies with the process: restart must not wait for the lease.
    rx.script([Reply::hang()]);
    let worker = app.worker.clone();
    let run = tokio::spawn(async move { worker.run_once().await });
    rx.wait_for(2).await;
    run.abort();
    let _ = run.await;
    let app = app.restart().await;
    // SQLite (one process per file) releases a dead predecessor's claims when it opens; PostgreSQL (nodes
    // share it) waits for their leases to run out.
    app.advance(Duration::from_secs(121));
    assert_eq!(app.drain().await, 2);
    let ds = app.deliveries().await;
    assert!(ds.iter().all(|d| d["status"] == "succeeded"), "{ds:?}");
}

#[tokio::test]
async fn graceful_shutdown_releases_what_is_in_flight() {
    let (app, rx) = app().await;
    rx.script([Reply::hang()]);
    app.post_json("/hooks/rakuraku", submission("1")).await;
    let worker = app.run_worker();
    rx.wait_for(1).await;
    worker.stop().await; // gives up on the hung request after the grace period, then releases it
    let d = &app.deliveries().await[0];
    assert_eq!(d["status"], "pending");
    assert!(d["lease_owner"].is_null());
    assert_eq!(app.drain().await, 1);
    assert_eq!(app.deliveries().await[0]["status"], "succeeded");
}

/// A destination that hangs holds no more of the worker's slots than its room (half of them, as flows write to
/// more than one destination): the other destination's deliveries go on meanwhile, what waits for the hung one
/// stays queued, and it is all delivered once that destination answers again.
#[tokio::test]
async fn a_hung_destination_does_not_hold_up_the_others() {
    // Its requests at once are capped by its concurrency (2) below the room (4)...
    hung_destination(2, false, 2).await;
}

#[tokio::test]
async fn a_hung_destination_with_more_concurrency_than_its_room_holds_only_its_room() {
    // ...or by the room (4 of 8 slots) below its concurrency (8).
    hung_destination(8, false, 4).await;
}

#[tokio::test]
async fn a_hung_destination_at_a_later_step_does_not_hold_up_the_others() {
    // Deliveries reach it after a first step elsewhere: those beyond its room go back to the queue at that step.
    hung_destination(2, true, 2).await;
}

/// 30 events, each to `fine` and (after a step to `relay`, when `later`) to `stuck`, which hangs; 8 worker slots.
/// `hanging`: the requests `stuck` is to have hanging at once.
async fn hung_destination(concurrency: usize, later: bool, hanging: usize) {
    let (stuck, fine, relay) = (Receiver::start().await, Receiver::start().await, Receiver::start().await);
    stuck.answer_by_default(Reply::hang());
    let step = |to: &str| format!("{{ to: {to}, method: POST, path: /in, body: {{ id: \"{{{{ body.id }}}}\" }} }}");
    let to_stuck = if later { format!("{}, {}", step("relay"), step("stuck")) } else { step("stuck") };
    let cfg = format!(
        "worker: {{ concurrency: 8, shutdown_grace: 100ms }}\n\
         sources: {{ orders: {{}} }}\n\
         destinations:\n  \
           stuck: {{ type: http, base_url: \"{}\", concurrency: {concurrency} }}\n  \
           fine: {{ type: http, base_url: \"{}\" }}\n  \
           relay: {{ type: http, base_url: \"{}\" }}\n\
         flows:\n  to_stuck: {{ source: orders, steps: [ {to_stuck} ] }}\n  \
           to_fine: {{ source: orders, steps: [ {} ] }}\n",
        stuck.url,
        fine.url,
        relay.url,
        step("fine")
    );
    let app = spawn_app(&cfg).await;
    for i in 0..30 {
        assert_eq!(app.post_json("/hooks/orders", json!({ "id": i })).await.status(), 202);
    }
    let worker = app.run_worker();
    // Every event reaches `fine` although `to_stuck`'s deliveries are as old and 8 slots are all there are.
    fine.wait_for(30).await;
    stuck.wait_for(hanging).await;
    assert_eq!(stuck.received().len(), hanging, "requests hanging at once");

    // It answers again: everything is delivered, each event once besides the interrupted tries.
    worker.stop().await;
    stuck.answer_by_default(Reply::status(200));
    // The clock stands still: on PostgreSQL the cut-off requests' shared slots (`limit_slots`) were given back
    // when the worker stopped, not left to run out at the request's timeout and 10 s more (the drain would wait
    // for them for ever).
    tokio::time::timeout(Duration::from_secs(30), app.drain()).await.expect("the shared slots were given back");
    let ds = app.deliveries().await;
    assert!(ds.iter().all(|d| d["status"] == "succeeded"), "{ds:?}");
    let got = stuck.received();
    let ids: std::collections::BTreeSet<String> = got.iter().map(|r| r.json()["id"].to_string()).collect();
    assert_eq!((got.len(), ids.len()), (30 + hanging, 30));
    assert_eq!(fine.received().len(), 30);
    // A delivery given back at its second step is not sent to its first again.
    assert_eq!(relay.received().len(), if later { 30 } else { 0 });
}

/// A destination that misbehaves below HTTP's status codes: resets connections, answers bytes that are not
/// HTTP, cuts an answer off, answers after the timeout, answers slowly but in time. Ingress keeps accepting, every
/// failure is a retry with what happened in the history, and once it heals every event is delivered; the only
/// repeats are of tries it answered too late (it had the request, renkei had given up on it).
#[tokio::test]
async fn a_faulty_destination_is_retried_until_it_heals_and_nothing_is_lost() {
    let sink = FaultySink::start().await;
    let cfg = format!(
        "sources: {{ orders: {{}} }}\n\
         destinations: {{ sink: {{ type: http, base_url: \"{}\", timeout: 500ms }} }}\n\
         flows:\n  out: {{ source: orders, retry: {{ max_attempts: 20, initial: 1s, max: 1m }}, \
         steps: [ {{ to: sink, method: POST, path: /in, body: {{ id: \"{{{{ body.id }}}}\" }} }} ] }}\n",
        sink.url
    );
    let app = spawn_app(&cfg).await;
    let faults = [
        (Fault::Reset, "connection reset"),
        (Fault::Garbage, "invalid HTTP"),
        (Fault::Truncated, "end of file before message length reached"),
        (Fault::Slow(Duration::from_secs(2)), "timed out after 500ms"),
    ];
    let mut posted = 0;
    for (round, (fault, says)) in faults.iter().enumerate() {
        sink.set(*fault);
        for _ in 0..3 {
            assert_eq!(app.post_json("/hooks/orders", json!({ "id": posted })).await.status(), 202, "{fault:?}");
            posted += 1;
        }
        let tried = sink.requests();
        assert_eq!(app.drain().await, posted, "{fault:?}: every open delivery tried");
        assert!(sink.requests() >= tried + posted, "{fault:?}: every try reached the sink");
        let ds = app.deliveries().await;
        // Each round tries every open delivery once more: 3, then 3 + 6, then 3 + 6 + 9... tries in all.
        let attempts: u64 = ds.iter().map(|d| d["attempts"].as_u64().unwrap()).sum();
        assert_eq!(attempts, 3 * (round as u64 + 1) * (round as u64 + 2) / 2, "{fault:?}: {ds:?}");
        for d in &ds {
            assert_eq!(d["status"], "retrying", "{fault:?}: {d}");
            let error = d["last_error"].as_str().unwrap();
            assert!(error.to_ascii_lowercase().contains(&says.to_ascii_lowercase()), "{fault:?}: {error}");
        }
        app.advance(Duration::from_secs(120));
    }
    // Slow, but within the timeout: delivered.
    sink.set(Fault::Slow(Duration::from_millis(20)));
    app.post_json("/hooks/orders", json!({ "id": posted })).await;
    posted += 1;
    assert_eq!(app.drain().await, posted);
    let ds = app.deliveries().await;
    assert!(ds.iter().all(|d| d["status"] == "succeeded"), "{ds:?}");
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for body in sink.delivered() {
        *seen.entry(body["id"].to_string()).or_default() += 1;
    }
    assert_eq!(seen.len(), posted, "every event delivered: {seen:?}");
    // Those open while it answered too late (the first 12) were seen twice: once late, once delivered.
    let repeats: usize = seen.values().map(|n| n - 1).sum();
    assert_eq!(repeats, 12, "{seen:?}");
}

/// While an ordering key's head hangs, its next delivery is due but not claimable: the idle worker must not
/// claim again and again meanwhile (it did: the store said something was due now, and the worker looked at
/// once, for as long as the head ran). Observed over half a second: the loop made 286 claims; the
/// worker waits 100 ms between looks.
#[tokio::test]
async fn a_worker_waiting_behind_a_hung_head_of_its_key_does_not_spin() {
    let (app, rx) = app().await;
    rx.script([Reply::hang()]);
    for _ in 0..2 {
        app.post_json("/hooks/rakuraku", submission("K")).await;
    }
    let worker = app.run_worker();
    rx.wait_for(1).await;
    let before = app.worker.claims();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let claims = app.worker.claims() - before;
    assert!(claims <= 20, "{claims} claims in 500 ms while nothing could be claimed");
    assert_eq!(rx.received().len(), 1, "the next of the key waits for its head");
    worker.stop().await;
}

#[tokio::test]
async fn later_steps_see_earlier_responses() {
    let rx = Receiver::start().await;
    let cfg = format!(
        r#"
sources:
  in: {{}}
destinations:
  api: {{ type: http, base_url: "{}" }}
flows:
  two-steps:
    source: in
    steps:
      - name: find
        to: api
        method: GET
        path: /search
        query: {{ code: "{{{{ body.code }}}}" }}
      - to: api
        method: PATCH
        path: "/records/{{{{ steps.find.body.id }}}}"
        body: {{ status: "{{{{ body.status }}}}", previous: "{{{{ steps[0].body.status }}}}" }}
"#,
        rx.url
    );
    let app = spawn_app(&cfg).await;
    rx.script([Reply::json(200, json!({"id": 42, "status": "open"})), Reply::status(500)]);
    app.post_json("/hooks/in", json!({"code": "C 1", "status": "closed"})).await;
    app.drain().await;
    let d = &app.deliveries().await[0];
    assert_eq!(d["status"], "retrying");
    assert_eq!(d["step"], 1, "the first step's success is kept");
    app.advance(Duration::from_secs(60));
    app.drain().await;
    let got = rx.received();
    assert_eq!(got.len(), 3, "the search is not repeated: {:?}", got.iter().map(|g| &g.path).collect::<Vec<_>>());
    assert_eq!(got[0].query.as_deref(), Some("code=C+1"));
    assert_eq!(got[2].path, "/records/42");
    assert_eq!(got[2].json(), json!({"status": "closed", "previous": "open"}));
}

#[tokio::test]
async fn csv_out_in_shift_jis_with_header_and_footer_lines() {
    let rx = Receiver::start().await;
    let cfg = format!(
        r##"
sources:
  in: {{}}
destinations:
  legacy: {{ type: http, base_url: "{}", auth: {{ basic: {{ username: u, password: "pw-secret" }} }} }}
flows:
  to-csv:
    source: in
    steps:
      - to: legacy
        path: /import
        format: csv
        csv: {{ encoding: shift_jis, header_line: "#HEADER", footer_line: "#END" }}
        body: "{{{{ body.rows }}}}"
"##,
        rx.url
    );
    let app = spawn_app(&cfg).await;
    app.post_json("/hooks/in", json!({"rows": [{"顧客名": "㈱髙山", "金額": 100}, {"顧客名": "佐藤", "金額": 200}]}))
        .await;
    app.drain().await;
    let got = &rx.received()[0];
    assert_eq!(got.header("content-type"), Some("text/csv; charset=Shift_JIS"));
    assert!(got.header("authorization").unwrap().starts_with("Basic "));
    let (text, _, bad) = encoding_rs::SHIFT_JIS.decode(&got.body);
    assert!(!bad);
    assert_eq!(text, "#HEADER\r\n顧客名,金額\r\n㈱髙山,100\r\n佐藤,200\r\n#END\r\n");
}

#[tokio::test]
async fn raw_json_template_bodies_are_escaped_and_checked() {
    let rx = Receiver::start().await;
    let cfg = format!(
        r#"
sources:
  questetra: {{}}
destinations:
  kintone: {{ type: http, base_url: "{}" }}
flows:
  update:
    source: questetra
    steps:
      - to: kintone
        method: PUT
        path: /k/v1/record.json
        body: |
          {{"app": 12, "updateKey": {{"field": "code", "value": "{{{{ body.q_code }}}}"}},
           "record": {{"title": {{"value": "{{{{ body.q_title }}}}"}}}}}}
"#,
        rx.url
    );
    let app = spawn_app(&cfg).await;
    app.post(
        "/hooks/questetra",
        "application/x-www-form-urlencoded",
        "q_code=A-1&q_title=%22%E7%89%B9%E6%80%A5%22%0A%E6%94%B9%E8%A1%8C%5C",
    )
    .await;
    app.drain().await;
    assert_eq!(rx.received()[0].json()["record"]["title"]["value"], "\"特急\"\n改行\\");
}

#[tokio::test]
async fn a_two_way_sync_does_not_echo_its_own_writes() {
    let rx = Receiver::start().await;
    let cfg = format!(
        r#"
sources:
  rakuraku: {{ event_type: "{{{{ body.processType }}}}" }}
  esm: {{}}
destinations:
  esm-api: {{ type: http, base_url: "{url}/esm" }}
  rakuraku-api: {{ type: http, base_url: "{url}/rakuraku" }}
flows:
  to-esm:
    source: rakuraku
    steps:
      - to: esm-api
        method: PUT
        path: "/sheet/deal/{{{{ body.keyId }}}}"
        body: {{ deals.deal.status: 承認済 }}
        echo_key: "esm:{{{{ body.keyId }}}}:承認済"
  to-rakuraku:
    source: esm
    skip_echo: "esm:{{{{ body.id }}}}:{{{{ body.status }}}}"
    steps:
      - {{ to: rakuraku-api, path: /apirecord/update/version/v1, body: {{ keyId: "{{{{ body.id }}}}", status: "{{{{ body.status }}}}" }} }}
"#,
        url = rx.url
    );
    let app = spawn_app(&cfg).await;
    app.post_json("/hooks/rakuraku", json!({"processType": "rakuraku_approval", "keyId": "77"})).await;
    app.drain().await;
    // eSM announces the change renkei made: recognised, not written back.
    app.post_json("/hooks/esm", json!({"id": "77", "status": "承認済"})).await;
    // A change made in eSM by a person: written back.
    app.post_json("/hooks/esm", json!({"id": "77", "status": "否認"})).await;
    app.drain().await;
    let paths: Vec<String> = rx.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/esm/sheet/deal/77", "/rakuraku/apirecord/update/version/v1"]);
    assert_eq!(rx.received()[1].json()["status"], "否認");
    let back = app.api("/deliveries?flow=to-rakuraku").await;
    let skipped = back["items"].as_array().unwrap().iter().find(|d| d["status"] == "skipped").unwrap().clone();
    assert!(
        skipped["last_error"]
            .as_str()
            .unwrap()
            .starts_with("loop guard: renkei wrote this change itself (flow `to-esm`"),
        "{skipped}"
    );
    // After the window, the same change is someone else's again.
    app.advance(Duration::from_secs(3601));
    app.post_json("/hooks/esm", json!({"id": "77", "status": "承認済"})).await;
    app.drain().await;
    assert_eq!(rx.received().len(), 3);
}

#[tokio::test]
async fn success_when_catches_errors_reported_with_http_200() {
    let rx = Receiver::start().await;
    let cfg = format!(
        r#"
sources:
  in: {{}}
destinations:
  rakuraku: {{ type: http, base_url: "{}" }}
flows:
  update:
    source: in
    steps:
      - to: rakuraku
        path: /apirecord/update/version/v1
        body: {{ keyId: "{{{{ body.id }}}}" }}
        success_when: "response.body.status == 'success'"
"#,
        rx.url
    );
    let app = spawn_app(&cfg).await;
    rx.script([
        Reply::json(200, json!({"status": "error", "message": "レコードが存在しません"})),
        Reply::json(200, json!({"status": "success"})),
    ]);
    // One at a time: the receiver's answers go to the requests in the order they arrive.
    app.post_json("/hooks/in", json!({"id": "1"})).await;
    app.drain().await;
    app.post_json("/hooks/in", json!({"id": "2"})).await;
    app.drain().await;
    let ds = app.deliveries().await;
    assert_eq!(ds[0]["status"], "dead");
    assert_eq!(
        ds[0]["last_error"],
        "step 0: the answer is not a success: `response.body.status == 'success'` is false"
    );
    assert_eq!(ds[1]["status"], "succeeded");
}
