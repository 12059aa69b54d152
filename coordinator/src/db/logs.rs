//! Statements on `task_logs` (agent output, per attempt) and `task_output`
//! (each task's output budget).

use std::collections::HashSet;

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// A task's output budget, locked while a batch of chunks is stored.
#[derive(Debug)]
pub struct LogBudget {
    /// Task id.
    pub task_id: Uuid,
    /// Its current attempt (chunks of other attempts are refused).
    pub current_attempt: Option<Uuid>,
    /// The worker that holds (or held) that attempt.
    pub current_worker: Option<Uuid>,
    /// Bytes stored so far.
    pub log_bytes: i64,
    /// Whether the marker was written already.
    pub log_truncated: bool,
}

/// Locks and returns the output budget of the given tasks (creating it on
/// a task's first output); unknown tasks are left out.
pub async fn lock_budgets(conn: &mut PgConnection, task_ids: &[Uuid]) -> sqlx::Result<Vec<LogBudget>> {
    sqlx::query!(
        r#"
        insert into task_output (task_id)
        select s.task_id from task_states s where s.task_id = any($1)
        on conflict (task_id) do nothing
        "#,
        task_ids
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_as!(
        LogBudget,
        r#"
        select o.task_id,
               -- The running attempt, else the last one (its output may
               -- still be arriving after it ended).
               coalesce(s.attempt_id,
                        (select a.id from attempts a where a.task_id = o.task_id order by a.number desc limit 1))
                   as current_attempt,
               coalesce(s.worker_id,
                        (select a.worker_id from attempts a where a.task_id = o.task_id order by a.number desc limit 1))
                   as current_worker,
               o.bytes as log_bytes, o.truncated as log_truncated
        from task_output o join task_states s on s.task_id = o.task_id
        where o.task_id = any($1)
        order by o.task_id
        for no key update of o
        "#,
        task_ids
    )
    .fetch_all(conn)
    .await
}

/// Chunks to store, column by column.
#[derive(Debug, Default)]
pub struct NewChunks {
    /// Task ids.
    pub task_ids: Vec<Uuid>,
    /// Attempt ids.
    pub attempt_ids: Vec<Uuid>,
    /// Sequence numbers.
    pub seqs: Vec<i64>,
    /// Streams (1 stdout, 2 stderr, 3 hive).
    pub streams: Vec<i16>,
    /// Bytes.
    pub data: Vec<Vec<u8>>,
}

/// Which of the given chunks (attempt, seq and stream, column by column) are
/// stored already: resends.
pub async fn stored_keys(
    conn: &mut PgConnection,
    attempt_ids: &[Uuid],
    seqs: &[i64],
    streams: &[i16],
) -> sqlx::Result<HashSet<(Uuid, i64, i16)>> {
    let rows = sqlx::query!(
        r#"
        select l.attempt_id, l.seq, l.stream
        from unnest($1::uuid[], $2::int8[], $3::int2[]) as k(attempt_id, seq, stream)
        join task_logs l on l.attempt_id = k.attempt_id and l.seq = k.seq and l.stream = k.stream
        "#,
        attempt_ids,
        seqs,
        streams,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.attempt_id, row.seq, row.stream)).collect())
}

/// Stores chunks; a resent chunk (same attempt, seq and stream) is ignored.
pub async fn insert_chunks(conn: &mut PgConnection, chunks: &NewChunks) -> sqlx::Result<u64> {
    let result = sqlx::query!(
        r#"
        insert into task_logs (task_id, attempt_id, seq, stream, data)
        select * from unnest($1::uuid[], $2::uuid[], $3::int8[], $4::int2[], $5::bytea[])
        on conflict (attempt_id, seq, stream) do nothing
        "#,
        &chunks.task_ids,
        &chunks.attempt_ids,
        &chunks.seqs,
        &chunks.streams,
        &chunks.data,
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// Writes back the output budgets after a batch.
pub async fn update_budgets(
    conn: &mut PgConnection,
    task_ids: &[Uuid],
    log_bytes: &[i64],
    truncated: &[bool],
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        update task_output o set bytes = b.log_bytes, truncated = b.truncated
        from unnest($1::uuid[], $2::int8[], $3::bool[]) as b(task_id, log_bytes, truncated)
        where o.task_id = b.task_id
        "#,
        task_ids,
        log_bytes,
        truncated,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether a task's output hit its cap; `None` for an unknown task.
pub async fn truncated(executor: impl PgExecutor<'_>, task: Uuid) -> sqlx::Result<Option<bool>> {
    sqlx::query_scalar!(
        r#"
        select coalesce(o.truncated, false) as "truncated!"
        from task_states s left join task_output o on o.task_id = s.task_id
        where s.task_id = $1
        "#,
        task
    )
    .fetch_optional(executor)
    .await
}

/// One stored chunk.
#[derive(Debug)]
pub struct ChunkRow {
    /// Row id: the read cursor.
    pub id: i64,
    /// Attempt.
    pub attempt_id: Uuid,
    /// Sequence within the attempt.
    pub seq: i64,
    /// Stream.
    pub stream: i16,
    /// Bytes.
    pub data: Vec<u8>,
}

/// Up to `limit` chunks of a task after cursor `after`, oldest first.
pub async fn read(
    executor: impl PgExecutor<'_>,
    task: Uuid,
    attempt: Option<Uuid>,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<ChunkRow>> {
    sqlx::query_as!(
        ChunkRow,
        r#"
        select id, attempt_id, seq, stream, data from task_logs
        where task_id = $1 and ($2::uuid is null or attempt_id = $2) and id > $3
        order by id
        limit $4
        "#,
        task,
        attempt,
        after,
        limit,
    )
    .fetch_all(executor)
    .await
}
