//! Alert webhooks against real receivers over HTTP, a real coordinator and
//! PostgreSQL: a burst of dead tasks is one digest, signed the Standard
//! Webhooks way (checked here with an HMAC of our own) and readable by a
//! Slack-style receiver; a receiver that fails is retried with backoff, and
//! a coordinator restart loses nothing; a receiver that hangs holds up no
//! other webhook; `hivectl webhooks deliveries` shows what failed and why,
//! and `hivectl webhooks resend` posts it again (audited).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hive_coordinator::config::{Config, WebhookConfig};
use hive_shared::config::Secret;
use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::fake_worker::FakeWorker;
use hive_tests::http::{Answer, Received, Receiver};
use hive_tests::postgres::{TestDb, fresh_database};
use hive_tests::procs::hivectl_output;
use hive_tests::wait::eventually;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value as Json;

/// The Standard Webhooks specification's example secret.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn webhook(name: &str, receiver: &Receiver, events: &[&str], window: Duration) -> WebhookConfig {
    WebhookConfig {
        name: name.into(),
        url: Secret::new(receiver.url()),
        events: events.iter().map(|kind| (*kind).to_owned()).collect(),
        secret: Secret::new(SECRET.into()),
        window,
    }
}

fn config(db: &TestDb, webhooks: Vec<WebhookConfig>) -> Config {
    let mut config = test_config(db);
    config.webhooks = webhooks;
    config.webhook_delivery.retry_initial = Duration::from_millis(200);
    config.webhook_delivery.timeout = Duration::from_secs(1);
    config
}

/// Checks a post's Standard Webhooks signature with the secret, independently of Hive's code.
fn assert_signed(post: &Received) {
    let id = post.header("webhook-id").unwrap();
    let timestamp: i64 = post.header("webhook-timestamp").unwrap().parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 300, "a fresh timestamp");
    let key = STANDARD.decode(SECRET.trim_start_matches("whsec_")).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{}", post.body).as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(post.header("webhook-signature"), Some(expected.as_str()));
}

/// One delivery row: (status, attempts, events, last_status, last_error).
type DeliveryState = (String, i32, i32, Option<i32>, Option<String>);

