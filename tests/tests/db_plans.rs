//! The rule in `db::hot_pool` — every statement on the hot path plans to an
//! index walk or primary-key lookups, whatever the parameters — checked, not
//! only stated: each hot statement, read from `coordinator/.sqlx`, is
//! prepared on a hot-pool connection over 20,000 tasks and its generic plan
//! `EXPLAIN`ed. And listing tasks by status or swarm, and what a
//! `/metrics` scrape reads, use an index (or no task table) at 1,000,000 tasks. Run with `--nocapture` to see the plans.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Instant;

use hive_coordinator::config::DatabaseConfig;
use hive_shared::config::Secret;
use hive_tests::postgres::fresh_database;
use hive_tests::statement_plans::{full_or_bitmap_scans, outline, prepared_plan, scans, statement_containing};
use sqlx::PgConnection;

/// The tables whose full or bitmap scans the hot path must never make.
const HOT_TABLES: &[&str] = &["task_states", "tasks", "attempts"];

/// Fills `n` tasks in one statement, by `i % 1000`: 2.5 % ready (a fifth
/// of them with a lock, a twenty-fifth requiring a label no worker has), 2 % running, 0.5 % cancelling, 2 % blocked,
/// 1.5 % dead, 1.5 % cancelled, the rest succeeded; in two swarms; with
/// `attempts` rows for the ended attempts when `with_attempts`.
async fn fill(conn: &mut PgConnection, n: i64, with_attempts: bool) {
    sqlx::query(
        "with swarm as (
             insert into swarms (id, name) select gen_random_uuid(), n::text from generate_series(0, 1) as n
             returning id, name::int as n
         ), planned as (
             select i, gen_random_uuid() as id, w.id as swarm_id,
                    case when i % 1000 < 25 then 'ready' when i % 1000 < 45 then 'running'
                         when i % 1000 < 50 then 'cancelling' when i % 1000 < 70 then 'blocked'
                         when i % 1000 < 85 then 'dead' when i % 1000 < 100 then 'cancelled'
                         else 'succeeded' end::task_status as status,
                    i % 1000 < 5 as locked, i % 1000 = 24 as labelled
             from generate_series(1, $1) as i join swarm w on w.n = i % 2
         ), spec as (
             insert into tasks (id, swarm_id, agent, prompt, max_attempts, locks, required_labels)
             select id, swarm_id, 'noop', 'x', 3, case when locked then array['lock-' || i] else '{}' end,
                    case when labelled then '{\"gpu\": \"a100\"}' else '{}' end::jsonb
             from planned
         ), states as (
             insert into task_states (task_id, swarm_id, priority, has_labels, has_locks, validated, status, run_agent,
                                      bytes, waiting_on, attempts, started_at, attempt_id, worker_id, lease_expires_at,
                                      attempt_deadline, attempt_started_at, finished_at, result_attempt, error,
                                      cancelled_upstream)
             select id, swarm_id, 0, labelled, locked, false, status, 'noop', 1,
                    case when status = 'blocked' then 1 else 0 end,
                    case when status in ('ready', 'blocked', 'cancelled') then 0 else 1 end,
                    case when status not in ('ready', 'blocked', 'cancelled') then now() end,
                    case when status in ('running', 'cancelling') then gen_random_uuid() end,
                    case when status in ('running', 'cancelling') then
                        ('00000000-0000-0000-0000-00000000000' || (i % 10))::uuid end,
                    case when status in ('running', 'cancelling') then now() + interval '1 minute' end,
                    case when status in ('running', 'cancelling') then now() + interval '10 minutes' end,
                    case when status in ('running', 'cancelling') then now() end,
                    case when status in ('succeeded', 'dead', 'cancelled') then now() end,
                    case when status = 'succeeded' then 1 end,
                    case when status in ('dead', 'cancelled') then 'ended' end,
                    false
             from planned
         )
         insert into attempts (id, task_id, number, worker_id, finished_at, outcome, result)
         select gen_random_uuid(), id, 1, '00000000-0000-0000-0000-000000000000', now(),
                case when status = 'succeeded' then 'succeeded' else 'failed' end::attempt_outcome,
                case when status = 'succeeded' then '{\"ok\": true}'::jsonb end
         from planned where $2 and status in ('succeeded', 'dead')",
    )
    .bind(n)
    .bind(with_attempts)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query(
        "insert into workers (id, name, hostname, agents, slots)
         select ('00000000-0000-0000-0000-00000000000' || i)::uuid, 'w', 'h', '{noop}', 8 from generate_series(0, 9) i",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::raw_sql("analyze").execute(&mut *conn).await.unwrap();
}

