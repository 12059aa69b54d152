//! The web dashboard in a real browser (headless Chromium) against a real
//! coordinator, worker and PostgreSQL: a task submitted with `hivectl`
//! appears on an open page within a second without a reload; Cancel on a
//! running task kills its agent's process tree; a viewer sees no controls
//! and its forged posts are refused, and a revoked one is signed out; after
//! its event stream is cut (the coordinator it reads restarts), the page
//! catches up with no event lost.
//! The overview's numbers follow the tasks without a reload. The workers
//! page lists real workers; an admin drains one and stops the rest from it.
//! Dead letters are grouped by error and retried in bulk after a count; a
//! task's output shows as text (colours stripped, bad bytes replaced); a
//! swarm's page says why it waits and an admin sets its budget there,
//! pauses it, and resumes it from the overview. A running task's output
//! follows its agent; a swarm's dependency graph is drawn by depth; the task
//! list cancels what its filter matches after a count; a cool-down is
//! cleared from the overview; the audit log, locks and deliveries are listed.
//! Markup in a prompt shows as text. The token never appears in a URL.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::{Duration, Instant};

use hive_coordinator::config::Config;
use hive_shared::pb;
use hive_tests::auth::admin_token;
use hive_tests::browser::Browser;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::http::get;
use hive_tests::postgres::{TestDb, fresh_database};
use hive_tests::procs::{hivectl_json, sleeping, start_worker};
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};
use serde_json::json;

