//! The integrity invariants of docs/data-model.md that no constraint
//! enforces (or that span tables), checked with SQL: call
//! [`assert_invariants`] at the end of any test that drove the real
//! statements.

use hive_coordinator::db;
use sqlx::{PgConnection, PgPool};

/// Each invariant by name, with a query counting the rows that break it.
pub const CHECKS: &[(&str, &str)] = &[
    (
        "every task has exactly one state row",
        "select (select count(*) from tasks t where not exists (select 1 from task_states s where s.task_id = t.id))
              + (select count(*) from task_states s where not exists (select 1 from tasks t where t.id = s.task_id))
              + (select count(*) from (select task_id from task_states group by task_id having count(*) > 1) twice)",
    ),
    (
        "the spec copies on task_states match the spec",
        "select count(*) from task_states s join tasks t on t.id = s.task_id
         where s.swarm_id <> t.swarm_id or s.priority <> t.priority
            or s.has_labels <> (t.required_labels <> '{}'::jsonb) or s.has_locks <> (cardinality(t.locks) > 0)
            or s.validated <> (t.validate_agent is not null) or s.timeout_ms is distinct from t.timeout_ms
            or s.has_keys <> (cardinality(t.concurrency_keys) > 0)",
    ),
    (
        "every attempt belongs to an existing task",
        "select count(*) from attempts a where not exists (select 1 from tasks t where t.id = a.task_id)",
    ),
    (
        "a succeeded task's result is an existing succeeded attempt",
        "select count(*) from task_states s
         where s.status = 'succeeded' and not exists (
             select 1 from attempts a
             where a.task_id = s.task_id and a.number = s.result_attempt and a.outcome = 'succeeded')",
    ),
    (
        "a task's attempt numbers are distinct",
        "select count(*) from (select task_id, number from attempts group by 1, 2 having count(*) > 1) twice",
    ),
    (
        "a task's attempt numbers are at most its attempts started",
        "select count(*) from attempts a join task_states s on s.task_id = a.task_id where a.number > s.attempts",
    ),
    (
        "a running task holds each concurrency key it names",
        "select count(*) from task_states s join tasks t on t.id = s.task_id
             cross join unnest(t.concurrency_keys) as k(key)
         where s.status in ('running', 'cancelling')
           and not exists (select 1 from concurrency_slots c cross join unnest(c.holders, c.holder_tasks) as h(attempt, task)
                           where c.key = k.key and h.task = s.task_id and h.attempt = s.attempt_id)",
    ),
    (
        "every concurrency key a task names has its row",
        "select count(*) from tasks t cross join unnest(t.concurrency_keys) as k(key)
         where not exists (select 1 from concurrency_slots c where c.key = k.key)",
    ),
    ("no attempt id appears twice", "select count(*) from (select id from attempts group by id having count(*) > 1) twice"),
    (
        "a running attempt has not also ended",
        "select count(*) from task_states s join attempts a on a.id = s.attempt_id",
    ),
    (
        "the task counts (task_totals) are the tasks counted by agent and status",
        "select count(*)
         from (select agent, status, tasks from task_totals where tasks <> 0) t
         full join (select run_agent as agent, status, count(*) as tasks from task_states group by 1, 2) s
           on s.agent = t.agent and s.status = t.status
         where t.tasks is distinct from s.tasks",
    ),
    (
        "the swarm counts (swarm_totals, swarm_agent_totals) are the tasks counted by swarm (and agent) and status",
        "select (select count(*)
                 from (select swarm_id, status, tasks from swarm_totals where tasks <> 0) t
                 full join (select swarm_id, status, count(*) as tasks from task_states group by 1, 2) s
                   on s.swarm_id = t.swarm_id and s.status = t.status
                 where t.tasks is distinct from s.tasks)
              + (select count(*)
                 from (select swarm_id, agent, status, tasks from swarm_agent_totals where tasks <> 0) t
                 full join (select swarm_id, run_agent as agent, status, count(*) as tasks
                            from task_states group by 1, 2, 3) s
                   on s.swarm_id = t.swarm_id and s.agent = t.agent and s.status = t.status
                 where t.tasks is distinct from s.tasks)",
    ),
    (
        "each swarm's token totals are its attempts' tokens (held at the largest bigint)",
        "select count(*) from swarms w
         left join (select t.swarm_id, sum(a.input_tokens) as input_tokens, sum(a.output_tokens) as output_tokens
                    from attempts a join tasks t on t.id = a.task_id group by t.swarm_id) u on u.swarm_id = w.id
         where w.input_tokens <> add_tokens(0, coalesce(u.input_tokens, 0))
            or w.output_tokens <> add_tokens(0, coalesce(u.output_tokens, 0))",
    ),
    (
        "each swarm's first start is its tasks' first, its last finish no earlier than theirs",
        "select count(*)
         from (select swarm_id, min(started_at) as started, max(finished_at) as finished
               from task_states group by swarm_id) s
         left join swarm_spans t on t.swarm_id = s.swarm_id
         where t.first_started_at is distinct from s.started
            or (s.finished is not null and (t.last_finished_at is null or t.last_finished_at < s.finished))",
    ),
    (
        "a running attempt's number is the task's attempts started",
        "select count(*) from task_states s
         where s.attempt_id is not null
           and (s.attempts < 1 or exists (select 1 from attempts a where a.task_id = s.task_id and a.number >= s.attempts))",
    ),
];

