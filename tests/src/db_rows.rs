//! Rows for tests of the coordinator's statements (`hive_coordinator::db`),
//! called one by one on a fresh database: swarms, workers and tasks as the
//! submission statements write them, the claim sequences as the scheduler
//! runs them, reports and fates as the use-cases build them, and a task's
//! full state row for before/after comparisons.

use chrono::{DateTime, Utc};
use hive_coordinator::db;
use hive_coordinator::db::claims::{ClaimScope, ClaimTiming, ClaimedTask};
use hive_coordinator::db::outcomes::{Fates, Reports};
use hive_coordinator::status::{AttemptOutcome, TaskStatus};
use serde_json::{Value as Json, json};
use sqlx::PgPool;
use uuid::Uuid;

/// One task to submit; [`Default`] is a ready `noop` task with no labels,
/// locks, validator or dependencies.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The builder's agent.
    pub agent: &'static str,
    /// Its prompt.
    pub prompt: String,
    /// Priority.
    pub priority: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Per-attempt limit.
    pub timeout_ms: Option<i64>,
    /// Required worker labels (a JSON object).
    pub labels: Json,
    /// Locks it takes.
    pub locks: Vec<&'static str>,
    /// Validator agent.
    pub validate_agent: Option<&'static str>,
    /// Builder runs allowed.
    pub max_rounds: i32,
    /// Earliest start.
    pub run_after: Option<DateTime<Utc>>,
    /// First status.
    pub status: TaskStatus,
    /// Dependencies to wait for (with `status` blocked).
    pub waiting_on: i32,
    /// Concurrency keys with their limits.
    pub concurrency: Vec<(&'static str, i32)>,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            agent: "noop",
            prompt: "x".into(),
            priority: 0,
            max_attempts: 3,
            timeout_ms: None,
            labels: json!({}),
            locks: Vec::new(),
            validate_agent: None,
            max_rounds: 1,
            run_after: None,
            status: TaskStatus::Ready,
            concurrency: Vec::new(),
            waiting_on: 0,
        }
    }
}

/// Records a swarm with an optional budget; returns its id.
///
/// # Panics
/// When the statement fails.
pub async fn swarm(pool: &PgPool, budget: Option<f64>) -> Uuid {
    let id = Uuid::now_v7();
    let mut conn = pool.acquire().await.expect("acquire");
    db::swarms::insert(&mut conn, id, "db-test", None, budget, None).await.expect("swarm");
    id
}

/// Submits `specs` to `swarm` through `db::tasks::insert_tasks` (ids in
/// submission order, ascending), with `deps` as (dependent, upstream) index
/// pairs recorded through `db::graph::insert_deps`; returns the ids.
///
/// # Panics
/// When a statement fails.
pub async fn submit_with_deps(pool: &PgPool, swarm: Uuid, specs: &[Spec], deps: &[(usize, usize)]) -> Vec<Uuid> {
    let ids: Vec<Uuid> = specs.iter().map(|_| Uuid::now_v7()).collect();
    let tasks = db::tasks::NewTasks {
        ids: ids.clone(),
        keys: specs.iter().map(|_| None).collect(),
        agents: specs.iter().map(|spec| spec.agent.to_owned()).collect(),
        prompts: specs.iter().map(|spec| spec.prompt.clone()).collect(),
        inputs: specs.iter().map(|_| None).collect(),
        priorities: specs.iter().map(|spec| spec.priority).collect(),
        max_attempts: specs.iter().map(|spec| spec.max_attempts).collect(),
        timeouts_ms: specs.iter().map(|spec| spec.timeout_ms).collect(),
        backoff_initial_ms: specs.iter().map(|_| None).collect(),
        backoff_max_ms: specs.iter().map(|_| None).collect(),
        backoff_multipliers: specs.iter().map(|_| None).collect(),
        run_after: specs.iter().map(|spec| spec.run_after).collect(),
        statuses: specs.iter().map(|spec| spec.status).collect(),
        waiting_on: specs.iter().map(|spec| spec.waiting_on).collect(),
        labels: specs.iter().map(|spec| spec.labels.clone()).collect(),
        locks: specs.iter().map(|spec| json!(spec.locks)).collect(),
        validate_agents: specs.iter().map(|spec| spec.validate_agent.map(str::to_owned)).collect(),
        validate_prompts: specs.iter().map(|spec| spec.validate_agent.map(|_| "check".to_owned())).collect(),
        max_rounds: specs.iter().map(|spec| spec.max_rounds).collect(),
        resume_sessions: specs.iter().map(|_| false).collect(),
        fallback_agents: specs.iter().map(|_| json!([])).collect(),
        places: specs
            .iter()
            .scan(std::collections::HashMap::new(), |placed, spec| {
                let place = placed.entry(spec.priority).or_insert(0_i64);
                *place += 1;
                Some(*place)
            })
            .collect(),
        concurrency_keys: specs
            .iter()
            .map(|spec| json!(spec.concurrency.iter().map(|(key, _)| *key).collect::<Vec<_>>()))
            .collect(),
    };
    let mut tx = pool.begin().await.expect("begin");
    let limits: std::collections::BTreeMap<String, i32> =
        specs.iter().flat_map(|spec| &spec.concurrency).map(|(key, limit)| ((*key).to_owned(), *limit)).collect();
    let (keys, limits): (Vec<String>, Vec<i32>) = limits.into_iter().unzip();
    if !keys.is_empty() {
        db::tasks::set_key_limits(&mut tx, &keys, &limits, true).await.expect("set key limits");
    }
    let inserted = db::tasks::insert_tasks(&mut tx, swarm, &tasks).await.expect("insert tasks");
    assert_eq!(inserted, specs.len() as u64, "every task inserted");
    let (dependents, upstream): (Vec<Uuid>, Vec<Uuid>) = deps.iter().map(|&(task, on)| (ids[task], ids[on])).unzip();
    db::graph::insert_deps(&mut tx, &dependents, &upstream).await.expect("insert deps");
    tx.commit().await.expect("commit the submission");
    ids
}