const MARKER: &str = "1007.2113";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_live_acts_for_admins_only_and_misses_no_event() {
    let db = fresh_database().await;
    let mut config = serving_config(&db);
    config.leases.heartbeat_interval = Duration::from_millis(500);
    let coordinator = TestCoordinator::start(config.clone()).await;
    let site = site(&coordinator);
    let dir = tempfile::tempdir().unwrap();
    let tree = Agent::shell(format!("sleep {MARKER} & sleep {MARKER} & wait")).kill_grace("1s");
    let setup = WorkerSetup::new().slots(1).agent("tree", tree).write(dir.path(), "worker");
    let worker = start_worker(&coordinator.url, &setup, "w", dir.path());

    // Signed out, every page leads to the login form.
    let browser = Browser::launch().await;
    browser.open(&format!("{site}/tasks")).await;
    assert_eq!(browser.eval("location.pathname").await, json!("/login"));
    browser.sign_in(admin_token()).await;
    assert_eq!(browser.eval("location.href").await, json!(format!("{site}/")), "no token in the URL");
    browser.wait_live().await;

    // A task submitted with hivectl shows on the open page within a second.
    let file = dir.path().join("tasks.yaml");
    std::fs::write(&file, "swarm: live\ntasks:\n  - {agent: tree, prompt: \"<b id=injected>bold</b>\"}\n").unwrap();
    let submitted = hivectl_json(&coordinator.url, &["submit", file.to_str().unwrap()]).await;
    let submitted_at = Instant::now();
    let task = submitted["tasks"][0]["id"].as_str().unwrap().to_owned();
    let shown = format!("document.querySelector('#events a.task[href=\"/tasks/{task}\"]') !== null");
    browser.wait_for("the submitted task on the page", &shown, Duration::from_secs(5)).await;
    let took = submitted_at.elapsed();
    eprintln!("hivectl submit returned → task on the open page: {took:?}");
    assert!(took <= Duration::from_secs(1), "took {took:?}");
    assert_eq!(browser.eval("performance.getEntriesByType('navigation').length").await, json!(1), "no reload");
    // The overview's numbers follow, pushed by the coordinator, without a reload either.
    eventually("the agent's process tree to start", Duration::from_secs(20), || async { sleeping(MARKER) == 2 }).await;
    let running = "document.getElementById('total-running').textContent === '1' \
        && document.getElementById('total-ready').textContent === '0' \
        && document.querySelector('tr[data-swarm] td[data-status=running]').textContent === '1'";
    browser.wait_for("the overview to count the running task", running, Duration::from_secs(10)).await;
    let pace = "[...document.querySelectorAll('tr[data-swarm] td[data-pace]')].map(td => td.textContent)";
    browser.wait_for("the swarm's pace", &format!("{pace}[0] !== ''"), Duration::from_secs(5)).await;
    let pace: Vec<String> = serde_json::from_value(browser.eval(pace).await).unwrap();
    assert!(pace[0].ends_with('s') && pace[1] == "0.0/min" && pace[2] == "–", "elapsed, pace, left: {pace:?}");
    assert_eq!(browser.eval("performance.getEntriesByType('navigation').length").await, json!(1), "no reload");

    // The workers page follows the heartbeats, which carry no event: it
    // shows the running agent's memory and reads itself again, without a
    // reload.
    browser.open(&format!("{site}/workers")).await;
    let rss = "/^[0-9a-f]{8} [0-9.]+ [KMG]i?B$/.test(document.querySelector('#workers .rss')?.textContent || '')";
    browser.wait_for("the agent's memory on the workers page", rss, Duration::from_secs(15)).await;
    // Marked, then replaced by the page read anew.
    browser.eval("document.getElementById('main').dataset.seen = 'yes'").await;
    let read_again = "document.getElementById('main').dataset.seen === undefined";
    browser.wait_for("the workers page to be read again", read_again, Duration::from_secs(15)).await;
    assert_eq!(browser.eval("performance.getEntriesByType('navigation').length").await, json!(1), "no reload");

    // Cancel on the running task kills its agent's process tree.
    browser.open(&format!("{site}/tasks/{task}")).await;
    assert_eq!(browser.eval("document.getElementById('injected')").await, json!(null), "markup in a prompt is text");
    assert!(
        browser.eval("document.querySelector('pre').textContent").await.as_str().unwrap().contains("<b id=injected>")
    );
    browser.eval("document.querySelector('button[value=cancel]').click()").await;
    eventually("the agent's process tree to die", Duration::from_secs(10), || async { sleeping(MARKER) == 0 }).await;
    browser
        .wait_for(
            "the page to show the cancel",
            "document.getElementById('status').textContent === 'cancelled'",
            Duration::from_secs(10),
        )
        .await;
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'CancelTask' and actor = 'admin' and outcome = 'ok'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1, "the cancel is audited as the API's is");

    // A viewer sees no controls, and a forged post changes nothing.
    let request = pb::CreateTokenRequest { name: "watcher".into(), role: "viewer".into(), expires_in: None };
    let viewer = coordinator.admin_client().await.create_token(request).await.unwrap().into_inner().token;
    std::fs::write(&file, "swarm: held\ntasks:\n  - {agent: nobody, prompt: waits}\n").unwrap();
    let held_swarm = hivectl_json(&coordinator.url, &["submit", file.to_str().unwrap()]).await;
    let held = held_swarm["tasks"][0]["id"].as_str().unwrap().to_owned();
    browser.eval("document.querySelector('form[action=\"/logout\"] button').click()").await;
    browser.wait_for("signing out", "location.pathname === '/login'", Duration::from_secs(10)).await;
    browser.sign_in(&viewer).await;
    browser.open(&format!("{site}/tasks/{held}")).await;
    assert_eq!(browser.eval("document.querySelectorAll('.controls, button[value]').length").await, json!(0));
    let forged = format!(
        "fetch('/tasks/{held}/cancel', {{method: 'POST', body: new URLSearchParams({{csrf: 'forged'}})}}).then(r => r.status)"
    );
    assert_eq!(browser.eval(&forged).await, json!(403));
    let status: String = sqlx::query_scalar("select status::text from task_states where task_id = $1::uuid")
        .bind(&held)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "ready", "the forged cancel changed nothing");
    // Its swarm's page says why it waits, and shows a viewer no budget control.
    browser.open(&format!("{site}/swarms/{}", held_swarm["swarm_id"].as_str().unwrap())).await;
    let waiting = browser.eval("document.getElementById('waiting').textContent").await;
    assert!(waiting.as_str().unwrap().contains("no live worker offers agent nobody"), "{waiting}");
    assert_eq!(browser.eval("document.querySelectorAll('input[name=budget]').length").await, json!(0));

    // The stream is cut: the coordinator the page reads stops; tasks are
    // submitted through another; once it is back the page has every event.
    browser.open(&format!("{site}/tasks")).await;
    browser.wait_live().await;
    let other = TestCoordinator::start(test_config(&db)).await;
    let (addr, http) = (coordinator.addr, coordinator.http_addr.unwrap());
    coordinator.stop().await.unwrap();
    browser
        .wait_for(
            "the stream to be cut",
            "document.getElementById('live-state').textContent !== 'live'",
            Duration::from_secs(10),
        )
        .await;
    let tasks = (0..5).map(|i| format!("  - {{agent: nobody, prompt: \"cut {i}\"}}\n")).collect::<String>();
    std::fs::write(&file, format!("swarm: cut\ntasks:\n{tasks}")).unwrap();
    let cut = hivectl_json(&other.url, &["submit", file.to_str().unwrap()]).await;
    config.http.listen = Some(http);
    let _back = TestCoordinator::start_at(config, addr).await;
    for task in cut["tasks"].as_array().unwrap() {
        let task = task["id"].as_str().unwrap();
        let shown = format!("document.querySelector('#events a.task[href=\"/tasks/{task}\"]') !== null");
        browser.wait_for("every event submitted while the stream was cut", &shown, Duration::from_secs(20)).await;
    }
    let seqs = browser.eval("[...document.querySelectorAll('#events li')].map(li => Number(li.dataset.seq))").await;
    let mut seqs: Vec<i64> = serde_json::from_value(seqs).unwrap();
    let listed = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), listed, "no event shown twice");
    drop(worker);
}

