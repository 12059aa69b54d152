//! dashboard: the web dashboard over a database of `n` tasks (1,000,000 by
//! default) in 20 swarms: 2.5 % ready, 1.5 % dead, 1.5 % cancelled, the
//! rest succeeded, each ended one with its attempt. Times each page's
//! answer (request sent → last byte, over loopback HTTP/1.1, one at a
//! time): the overview, the task list filtered by status (its first page and
//! one 10,000 tasks in, or halfway in a smaller run), by swarm, by error
//! text (among dead tasks: text none has, the worst case, and text all have), a
//! swarm's page (with its graph's read), and one task. Then counts the reads of the kept
//! counts (`task_counts`, `swarm_counts`: the overview's numbers, which no
//! background loop reads while nothing changes) per second over [`IDLE`], with no page open and with one
//! overview's event stream open and nothing happening (what an idle open
//! page costs the database), and with a task submitted every second.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use hivectl::local_pg::free_port;

use crate::stack::{Binaries, Database, Hive};
use crate::stats::{emit, percentile};

/// Times each page is asked for.
const ROUNDS: usize = 20;
/// How long commits are counted for, each way.
const IDLE: Duration = Duration::from_secs(10);

/// Runs the workload and prints its line.
///
/// # Errors
/// When a part fails to start or a page does not answer 200.
pub async fn run(db: &Database, binaries: &Binaries, n: usize) -> anyhow::Result<()> {
    let (url, pool) = db.fresh("bench_dashboard").await?;
    let loading = Instant::now();
    fill(&pool, n).await?;
    let load_s = loading.elapsed().as_secs_f64();
    let dir = db.dir.join("dashboard");
    std::fs::create_dir_all(&dir)?;
    let http = format!("127.0.0.1:{}", free_port()?);
    let hive = Hive::start(binaries, &url, &dir, &[("HIVE_COORDINATOR__HTTP__LISTEN", http.as_str())]).await?;
    let cookie = crate::auth::tokens().map(|tokens| format!("hive_token={}", tokens.admin)).unwrap_or_default();
    let (swarm, middle, task): (String, String, String) = sqlx::query_as(
        "select (select id::text from swarms order by created_at desc, id limit 1),
                (select task_id::text from task_states where status = 'ready' order by task_id desc offset $1 limit 1),
                (select task_id::text from task_states where status = 'dead' limit 1)",
    )
    // 10,000 ready tasks in (at 1,000,000 tasks), or half of them in a smaller run.
    .bind(i64::try_from((n * 25 / 1000 / 2).min(10_000))?)
    .fetch_one(&pool)
    .await?;
    let pages = [
        ("overview", "/".to_owned()),
        ("tasks_ready", "/tasks?status=ready".to_owned()),
        ("tasks_ready_deep", format!("/tasks?status=ready&before={middle}")),
        ("tasks_swarm", format!("/tasks?swarm={swarm}")),
        // Error text no dead task has: the list walks every dead task to say so.
        ("tasks_error_none", "/tasks?error=no+such+error".to_owned()),
        ("tasks_dead_error", "/tasks?status=dead&error=ended".to_owned()),
        ("swarm", format!("/swarms/{swarm}")),
        ("task", format!("/tasks/{task}")),
    ];
    // The reads per second first, before the pages are timed (a backend
    // publishes what it read up to ten seconds later when it goes idle), and
    // once the load's count changes are folded, so the windows see none of it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sqlx::query_scalar::<_, bool>("select exists(select 1 from task_count_changes)").fetch_one(&pool).await? {
        if Instant::now() > deadline {
            bail!("the coordinator did not fold the loaded tasks' counts within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And once the fold's own reads are published: the count holds still.
    let mut last = reads(&pool).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = reads(&pool).await?;
        if now == last {
            break;
        }
        if Instant::now() > deadline {
            bail!("the kept counts were still being read 60 s after the coordinator started");
        }
        last = now;
    }
    let closed = reads_per_s(&pool).await?;
    let stream = open_stream(&http, "/live?counts=1", &cookie).await?;
    let open = reads_per_s(&pool).await?;
    // The same page while a task is submitted every second: the reads it causes then.
    let url = hive.url.clone();
    let submitting = tokio::spawn(async move {
        loop {
            let _ = super::submit_bulk(&url, "busy", "noop", 1).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let busy = reads_per_s(&pool).await?;
    submitting.abort();
    drop(stream);
    let mut fields = vec![("n".to_owned(), n.to_string()), ("load_s".to_owned(), format!("{load_s:.1}"))];
    for (name, path) in &pages {
        get(&http, path, &cookie).await?; // warm: connections, plans
        let mut millis = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let started = Instant::now();
            get(&http, path, &cookie).await?;
            millis.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        millis.sort_by(f64::total_cmp);
        fields.push((format!("{name}_p50_ms"), format!("{:.1}", percentile(&millis, 50.0))));
        fields.push((format!("{name}_p99_ms"), format!("{:.1}", percentile(&millis, 99.0))));
    }
    fields.push(("idle_reads_per_s_no_page".to_owned(), format!("{closed:.1}")));
    fields.push(("idle_reads_per_s_page_open".to_owned(), format!("{open:.1}")));
    fields.push(("busy_reads_per_s_page_open".to_owned(), format!("{busy:.1}")));
    let fields: Vec<(&str, String)> = fields.iter().map(|(name, value)| (name.as_str(), value.clone())).collect();
    emit("hive", "dashboard", &fields);
    hive.stop().await;
    Ok(())
}

/// `n` tasks in 20 swarms, in one statement, then `analyze`.
async fn fill(pool: &sqlx::PgPool, n: usize) -> anyhow::Result<()> {
    sqlx::query(
        "with swarm as (
             insert into swarms (id, name, created_at)
             select gen_random_uuid(), 'swarm-' || s, now() - make_interval(secs => 20 - s) from generate_series(0, 19) as s
             returning id, substr(name, 7)::int as s
         ), planned as (
             select i, gen_random_uuid() as id, w.id as swarm_id,
                    case when i % 1000 < 25 then 'ready' when i % 1000 < 40 then 'dead'
                         when i % 1000 < 55 then 'cancelled' else 'succeeded' end::task_status as status
             from generate_series(1, $1) as i join swarm w on w.s = i % 20
         ), spec as (
             insert into tasks (id, swarm_id, agent, prompt, max_attempts)
             select id, swarm_id, 'noop', 'task ' || i, 3 from planned
         ), states as (
             insert into task_states (task_id, swarm_id, priority, has_labels, has_locks, validated, status, run_agent,
                                      bytes, attempts, started_at, finished_at, result_attempt, error)
             select id, swarm_id, 0, false, false, false, status, 'noop', 1,
                    case when status in ('succeeded', 'dead') then 1 else 0 end,
                    case when status in ('succeeded', 'dead') then now() end,
                    case when status <> 'ready' then now() end,
                    case when status = 'succeeded' then 1 end,
                    case when status in ('dead', 'cancelled') then 'ended' end
             from planned
         )
         insert into attempts (id, task_id, number, worker_id, finished_at, outcome, result)
         select gen_random_uuid(), id, 1, '00000000-0000-0000-0000-000000000000', now(),
                case when status = 'succeeded' then 'succeeded' else 'failed' end::attempt_outcome,
                case when status = 'succeeded' then '{\"ok\": true}'::jsonb end
         from planned where status in ('succeeded', 'dead')",
    )
    .bind(i64::try_from(n)?)
    .execute(pool)
    .await?;
    sqlx::raw_sql("analyze").execute(pool).await?;
    Ok(())
}

/// Asks for `path` and reads the whole answer; fails unless it is 200.
async fn get(address: &str, path: &str, cookie: &str) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(address).await.with_context(|| format!("connect to {address}"))?;
    stream.write_all(request(address, path, cookie, "close").as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]).into_owned();
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(())
}

/// Opens an event stream and leaves it open (until the stream is dropped).
async fn open_stream(address: &str, path: &str, cookie: &str) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(address).await?;
    stream.write_all(request(address, path, cookie, "keep-alive").as_bytes()).await?;
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head).await?;
    if !head.starts_with(b"HTTP/1.1 200") {
        bail!("GET {path}: {}", String::from_utf8_lossy(&head));
    }
    Ok(stream)
}

fn request(address: &str, path: &str, cookie: &str, connection: &str) -> String {
    let cookie = if cookie.is_empty() { String::new() } else { format!("Cookie: {cookie}\r\n") };
    format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{cookie}Connection: {connection}\r\n\r\n")
}

/// Scans (sequential and index) of the kept counts per second over [`IDLE`].
async fn reads_per_s(pool: &sqlx::PgPool) -> anyhow::Result<f64> {
    // Backends publish their counts about once a second while busy: a
    // window ten times as long keeps that lag small, and the same for every window.
    let before = reads(pool).await?;
    tokio::time::sleep(IDLE).await;
    let after = reads(pool).await?;
    Ok((after - before) as f64 / IDLE.as_secs_f64())
}

/// Scans (sequential and index) of the kept counts so far.
async fn reads(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar::<_, i64>(
        "select coalesce(sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)), 0)::int8 from pg_stat_user_tables
         where relname in ('task_counts', 'swarm_counts')",
    )
    .fetch_one(pool)
    .await?)
}