/// Submits `specs` with no dependencies (see [`submit_with_deps`]).
///
/// # Panics
/// When a statement fails.
pub async fn submit(pool: &PgPool, swarm: Uuid, specs: &[Spec]) -> Vec<Uuid> {
    submit_with_deps(pool, swarm, specs, &[]).await
}

/// Registers a worker offering `agents` with `labels`; returns its id.
///
/// # Panics
/// When the statement fails.
pub async fn worker(pool: &PgPool, agents: &[&str], labels: Json) -> Uuid {
    let id = Uuid::now_v7();
    let agents: Vec<String> = agents.iter().map(|agent| (*agent).to_owned()).collect();
    let registration = db::workers::Registration {
        id,
        name: "db-test",
        hostname: "localhost",
        agents: &agents,
        slots: 64,
        version: "test",
        labels,
        accounts: serde_json::json!({}),
        registered_by: None,
    };
    db::workers::upsert(pool, &registration).await.expect("register");
    id
}

/// A one-minute lease; a ten-minute runtime for tasks without a timeout.
pub const TIMING: ClaimTiming =
    ClaimTiming { lease_seconds: 60.0, max_runtime_seconds: 600.0, deadline_grace_seconds: 5.0 };

/// A claim scope for `worker`: all its agents, no byte budget to speak of.
pub fn scope(worker: Uuid) -> ClaimScope<'static> {
    ClaimScope { worker, agents: &[], max_bytes: i64::MAX, probe_account: None }
}

/// Claims up to `limit` tasks without locks for `worker` (`db::claims::claim`).
///
/// # Panics
/// When the statement fails.
pub async fn claim(pool: &PgPool, worker: Uuid, limit: i64) -> Vec<ClaimedTask> {
    db::claims::claim(pool, scope(worker), limit, TIMING).await.expect("claim")
}

/// Claims one task that takes locks as the scheduler does: the next
/// candidate, its locks and its claim in one transaction.
///
/// # Panics
/// When a statement fails.
pub async fn claim_locked(pool: &PgPool, scope: ClaimScope<'_>) -> Option<ClaimedTask> {
    let mut tx = pool.begin().await.expect("begin");
    let candidate = db::claims::next_lock_candidate(&mut tx, scope).await.expect("next lock candidate")?;
    let attempt = Uuid::new_v4();
    let taken = db::claims::take_locks(&mut tx, &candidate.locks, candidate.id, attempt).await.expect("take locks");
    assert_eq!(taken, candidate.locks.len() as u64, "every lock of the candidate was free");
    let claimed =
        db::claims::claim_locked(&mut tx, scope.worker, candidate.id, attempt, TIMING).await.expect("claim locked");
    tx.commit().await.expect("commit the claim");
    claimed
}

/// Successful reports of (task, attempt) pairs, each with `{"ok": task}` as
/// its result and `cost` as its cost.
pub fn reports(attempts: &[(Uuid, Uuid)], cost: Option<f64>) -> Reports {
    Reports {
        task_ids: attempts.iter().map(|&(task, _)| task).collect(),
        attempt_ids: attempts.iter().map(|&(_, attempt)| attempt).collect(),
        results: attempts.iter().map(|&(task, _)| json!({ "ok": task })).collect(),
        session_ids: attempts.iter().map(|_| None).collect(),
        input_tokens: attempts.iter().map(|_| Some(10)).collect(),
        output_tokens: attempts.iter().map(|_| Some(20)).collect(),
        costs: attempts.iter().map(|_| cost).collect(),
        worker_id: None,
    }
}