#[tokio::test]
async fn signing_in_refuses_bad_and_unfit_tokens_and_pages_need_a_session() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(serving_config(&db)).await;
    let site = site(&coordinator);
    let request = pb::CreateTokenRequest { name: "scraper".into(), role: "metrics".into(), expires_in: None };
    let metrics = coordinator.admin_client().await.create_token(request).await.unwrap().into_inner().token;

    let browser = Browser::launch().await;
    browser.open(&format!("{site}/login")).await;
    browser.sign_in("hive_a_nonsense").await;
    assert!(browser.eval("document.querySelector('.error').textContent").await.as_str().unwrap().contains("token"));
    browser.sign_in(&metrics).await;
    let refusal = browser.eval("document.querySelector('.error').textContent").await;
    assert!(refusal.as_str().unwrap().contains("a metrics token may not use the dashboard"), "{refusal}");
    // Without a session the live stream and the controls are not served either.
    let reply = get(coordinator.http_addr.unwrap(), "/live", None).await;
    assert_eq!(reply.status, 303);
    let forged = format!(
        "fetch('/tasks/{}/cancel', {{method: 'POST', body: new URLSearchParams({{csrf: 'x'}}), redirect: 'manual'}}).then(r => r.type)",
        uuid::Uuid::new_v4()
    );
    assert_eq!(browser.eval(&forged).await, json!("opaqueredirect"), "sent to the login form");

    // A page open when its token is revoked lands on the login form at the next event.
    let request = pb::CreateTokenRequest { name: "eyes".into(), role: "viewer".into(), expires_in: None };
    let viewer = coordinator.admin_client().await.create_token(request).await.unwrap().into_inner().token;
    browser.sign_in(&viewer).await;
    browser.open(&format!("{site}/tasks")).await;
    browser.wait_live().await;
    let revoke = pb::RevokeTokenRequest { name: "eyes".into() };
    coordinator.admin_client().await.revoke_token(revoke).await.unwrap();
    // Events keep coming, as beats do on a heartbeat stream (a token is
    // looked up again once its last lookup is 500 ms old).
    let mut admin = coordinator.admin_client().await;
    let submitting = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(200));
        loop {
            every.tick().await;
            let task = pb::TaskSpec { agent: "any".into(), prompt: "p".into(), ..Default::default() };
            let submit = pb::SubmitTasksRequest { swarm: "after".into(), tasks: vec![task], ..Default::default() };
            if admin.submit_tasks(submit).await.is_err() {
                return;
            }
        }
    });
    browser.wait_for("the revoked session signed out", "location.pathname === '/login'", Duration::from_secs(10)).await;
    submitting.abort();
}

/// The suite's coordinator config with the HTTP listener on.
fn serving_config(db: &TestDb) -> Config {
    let mut config = test_config(db);
    config.http.listen = Some("127.0.0.1:0".parse().unwrap());
    config
}

/// The dashboard's address.
fn site(coordinator: &TestCoordinator) -> String {
    format!("http://{}", coordinator.http_addr.unwrap())
}