async fn deliveries(db: &TestDb, webhook: &str) -> Vec<DeliveryState> {
    sqlx::query_as(
        "select status, attempts, events, last_status, last_error from webhook_deliveries
         where webhook = $1 order by created_at",
    )
    .bind(webhook)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

async fn delivered(db: &TestDb, webhook: &str) -> bool {
    deliveries(db, webhook).await.iter().any(|row| row.0 == "delivered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_dead_tasks_is_one_signed_digest_with_a_slack_text() {
    let db = fresh_database().await;
    let receiver = Receiver::start(vec![Answer::Status(200)]).await;
    let config = config(&db, vec![webhook("ops", &receiver, &["task.dead"], Duration::from_secs(1))]);
    let coordinator = TestCoordinator::start(config).await;
    let tasks = (0..30).map(|i| pb::TaskSpec {
        agent: "a".into(),
        prompt: i.to_string(),
        max_attempts: 1,
        ..Default::default()
    });
    let request = pb::SubmitTasksRequest { swarm: "burst".into(), tasks: tasks.collect(), ..Default::default() };
    coordinator.admin_client().await.submit_tasks(request).await.unwrap();
    let mut worker = FakeWorker::register(&coordinator, "w", &["a"], 30).await;
    let claimed = worker.claim(30, Duration::from_secs(5)).await;
    assert_eq!(claimed.len(), 30);
    let failures = claimed
        .iter()
        .map(|task| pb::Failure {
            task_id: task.task_id.clone(),
            attempt_id: task.attempt_id.clone(),
            class: pb::FailureClass::Permanent.into(),
            error: "it broke".into(),
            ..Default::default()
        })
        .collect();
    worker.client.fail(pb::FailRequest { worker_id: worker.id.clone(), failures }).await.unwrap();

    eventually("the digest to be delivered", Duration::from_secs(20), || delivered(&db, "ops")).await;
    let posts = receiver.received();
    assert_eq!(posts.len(), 1, "thirty dead tasks in one window are one post");
    assert_eq!(deliveries(&db, "ops").await, [("delivered".into(), 1, 30, Some(200), None)]);
    let post = &posts[0];
    assert_signed(post);
    let id: uuid::Uuid = sqlx::query_scalar("select id from webhook_deliveries").fetch_one(&db.pool).await.unwrap();
    assert_eq!(post.header("webhook-id"), Some(format!("msg_{}", id.simple()).as_str()));
    assert_eq!(post.header("content-type"), Some("application/json"));
    let body: Json = serde_json::from_str(&post.body).unwrap();
    assert_eq!(body["type"], "hive.events");
    assert_eq!((body["data"]["events"].as_i64(), body["data"]["counts"]["task.dead"].as_i64()), (Some(30), Some(30)));
    let shown = body["data"]["shown"].as_array().unwrap();
    assert_eq!(shown.len(), 30);
    assert!(shown.iter().all(|event| event["kind"] == "task.dead" && event["detail"]["error"] == "it broke"));
    let text = body["text"].as_str().unwrap();
    assert!(text.starts_with("Hive (ops): 30 task.dead\n• task.dead task "), "{text}");
    assert!(text.ends_with("… and 25 more"), "{text}");
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_retried_and_a_coordinator_restart_loses_nothing() {
    let db = fresh_database().await;
    let answers = vec![Answer::Status(500), Answer::Status(500), Answer::Status(200)];
    let receiver = Receiver::start(answers).await;
    let config = || config(&db, vec![webhook("ops", &receiver, &["worker.*"], Duration::from_millis(100))]);
    let first = TestCoordinator::start(config()).await;
    FakeWorker::register(&first, "w", &["a"], 1).await;
    eventually("a failed post to be recorded", Duration::from_secs(20), || async {
        deliveries(&db, "ops").await.iter().any(|row| row.4.is_some())
    })
    .await;
    first.stop().await.unwrap();
    let second = TestCoordinator::start(config()).await;
    eventually("the delivery to get through", Duration::from_secs(20), || delivered(&db, "ops")).await;
    let rows = deliveries(&db, "ops").await;
    assert_eq!(rows, [("delivered".into(), 3, 1, Some(200), None)], "two 500s, then a 200");
    let posts = receiver.received();
    assert_eq!(posts.len(), 3);
    assert!(posts.iter().all(|post| post.header("webhook-id") == posts[0].header("webhook-id")), "one id for retries");
    posts.iter().for_each(assert_signed);
    let body: Json = serde_json::from_str(&posts[2].body).unwrap();
    assert_eq!(body["data"]["shown"][0]["kind"], "worker.joined");
    second.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_holds_up_no_other_webhook() {
    let db = fresh_database().await;
    let hanging = Receiver::start(vec![Answer::Hang]).await;
    let fine = Receiver::start(vec![Answer::Status(204)]).await;
    let window = Duration::from_millis(100);
    let webhooks =
        vec![webhook("slow", &hanging, &["worker.joined"], window), webhook("fast", &fine, &["worker.joined"], window)];
    let coordinator = TestCoordinator::start(config(&db, webhooks)).await;
    FakeWorker::register(&coordinator, "w", &["a"], 1).await;
    eventually("the hanging post to time out", Duration::from_secs(20), || async {
        deliveries(&db, "slow").await.iter().any(|row| row.4.is_some())
    })
    .await;
    let slow = deliveries(&db, "slow").await;
    assert_eq!((slow[0].0.as_str(), slow[0].4.as_deref()), ("pending", Some("no answer within 1s")));
    assert_eq!(
        deliveries(&db, "fast").await,
        [("delivered".into(), 1, 1, Some(204), None)],
        "delivered at the first post"
    );
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hivectl_shows_a_given_up_delivery_with_its_error_and_resends_it() {
    let db = fresh_database().await;
    let receiver = Receiver::start(vec![Answer::Status(503), Answer::Status(200)]).await;
    let mut config = config(&db, vec![webhook("ops", &receiver, &["worker.joined"], Duration::from_millis(100))]);
    config.webhook_delivery.give_up_after = Duration::ZERO;
    let coordinator = TestCoordinator::start(config).await;
    FakeWorker::register(&coordinator, "w", &["a"], 1).await;
    eventually("the delivery to be given up", Duration::from_secs(20), || async {
        deliveries(&db, "ops").await.iter().any(|row| row.0 == "failed")
    })
    .await;

    let listed = hivectl_output(&coordinator.url, &["--json", "webhooks", "deliveries", "--status", "failed"]).await;
    assert!(listed.status.success(), "{}", listed.stderr);
    let listed: Json = serde_json::from_str(&listed.stdout).unwrap();
    let failed = &listed.as_array().unwrap()[0];
    assert_eq!((failed["webhook"].as_str(), failed["last_status"].as_u64()), (Some("ops"), Some(503)));
    assert!(failed["last_error"].as_str().unwrap().starts_with("answered 503"), "{failed}");
    assert_eq!(failed["body"]["data"]["counts"]["worker.joined"], 1);
    let id = failed["id"].as_str().unwrap();

    let table = hivectl_output(&coordinator.url, &["webhooks", "deliveries"]).await;
    assert!(table.stdout.contains(id) && table.stdout.contains("failed"), "{}", table.stdout);
    let resent = hivectl_output(&coordinator.url, &["webhooks", "resend", id]).await;
    assert!(resent.status.success(), "{}", resent.stderr);
    eventually("the resent delivery to get through", Duration::from_secs(20), || delivered(&db, "ops")).await;
    assert_eq!(receiver.received().len(), 2);
    let audited: i64 =
        sqlx::query_scalar("select count(*) from audit_log where action = 'ResendWebhookDelivery' and outcome = 'ok'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(audited, 1);

    let unknown = hivectl_output(&coordinator.url, &["webhooks", "resend", &uuid::Uuid::nil().to_string()]).await;
    assert!(!unknown.status.success() && unknown.stderr.contains("not found"), "{}", unknown.stderr);
    let nonsense = hivectl_output(&coordinator.url, &["webhooks", "resend", "nope"]).await;
    assert!(nonsense.stderr.contains("\"nope\" is not a delivery id"), "{}", nonsense.stderr);
    let status = hivectl_output(&coordinator.url, &["webhooks", "deliveries", "--status", "lost"]).await;
    assert!(status.stderr.contains("\"lost\" is not one of pending, delivered, failed"), "{}", status.stderr);
    coordinator.stop().await.unwrap();
}