/// The invariants broken on this connection's view of the database, by
/// name, with how many rows break each.
///
/// # Panics
/// When a check's query fails.
pub async fn violations(conn: &mut PgConnection) -> Vec<(&'static str, i64)> {
    let mut broken = Vec::new();
    for &(name, sql) in CHECKS {
        let rows: i64 =
            sqlx::query_scalar(sql).fetch_one(&mut *conn).await.unwrap_or_else(|err| panic!("{name}: {err}"));
        if rows > 0 {
            broken.push((name, rows));
        }
    }
    broken
}

/// Checks every invariant of docs/data-model.md left to db tests.
///
/// # Panics
/// When one is broken (listing each, with how many rows break it), or the
/// database cannot be read.
pub async fn assert_invariants(pool: &PgPool) {
    let mut conn = pool.acquire().await.expect("a connection for the invariant checks");
    let broken = violations(&mut conn).await;
    assert!(broken.is_empty(), "data model invariants broken (rows per invariant): {broken:?}");
    assert_swarm_progress(pool).await;
}

/// Numbers every event waiting, as the sequencer would (unless a running
/// coordinator leads the numbering: then it is left to it), and checks that
/// each swarm's count of unfinished tasks kept from the events is the
/// number of its tasks unfinished.
///
/// # Panics
/// When a count is off, or a statement fails.
pub async fn assert_swarm_progress(pool: &PgPool) {
    let mut conn = pool.acquire().await.expect("a connection to number events").detach();
    if !db::events::lead(&mut conn).await.expect("try to lead the numbering") {
        return;
    }
    while db::events::number(&mut conn, 10_000).await.expect("number events").is_some() {}
    db::events::resign(&mut conn).await.expect("stop leading");
    let off: Vec<(uuid::Uuid, i64, i64)> = sqlx::query_as(
        "select w.id, coalesce(p.unfinished, 0),
                (select count(*) from task_states s where s.swarm_id = w.id and s.finished_at is null)
         from swarms w left join swarm_progress p on p.swarm_id = w.id
         where coalesce(p.unfinished, 0)
               <> (select count(*) from task_states s where s.swarm_id = w.id and s.finished_at is null)",
    )
    .fetch_all(&mut conn)
    .await
    .expect("compare the swarms' counts");
    assert!(off.is_empty(), "swarm_progress.unfinished is off (swarm, counted, unfinished tasks): {off:?}");
}