/// A browser signed in to `site` with the admin token.
async fn admin_browser(site: &str) -> Browser {
    let browser = Browser::launch().await;
    browser.open(&format!("{site}/login")).await;
    browser.sign_in(admin_token()).await;
    browser
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_page_lists_workers_and_an_admin_drains_one_and_stops_the_rest() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(serving_config(&db)).await;
    let site = site(&coordinator);
    let dir = tempfile::tempdir().unwrap();
    let setup = WorkerSetup::new().slots(2).agent("noop", Agent::shell("true")).write(dir.path(), "worker");
    let mut first = start_worker(&coordinator.url, &setup, "first", dir.path());
    let mut second = start_worker(&coordinator.url, &setup, "second", dir.path());

    let browser = admin_browser(&site).await;
    browser.open(&format!("{site}/workers")).await;
    browser
        .wait_for(
            "both workers listed",
            "document.querySelectorAll('#workers tr[data-worker]').length === 2",
            Duration::from_secs(20),
        )
        .await;
    // Idle, each says both its slots are free (a waiting claim runs no agent).
    eventually("the idle workers' free slots", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>("select coalesce(sum(free_slots), 0)::int8 from workers")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            == 4
    })
    .await;
    // The page re-reads itself on `worker.*` events: one that registers after it opened shows too.
    let names = browser.eval("[...document.querySelectorAll('#workers tr[data-worker] td:first-child')].map(td => td.textContent).sort()").await;
    assert_eq!(names, json!(["first", "second"]));

    // Drain the first from its row: it exits; then the emergency stop takes the second.
    let drain = "[...document.querySelectorAll('#workers tr[data-worker]')].find(tr => tr.cells[0].textContent === 'first').querySelector('button[value=drain]').click()";
    browser.eval(drain).await;
    let status = tokio::time::timeout(Duration::from_secs(20), first.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the drained worker exits cleanly: {}", first.log_text());
    browser
        .wait_for(
            "the page after the drain",
            "location.pathname === '/workers' && document.readyState === 'complete'",
            Duration::from_secs(10),
        )
        .await;
    browser.eval("document.querySelector('button[value=stop-all]').click()").await;
    let status = tokio::time::timeout(Duration::from_secs(20), second.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the stopped worker exits cleanly: {}", second.log_text());
    let audited: i64 =
        sqlx::query_scalar("select count(*) from audit_log where action = 'StopWorkers' and outcome = 'ok'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(audited, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_grouped_by_error_and_retried_in_bulk_after_a_count() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(serving_config(&db)).await;
    let site = site(&coordinator);
    let dir = tempfile::tempdir().unwrap();
    let healed = dir.path().join("healed");
    let broken = Agent::shell(format!(
        r#"test -e {} && echo '{{"ok": 1}}' && exit 0; printf '\033[31mred\033[0m \377<i id=x>i</i>\n'; echo 'cannot <ever> work' >&2; exit 3"#,
        healed.display()
    ));
    let setup = WorkerSetup::new().slots(3).agent("broken", broken).write(dir.path(), "worker");
    let _worker = start_worker(&coordinator.url, &setup, "w", dir.path());
    let file = dir.path().join("tasks.yaml");
    let tasks =
        (0..3).map(|i| format!("  - {{agent: broken, prompt: \"{i}\", max_attempts: 1}}\n")).collect::<String>();
    std::fs::write(&file, format!("swarm: dead\ntasks:\n{tasks}")).unwrap();
    let submitted = hivectl_json(&coordinator.url, &["submit", file.to_str().unwrap()]).await;
    let dead = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from task_states where status = 'dead'")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    eventually("three dead tasks", Duration::from_secs(20), || async { dead().await == 3 }).await;

    let browser = admin_browser(&site).await;
    browser.open(&format!("{site}/dead")).await;
    let row = browser.eval("[...document.querySelectorAll('#dead tr')].slice(1).map(tr => [tr.cells[0].textContent, tr.cells[1].textContent])").await;
    let rows = row.as_array().unwrap();
    assert_eq!(rows.len(), 1, "one group: {row}");
    assert_eq!(rows[0][0], json!("3"));
    assert!(rows[0][1].as_str().unwrap().contains("cannot <ever> work"), "the error, as text: {row}");

    // A dead task's page shows its output as text: colours stripped, bad bytes replaced, markup inert.
    browser.open(&format!("{site}/tasks/{}", submitted["tasks"][0]["id"].as_str().unwrap())).await;
    let output = browser.eval("document.getElementById('output').textContent").await;
    let output = output.as_str().unwrap();
    assert!(output.contains("red \u{fffd}<i id=x>i</i>\n"), "{output:?}");
    assert!(output.contains("cannot <ever> work"), "{output:?}");
    assert!(!output.contains('\u{1b}'), "{output:?}");
    assert_eq!(browser.eval("document.getElementById('x')").await, json!(null));

    std::fs::write(&healed, "").unwrap();
    browser.open(&format!("{site}/dead")).await;
    browser.eval("document.querySelector('#dead a.retry').click()").await;
    browser
        .wait_for(
            "the count before the retry",
            "document.getElementById('count')?.textContent === '3'",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(dead().await, 3, "nothing is retried before the confirmation");
    browser.eval("document.querySelector('button[value=retry-all]').click()").await;
    eventually("the three tasks to succeed once retried", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>("select count(*) from task_states where status = 'succeeded'")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            == 3
    })
    .await;
    let audited: i64 =
        sqlx::query_scalar("select count(*) from audit_log where action = 'RetryTasks' and affected = 3")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(audited, 1);

    // The swarm's page counts them, and an admin sets its budget there.
    browser.open(&format!("{site}/swarms/{}", submitted["swarm_id"].as_str().unwrap())).await;
    let succeeded = "document.querySelector('a[data-status=succeeded]').textContent === '3'";
    browser.wait_for("the swarm's counts", succeeded, Duration::from_secs(10)).await;
    browser.eval("document.querySelector('input[name=budget]').value = '5'; document.querySelector('button[value=budget]').click()").await;
    browser
        .wait_for(
            "the new budget",
            "document.getElementById('budget')?.textContent === '5.00'",
            Duration::from_secs(10),
        )
        .await;
    let budget: Option<f64> = sqlx::query_scalar("select budget from swarms").fetch_one(&db.pool).await.unwrap();
    assert_eq!(budget, Some(5.0));

    // Paused from its page, it is listed on the overview, and resumed there.
    browser.eval("document.querySelector('button[value=pause]').click()").await;
    let listed = "location.pathname === '/' && document.querySelector('#pauses td')?.textContent.startsWith('swarm ')";
    browser.wait_for("the pause on the overview", listed, Duration::from_secs(10)).await;
    browser.eval("document.querySelector('#pauses button[value=resume]').click()").await;
    browser.wait_for("the pause gone", "document.getElementById('no-pauses') !== null", Duration::from_secs(10)).await;
    let actions: Vec<String> =
        sqlx::query_scalar("select action from audit_log where action in ('Pause', 'Resume') order by seq")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(actions, ["Pause", "Resume"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphs_output_bulk_cancels_cool_downs_and_records_work_in_the_browser() {
    let db = fresh_database().await;
    let mut config = serving_config(&db);
    config.rate_limits.base = Duration::from_secs(3600);
    let coordinator = TestCoordinator::start(config).await;
    let site = site(&coordinator);
    let dir = tempfile::tempdir().unwrap();
    let (more, back) = (dir.path().join("print-more"), dir.path().join("provider-is-back"));
    let printer = Agent::shell(format!(
        "echo 'first <part>'; while [ ! -e {} ]; do sleep 0.1; done; echo 'second part'; sleep {MARKER}",
        more.display()
    ));
    let limited = Agent::shell(format!(
        r#"test -e {} || {{ echo "429: slow down" >&2; exit 42; }}; echo '{{"ok": true}}'"#,
        back.display()
    ))
    .account("stubai", "team-a")
    .rate_limit_exit_codes(&[42]);
    let setup =
        WorkerSetup::new().slots(2).agent("printer", printer).agent("limited", limited).write(dir.path(), "worker");
    let _worker = start_worker(&coordinator.url, &setup, "w", dir.path());
    let file = dir.path().join("tasks.yaml");
    let submit = |text: &str| {
        std::fs::write(&file, text).unwrap();
        let path = file.to_str().unwrap().to_owned();
        let url = coordinator.url.clone();
        async move { hivectl_json(&url, &["submit", &path]).await }
    };
    let browser = admin_browser(&site).await;

    // A running task's page follows its output without a reload.
    let printing = submit("swarm: printing\ntasks:\n  - {agent: printer, prompt: p}\n").await;
    let task = printing["tasks"][0]["id"].as_str().unwrap().to_owned();
    eventually("the first part stored", Duration::from_secs(20), || async {
        hive_tests::postgres::count(&db.pool, "select count(*) from task_logs").await > 0
    })
    .await;
    browser.open(&format!("{site}/tasks/{task}")).await;
    let output = "document.getElementById('output').textContent";
    assert!(browser.eval(output).await.as_str().unwrap().contains("first <part>"));
    assert!(!browser.eval(output).await.as_str().unwrap().contains("second part"));
    std::fs::write(&more, "").unwrap();
    let followed = format!("{output}.includes('second part')");
    browser.wait_for("the output to follow the agent", &followed, Duration::from_secs(15)).await;
    assert_eq!(browser.eval("performance.getEntriesByType('navigation').length").await, json!(1), "no reload");
    assert_eq!(browser.eval("document.getElementById('trace').textContent").await, json!(task.replace('-', "")));

    // A swarm's page draws its dependency graph, coloured by status.
    let graph = submit(
        "swarm: graph\ntasks:\n  - {id: a, agent: nobody, prompt: a}\n  - {id: b, agent: nobody, prompt: b, depends_on: [a]}\n  - {id: c, agent: nobody, prompt: c, depends_on: [a, b]}\n",
    )
    .await;
    let swarm = graph["swarm_id"].as_str().unwrap().to_owned();
    browser.open(&format!("{site}/swarms/{swarm}")).await;
    let nodes = browser
        .eval("[...document.querySelectorAll('#graph rect.node')].map(r => r.getAttribute('class') + ' ' + r.getAttribute('x')).sort()")
        .await;
    assert_eq!(nodes, json!(["node blocked 204", "node blocked 404", "node ready 4"]), "columns by depth");
    assert_eq!(browser.eval("document.querySelectorAll('#graph path.edge').length").await, json!(3));

    // The task list filters by swarm and cancels what matches, after a count.
    browser.open(&format!("{site}/tasks?swarm={swarm}")).await;
    assert_eq!(browser.eval("document.querySelectorAll('#tasks tr[data-task]').length").await, json!(3));
    browser.eval("document.querySelector('a.bulk[href*=\"action=cancel\"]').click()").await;
    let counted = "document.getElementById('count')?.textContent === '3'";
    browser.wait_for("the count before the cancel", counted, Duration::from_secs(10)).await;
    let unfinished = || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from task_states where swarm_id = $1::uuid and status <> 'cancelled'",
        )
        .bind(&swarm)
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    assert_eq!(unfinished().await, 3, "nothing cancelled before the confirmation");
    browser.eval("document.querySelector('button[value=cancel-all]').click()").await;
    eventually("the swarm cancelled", Duration::from_secs(10), || async { unfinished().await == 0 }).await;
    // The filter by error text looks among dead (or cancelled) tasks: none has this error.
    browser.open(&format!("{site}/tasks?error=no+such+error")).await;
    assert_eq!(browser.eval("document.querySelectorAll('#tasks tr[data-task]').length").await, json!(0));
    let refused = "fetch('/tasks?status=ready&error=x').then(r => r.status)";
    assert_eq!(browser.eval(refused).await, json!(400), "error text finds dead or cancelled tasks only");

    // A provider cool-down shows on the overview and an admin clears it there.
    submit("swarm: limited\ntasks:\n  - {agent: limited, prompt: l}\n").await;
    browser.open(&format!("{site}/")).await;
    let cooling = "document.querySelector('#cooldowns')?.textContent.includes('stubai/team-a')";
    browser.wait_for("the cool-down on the overview", cooling, Duration::from_secs(20)).await;
    std::fs::write(&back, "").unwrap();
    browser.eval("document.querySelector('#cooldowns button[value=clear]').click()").await;
    eventually("the cooled task to succeed once cleared", Duration::from_secs(20), || async {
        hive_tests::postgres::count(&db.pool, "select count(*) from provider_cooldowns").await == 0
            && hive_tests::postgres::count(&db.pool, "select count(*) from task_states where status = 'succeeded'")
                .await
                == 1
    })
    .await;

    // The audit log lists both controls; locks and webhook deliveries have their pages.
    browser.open(&format!("{site}/audit")).await;
    let actions =
        browser.eval("[...document.querySelectorAll('#audit tr')].slice(1).map(tr => tr.cells[4].textContent)").await;
    let actions: Vec<String> = serde_json::from_value(actions).unwrap();
    assert!(
        actions.contains(&"CancelTasks".to_owned()) && actions.contains(&"ClearCooldown".to_owned()),
        "{actions:?}"
    );
    browser.open(&format!("{site}/locks")).await;
    assert_eq!(browser.eval("document.querySelector('main .empty').textContent").await, json!("No lock is held."));
    browser.open(&format!("{site}/webhooks")).await;
    assert_eq!(browser.eval("document.querySelector('main .empty').textContent").await, json!("No deliveries match."));
}
