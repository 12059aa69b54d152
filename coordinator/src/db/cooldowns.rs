//! Statements on `provider_cooldowns`: provider accounts cooling down after
//! a rate limit, their probes, and listing. The claims skip agents of
//! cooling accounts themselves, in `claims`.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// An account cooling down.
#[derive(Debug, Clone)]
pub struct CooldownRow {
    /// "provider/account".
    pub account: String,
    /// When a claim may probe it.
    pub until: DateTime<Utc>,
    /// Refusals in a row.
    pub step: i32,
    /// The last refusal.
    pub reason: String,
    /// When it began.
    pub started_at: DateTime<Utc>,
    /// Whether a probe is running.
    pub probing: bool,
}

/// An account's cool-down as a refusal finds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Current {
    /// Refusals in a row.
    pub step: i32,
    /// When a claim may probe it.
    pub until: DateTime<Utc>,
    /// Whether an attempt is probing it now.
    pub probe_running: bool,
}

/// `account`'s cool-down, locked until the transaction ends.
pub async fn lock(conn: &mut PgConnection, account: &str) -> sqlx::Result<Option<Current>> {
    let row = sqlx::query!(
        r#"
        select c.step, c.until,
               exists(select 1 from task_states s where s.task_id = c.probe_task and s.attempt_id = c.probe_attempt)
                   as "probe_running!"
        from provider_cooldowns c where c.account = $1
        for update of c
        "#,
        account
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| Current { step: row.step, until: row.until, probe_running: row.probe_running }))
}

/// The account each task's agent has on `worker` (as it registered them).
pub async fn accounts_of(
    executor: impl PgExecutor<'_>,
    worker: Uuid,
    tasks: &[Uuid],
) -> sqlx::Result<Vec<(Uuid, Option<String>)>> {
    let rows = sqlx::query!(
        r#"
        select s.task_id, w.accounts ->> s.run_agent as account
        from task_states s, workers w
        where w.id = $1 and s.task_id = any($2)
        "#,
        worker,
        tasks,
    )
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(|row| (row.task_id, row.account)).collect())
}

/// Starts or extends `account`'s cool-down to `seconds` from now at `step` (`cooldown.started`); any probe ends.
pub async fn set(conn: &mut PgConnection, account: &str, seconds: f64, step: i32, reason: &str) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        with cooling as (
            insert into provider_cooldowns (account, until, step, reason)
            values ($1, now() + make_interval(secs => $2), $3, $4)
            on conflict (account) do update
                set until = excluded.until, step = excluded.step, reason = excluded.reason,
                    probe_task = null, probe_attempt = null, probe_claiming_until = null
            returning account, until, step
        )
        insert into events (kind, details)
        select 'cooldown.started', array[jsonb_build_object('account', account, 'until', until, 'step', step,
                                                            'reason', $4::text)]
        from cooling
        "#,
        account,
        seconds,
        step,
        reason,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends the cool-downs these attempts were probing (the provider answered them; `cooldown.ended`).
pub async fn end_probed(executor: impl PgExecutor<'_>, attempts: &[Uuid]) -> sqlx::Result<u64> {
    let ended = sqlx::query_scalar!(
        r#"
        with ended as (
            delete from provider_cooldowns where probe_attempt = any($1) returning account
        ), logged as (
            insert into events (kind, details)
            select 'cooldown.ended', array_agg(jsonb_build_object('account', account, 'by', 'probe'))
            from ended
            having count(*) > 0
        )
        select count(*) as "ended!" from ended
        "#,
        attempts
    )
    .fetch_one(executor)
    .await?;
    Ok(u64::try_from(ended).unwrap_or(0))
}

/// Whether any cooling account is due for a probe.
pub async fn any_probe_due(executor: impl PgExecutor<'_>) -> sqlx::Result<bool> {
    sqlx::query_scalar!(r#"select exists(select 1 from probe_due) as "any_probe_due!""#).fetch_one(executor).await
}

/// Takes the probe of one account whose wait has passed and that `worker`
/// offers an agent of with a ready task: no other claim probes it for
/// `seconds` (nor this one, when its claim then finds nothing, so other due
/// accounts get their turn). Returns the account and the worker's agents of it.
pub async fn take_probe(
    executor: impl PgExecutor<'_>,
    worker: Uuid,
    seconds: f64,
) -> sqlx::Result<Option<(String, Vec<String>)>> {
    let row = sqlx::query!(
        r#"
        with offered as (
            select accounts from workers where id = $1
        ), chosen as (
            -- Due, and with a task this worker could claim for it now.
            select c.account from provider_cooldowns c
            where c.account in (select account from probe_due)
              and exists(
                  select 1 from jsonb_each_text((select accounts from offered)) e
                  join task_states s on s.run_agent = e.key
                  where e.value = c.account and s.status = 'ready' and not s.has_locks and s.run_after <= now())
            order by c.until
            limit 1
            for update of c skip locked
        )
        update provider_cooldowns c
        set probe_claiming_until = now() + make_interval(secs => $2)
        from chosen
        where c.account = chosen.account
        returning c.account,
                  array(select e.key from jsonb_each_text((select accounts from offered)) e
                        where e.value = c.account) as "agents!"
        "#,
        worker,
        seconds,
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|row| (row.account, row.agents)))
}

/// Records the attempt probing `account` (claimed after [`take_probe`]);
/// nothing when a refusal restarted the cool-down meanwhile.
pub async fn set_probe(executor: impl PgExecutor<'_>, account: &str, task: Uuid, attempt: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        update provider_cooldowns set probe_task = $2, probe_attempt = $3, probe_claiming_until = null
        where account = $1 and probe_claiming_until is not null
        "#,
        account,
        task,
        attempt,
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Every account cooling down, soonest to end first.
pub async fn list(executor: impl PgExecutor<'_>) -> sqlx::Result<Vec<CooldownRow>> {
    sqlx::query_as!(
        CooldownRow,
        r#"
        select c.account, c.until, c.step, c.reason, c.started_at,
               exists(select 1 from task_states s where s.task_id = c.probe_task and s.attempt_id = c.probe_attempt)
                   as "probing!"
        from provider_cooldowns c
        order by c.until, c.account
        "#,
    )
    .fetch_all(executor)
    .await
}

/// Ends `account`'s cool-down (`cooldown.ended`); whether there was one.
pub async fn clear(executor: impl PgExecutor<'_>, account: &str) -> sqlx::Result<bool> {
    let cleared = sqlx::query_scalar!(
        r#"
        with cleared as (
            delete from provider_cooldowns where account = $1 returning account
        ), logged as (
            insert into events (kind, details)
            select 'cooldown.ended', array[jsonb_build_object('account', account, 'by', 'operator')]
            from cleared
        )
        select count(*) as "cleared!" from cleared
        "#,
        account
    )
    .fetch_one(executor)
    .await?;
    Ok(cleared == 1)
}