/// Completes one attempt with `db::outcomes::complete`; returns the attempts recorded.
///
/// # Panics
/// When the statement fails.
pub async fn complete(pool: &PgPool, task: Uuid, attempt: Uuid) -> Vec<Uuid> {
    db::outcomes::complete(pool, &reports(&[(task, attempt)], None)).await.expect("complete").recorded
}

/// What becomes of one stopped attempt.
#[derive(Debug, Clone, Copy)]
pub struct Fate {
    /// The task's next status.
    pub status: TaskStatus,
    /// Whether it counts as a failure.
    pub counted: bool,
    /// Retry delay, seconds.
    pub delay: f64,
    /// The attempt's outcome.
    pub outcome: AttemptOutcome,
}

impl Fate {
    /// A counted failure, retried at once.
    pub const RETRY: Self =
        Self { status: TaskStatus::Ready, counted: true, delay: 0.0, outcome: AttemptOutcome::Failed };
    /// A counted failure, the last.
    pub const DIE: Self = Self { status: TaskStatus::Dead, ..Self::RETRY };
    /// Handed back unfinished: ready again, not a failure.
    pub const HAND_BACK: Self = Self { counted: false, outcome: AttemptOutcome::Released, ..Self::RETRY };
}

/// Locks the reported attempt (`db::outcomes::lock_reported`) and applies
/// `fate` to what it locked (`db::outcomes::apply_fates`), in one
/// transaction as the use-case does; returns how many attempts were locked.
///
/// # Panics
/// When a statement fails.
pub async fn end_attempt(pool: &PgPool, task: Uuid, attempt: Uuid, fate: Fate) -> usize {
    let mut tx = pool.begin().await.expect("begin");
    let locked = db::outcomes::lock_reported(&mut tx, &[task], &[attempt], None).await.expect("lock reported");
    let fates = fates(locked.iter().map(|stopped| (stopped.id, stopped.attempt_id)), fate);
    db::outcomes::apply_fates(&mut tx, &fates).await.expect("apply fates");
    tx.commit().await.expect("commit the fates");
    locked.len()
}

/// The same fate for every (task, attempt) pair, column by column.
pub fn fates(attempts: impl Iterator<Item = (Uuid, Uuid)>, fate: Fate) -> Fates {
    let (task_ids, attempt_ids): (Vec<Uuid>, Vec<Uuid>) = attempts.unzip();
    let n = task_ids.len();
    Fates {
        task_ids,
        attempt_ids,
        statuses: vec![fate.status; n],
        counted: vec![fate.counted; n],
        delays: vec![fate.delay; n],
        errors: vec![format!("{:?}", fate.outcome); n],
        exit_codes: vec![Some(1); n],
        signals: vec![None; n],
        outcomes: vec![fate.outcome; n],
        session_ids: vec![None; n],
        input_tokens: vec![Some(3); n],
        output_tokens: vec![Some(4); n],
        costs: vec![Some(0.5); n],
        refused: vec![false; n],
        next_agents: vec![None; n],
    }
}

/// A task's whole state row, as JSON, for before/after comparisons.
///
/// # Panics
/// When the task has no state row.
pub async fn state_row(pool: &PgPool, task: Uuid) -> Json {
    sqlx::query_scalar("select to_jsonb(s) from task_states s where s.task_id = $1")
        .bind(task)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|err| panic!("state row of {task}: {err}"))
}

/// Every row the statements write for a task, as JSON: its state row, its
/// attempts, its locks, its output budget, its saved session and its swarm's spending.
///
/// # Panics
/// When the query fails.
pub async fn everything_of(pool: &PgPool, task: Uuid) -> Json {
    sqlx::query_scalar(
        "select jsonb_build_object(
             'state', (select to_jsonb(s) from task_states s where s.task_id = $1),
             'attempts', (select jsonb_agg(to_jsonb(a) order by a.number) from attempts a where a.task_id = $1),
             'locks', (select jsonb_agg(to_jsonb(l) order by l.key) from task_locks l where l.task_id = $1),
             'output', (select to_jsonb(o) from task_output o where o.task_id = $1),
             'session', (select to_jsonb(ss) from task_sessions ss where ss.task_id = $1),
             'spent', (select w.spent from swarms w join tasks t on t.swarm_id = w.id where t.id = $1))",
    )
    .bind(task)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|err| panic!("rows of {task}: {err}"))
}

/// A task's status.
///
/// # Panics
/// When the task does not exist.
pub async fn status(pool: &PgPool, task: Uuid) -> TaskStatus {
    db::tasks::status_of(pool, task).await.expect("status").expect("the task exists")
}