const UUID: &str = "'00000000-0000-0000-0000-000000000001'";

/// Each hot statement: its name, what picks it out of `.sqlx`, and arguments.
fn hot_statements() -> Vec<(&'static str, Vec<&'static str>, String)> {
    let empty = |n: usize| vec!["'{}'"; n].join(", ");
    vec![
        ("claims::claim", vec!["from fitting"], format!("{UUID}, 16, 60, 600, 5, '{{}}', 1000000, null")),
        ("claims::any_due", vec!["as \"due!\"\n"], String::new()),
        ("claims::look", vec![r#"as "due!","#, r#"as "registered!""#], UUID.to_owned()),
        ("claims::any_lock_candidates", vec![r#"as "any!""#], String::new()),
        ("claims::next_lock_candidate", vec!["l.key = any(t.locks)"], format!("{UUID}, '{{}}'")),
        ("claims::take_locks", vec!["select key, $2, $3 from unnest"], format!("'{{a}}', {UUID}, {UUID}")),
        (
            "claims::claim_locked",
            vec!["where s.task_id = $2 and s.status = 'ready'"],
            format!("{UUID}, {UUID}, {UUID}, 60, 600, 5"),
        ),
        ("outcomes::complete", vec!["), before as ("], format!("{}, {UUID}", empty(7))),
        ("outcomes::attempt_outcomes", vec![r#"a.outcome as "outcome: AttemptOutcome""#], empty(2)),
        (
            "outcomes::lock_reported",
            vec![r#"false as "lease_expired!""#, "unnest($1::uuid[], $2::uuid[])"],
            format!("{}, {UUID}", empty(2)),
        ),
        ("outcomes::apply_fates", vec!["), moved as ("], empty(15)),
        ("stages::lock_staged", vec!["where s.validated"], format!("{}, {UUID}", empty(2))),
        (
            "stages::record_attempt",
            vec!["'succeeded', $3, $4, $5, $6, $7"],
            format!("{UUID}, {UUID}, null, null, 1, 1, 1"),
        ),
        ("stages::advance", vec!["stage = case when $2 then 'validate'"], format!("{UUID}, true, '{{}}'")),
        ("stages::finish", vec!["with prior as (", "), finished as ("], format!("{UUID}, 'succeeded', null")),
        ("beats::record", vec!["), beating as ("], format!("{}, 60, '{{}}', '{{}}'", empty(10))),
        ("logs::lock_budgets (insert)", vec!["insert into task_output (task_id)"], empty(1)),
        ("logs::lock_budgets (select)", vec!["for no key update of o"], empty(1)),
        ("logs::stored_keys", vec!["join task_logs l on l.attempt_id"], empty(3)),
        ("logs::insert_chunks", vec!["insert into task_logs (task_id, attempt_id, seq, stream, data)"], empty(5)),
        ("logs::update_budgets", vec!["update task_output o set bytes"], empty(3)),
        ("locks::attempt_is_current", vec![r#"as "current!""#], format!("{UUID}, {UUID}")),
    ]
}

#[tokio::test]
async fn hot_statements_plan_index_scans_on_the_hot_pool_over_twenty_thousand_tasks() {
    let db = fresh_database().await;
    fill(&mut db.pool.acquire().await.unwrap(), 20_000, true).await;
    let config = DatabaseConfig { url: Secret::new(db.url.clone()), ..DatabaseConfig::default() };
    let hot = hive_coordinator::db::hot_pool(&config, &hive_coordinator::config::EventsConfig::default()).unwrap();
    let mut conn = hot.acquire().await.unwrap();
    for (setting, value) in [
        ("plan_cache_mode", "force_generic_plan"),
        ("enable_seqscan", "off"),
        ("enable_bitmapscan", "off"),
        ("jit", "off"),
    ] {
        let shown: String =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("show {setting}"))).fetch_one(&mut *conn).await.unwrap();
        assert_eq!(shown, value, "the hot pool sets {setting}");
    }

    let mut offending = Vec::new();
    for (name, needles, arguments) in hot_statements() {
        let plan = prepared_plan(&mut conn, &statement_containing(&needles), &arguments, "format json").await;
        let scans = scans(&plan);
        eprintln!(
            "{name}: {}",
            scans
                .iter()
                .map(|scan| format!("{} on {} {}", scan.node, scan.relation, scan.index.as_deref().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let bad = full_or_bitmap_scans(&plan, HOT_TABLES);
        if !bad.is_empty() {
            eprintln!("{name} plan:\n{}", outline(&plan));
            offending.push((name, bad));
        }
    }
    assert!(offending.is_empty(), "hot statements with full or bitmap scans: {offending:#?}");
}

#[tokio::test]
async fn listing_tasks_by_status_or_swarm_uses_an_index_at_a_million_tasks() {
    let db = fresh_database().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let started = Instant::now();
    fill(&mut conn, 1_000_000, false).await;
    eprintln!("filled and analyzed 1,000,000 tasks in {:?}", started.elapsed());

    let list = statement_containing(&["cross join lateral", "order by s.task_id desc"]);
    let swarm: String = sqlx::query_scalar("select id::text from swarms limit 1").fetch_one(&mut *conn).await.unwrap();
    let mut filters: Vec<(String, String)> =
        ["ready", "running", "cancelling", "blocked", "dead", "cancelled", "succeeded"]
            .into_iter()
            .map(|status| {
                (format!("status {status}"), format!("null, '{status}', null, null, null, 50, true, 200, null, null"))
            })
            .collect();
    filters.push(("swarm".into(), format!("null, null, '{swarm}', null, null, 50, true, 200, null, null")));
    filters.push((
        "swarm and status ready".into(),
        format!("null, 'ready', '{swarm}', null, null, 50, true, 200, null, null"),
    ));
    filters.push(("dead, by error text".into(), "null, 'dead', null, null, null, 50, true, 200, null, 'x'".into()));

    let mut offending = Vec::new();
    for (name, arguments) in filters {
        let plan = prepared_plan(&mut conn, &list, &arguments, "analyze, format json").await;
        let took = plan[0]["Execution Time"].as_f64().unwrap_or_default();
        let summary: Vec<String> = scans(&plan)
            .into_iter()
            .filter(|scan| scan.relation == "task_states" || scan.relation == "tasks")
            .map(|scan| format!("{} on {} {}", scan.node, scan.relation, scan.index.unwrap_or_default()))
            .collect();
        eprintln!("list by {name}: {took:.1} ms; {}\n{}", summary.join("; "), outline(&plan));
        let bad: Vec<_> = scans(&plan)
            .into_iter()
            .filter(|scan| scan.node == "Seq Scan" && (scan.relation == "task_states" || scan.relation == "tasks"))
            .collect();
        if !bad.is_empty() {
            offending.push((name, bad));
        }
    }
    // What a `/metrics` scrape, the dashboard's overview and a swarm's page
    // read: bounded by agents, workers and swarms, never the tasks.
    let scrape = [
        ("scrape: task totals", statement_containing(&["from task_totals t", "left join lateral"])),
        ("scrape: workers by agent", statement_containing(&["unnest(w.agents) as a (agent)", "free_slots"])),
        ("scrape: fleet", statement_containing(&["event_lag_seconds"])),
    ];
    let overview = [
        ("dashboard: newest swarms", statement_containing(&["with newest as materialized"]), "20".to_owned()),
        (
            "dashboard: one swarm's counts",
            statement_containing(&["from swarm_totals t join swarms w"]),
            format!("'{swarm}'"),
        ),
        (
            "dashboard: one swarm's times and tokens",
            statement_containing(&["from swarms w left join swarm_spans t"]),
            format!("'{swarm}'"),
        ),
        (
            "dashboard: one swarm's ready tasks no worker can take",
            statement_containing(&["grouped as (", "from grouped g"]),
            format!("'{swarm}', 30"),
        ),
        (
            "status: every swarm's ready tasks no worker can take",
            statement_containing(&["grouped as (", "from grouped g"]),
            "null, 30".to_owned(),
        ),
    ];
    let statements = scrape.into_iter().map(|(name, sql)| (name, sql, String::new())).chain(overview);
    for (name, sql, arguments) in statements {
        let plan = prepared_plan(&mut conn, &sql, &arguments, "analyze, format json").await;
        let took = plan[0]["Execution Time"].as_f64().unwrap_or_default();
        eprintln!("{name}: {took:.1} ms\n{}", outline(&plan));
        let bad = full_or_bitmap_scans(&plan, HOT_TABLES);
        if !bad.is_empty() {
            offending.push((name.to_owned(), bad));
        }
    }
    eprintln!("whole test: {:?}", started.elapsed());
    assert!(offending.is_empty(), "listings or scrape statements that scan a whole table: {offending:#?}");
}
