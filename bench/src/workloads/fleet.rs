//! fleet: many simulated workers against one coordinator. Each registers,
//! claims [`HELD`] tasks and holds them (as a worker whose agents run for a
//! long time), keeps a heartbeat stream open (a beat every `interval`,
//! listing the attempts it holds: each beat extends their leases) and a
//! long-poll Claim waiting (nothing more is queued), both begun at a time of
//! its own within the first interval. Measures from one interval after
//! every worker's first beat was answered: the coordinator's CPU (share of
//! one core), PostgreSQL commits and WAL bytes per second, and heartbeat
//! round trips (beat sent → reply received).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hive_shared::client::AuthChannel;
use hive_shared::convert::duration;
use hive_shared::ids::WorkerId;
use hive_shared::pb;
use hive_shared::pb::worker_service_client::WorkerServiceClient;
use tokio::sync::{Barrier, Mutex, Notify};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{Wal, submit_bulk};
use crate::stack::{Binaries, Database, Hive};
use crate::stats::{emit, percentile};

/// Channels the simulated workers share (HTTP/2 connections).
const CHANNELS: usize = 16;

/// Tasks each simulated worker claims and holds (its slots, all busy).
const HELD: u32 = 4;

/// Runs the workload and prints its line.
///
/// # Errors
/// When a part fails to start.
pub async fn run(
    db: &Database,
    binaries: &Binaries,
    workers: usize,
    interval: Duration,
    measure: Duration,
) -> anyhow::Result<()> {
    let (url, pool) = db.fresh("bench_fleet").await?;
    let dir = db.dir.join("fleet");
    std::fs::create_dir_all(&dir)?;
    let interval_text = humantime::format_duration(interval).to_string();
    let ttl_text = humantime::format_duration(interval * 6).to_string();
    let env = [
        ("HIVE_COORDINATOR__LEASES__HEARTBEAT_INTERVAL", interval_text.as_str()),
        ("HIVE_COORDINATOR__LEASES__TTL", ttl_text.as_str()),
    ];
    let hive = Hive::start(binaries, &url, &dir, &env).await?;
    submit_bulk(&hive.url, "fleet", "noop", workers * HELD as usize).await?;
    let mut channels = Vec::with_capacity(CHANNELS);
    for _ in 0..CHANNELS {
        channels.push(crate::auth::worker(&hive.url).connect().await?);
    }
    let round_trips: Arc<Mutex<Vec<f64>>> = Arc::default();
    let stop = CancellationToken::new();
    let mut fleet = JoinSet::new();
    let claimed = Arc::new(Barrier::new(workers));
    let beating = Arc::new(CountDown::new(workers));
    for index in 0..workers {
        let client = WorkerServiceClient::new(channels[index % CHANNELS].clone());
        let stagger = interval.mul_f64(index as f64 / workers as f64);
        let gates = Gates { claimed: Arc::clone(&claimed), beating: Arc::clone(&beating) };
        fleet.spawn(simulate(client, interval, stagger, Arc::clone(&round_trips), gates, stop.clone()));
    }
    // Measured from when every worker has had a beat answered, one interval
    // on: the fleet as it runs, not as it joins.
    beating.done.notified().await;
    tokio::time::sleep(interval).await;
    round_trips.lock().await.clear();
    let (cpu_before, commits_before, wal) =
        (cpu_ticks(hive.coordinator_pid()), commits(&pool).await?, Wal::read(&pool).await?);
    let measuring = Instant::now();
    tokio::time::sleep(measure).await;
    let seconds = measuring.elapsed().as_secs_f64();
    let (cpu_after, commits_after) = (cpu_ticks(hive.coordinator_pid()), commits(&pool).await?);
    let wal_bytes = wal.bytes_since(&pool).await?;
    let held: i64 =
        sqlx::query_scalar("select count(*) from task_states where lease_expires_at > now()").fetch_one(&pool).await?;
    stop.cancel();
    fleet.shutdown().await;

    let mut millis = round_trips.lock().await.clone();
    millis.sort_by(f64::total_cmp);
    let ticks_per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    let cpu_percent = (cpu_after - cpu_before) as f64 / ticks_per_s / seconds * 100.0;
    emit(
        "hive",
        "fleet",
        &[
            ("workers", workers.to_string()),
            ("interval_s", format!("{}", interval.as_secs_f64())),
            ("beats", millis.len().to_string()),
            ("coordinator_cpu_percent", format!("{cpu_percent:.1}")),
            ("leases_held", held.to_string()),
            ("pg_commits_per_s", format!("{:.1}", (commits_after - commits_before) as f64 / seconds)),
            ("pg_wal_bytes_per_s", format!("{:.0}", wal_bytes / seconds)),
            ("beat_rtt_p50_ms", format!("{:.2}", percentile(&millis, 50.0))),
            ("beat_rtt_p99_ms", format!("{:.2}", percentile(&millis, 99.0))),
            ("seconds", format!("{seconds:.1}")),
        ],
    );
    db.print_totals(&pool, "fleet").await?;
    hive.stop().await;
    Ok(())
}

/// Where the simulated workers wait for each other.
struct Gates {
    /// Passed once every worker has claimed its share (or failed to).
    claimed: Arc<Barrier>,
    /// Counts the workers down to their first answered beat.
    beating: Arc<CountDown>,
}

/// Counts workers down to zero, then notifies.
struct CountDown {
    left: AtomicUsize,
    done: Notify,
}

impl CountDown {
    fn new(workers: usize) -> Self {
        Self { left: AtomicUsize::new(workers), done: Notify::new() }
    }

    fn arrive(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

async fn simulate(
    mut client: WorkerServiceClient<AuthChannel>,
    interval: Duration,
    stagger: Duration,
    round_trips: Arc<Mutex<Vec<f64>>>,
    gates: Gates,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let worker_id = WorkerId::new().to_string();
    let joined = join(&mut client, &worker_id).await;
    // A long-poll started before every worker holds its share would take
    // tasks meant for the others.
    gates.claimed.wait().await;
    // Workers start at their own time, as a real fleet's do.
    tokio::time::sleep(stagger).await;
    let mut arrival = Some(&*gates.beating);
    let beaten = beat(client, &worker_id, joined, interval, &round_trips, &mut arrival, &stop).await;
    if let Some(beating) = arrival {
        // Ended before its first beat was answered: counted all the same.
        beating.arrive();
    }
    beaten
}

/// Keeps an idle long-poll waiting and beats every `interval` until `stop`;
/// arrives at `arrival` when its first beat is answered.
async fn beat(
    client: WorkerServiceClient<AuthChannel>,
    worker_id: &str,
    held: anyhow::Result<Vec<String>>,
    interval: Duration,
    round_trips: &Mutex<Vec<f64>>,
    arrival: &mut Option<&CountDown>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let held = held?;
    // An idle long-poll, as a real worker with free slots keeps one.
    let mut claimer = client.clone();
    let claim_worker = worker_id.to_owned();
    let claiming = tokio::spawn(async move {
        loop {
            let request = pb::ClaimRequest {
                worker_id: claim_worker.clone(),
                max_tasks: HELD,
                wait: Some(duration(Duration::from_secs(20))),
                agents: vec![],
            };
            if claimer.claim(request).await.is_err() {
                return;
            }
        }
    });
    let _claiming = AbortOnDrop(claiming);
    let (beats, outbound) = tokio::sync::mpsc::channel(2);
    let mut client = client;
    let mut replies = client.heartbeat(ReceiverStream::new(outbound)).await?.into_inner();
    loop {
        let beat = pb::HeartbeatRequest {
            worker_id: worker_id.to_owned(),
            attempt_ids: held.clone(),
            free_slots: 0,
            ..Default::default()
        };
        let sent = Instant::now();
        if beats.send(beat).await.is_err() || replies.message().await?.is_none() {
            break;
        }
        round_trips.lock().await.push(sent.elapsed().as_secs_f64() * 1000.0);
        if let Some(beating) = arrival.take() {
            beating.arrive();
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => break,
        }
    }
    Ok(())
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Registers a simulated worker and claims its [`HELD`] tasks; their attempt ids.
async fn join(client: &mut WorkerServiceClient<AuthChannel>, worker_id: &str) -> anyhow::Result<Vec<String>> {
    let registration = pb::RegisterRequest {
        worker_id: worker_id.to_owned(),
        name: "sim".into(),
        agents: vec!["noop".into()],
        slots: HELD,
        ..Default::default()
    };
    client.register(registration).await?;
    let request = pb::ClaimRequest {
        worker_id: worker_id.to_owned(),
        max_tasks: HELD,
        wait: Some(duration(Duration::ZERO)),
        agents: vec![],
    };
    Ok(client.claim(request).await?.into_inner().assignments.into_iter().map(|task| task.attempt_id).collect())
}

/// CPU ticks (user + system) the process used so far.
fn cpu_ticks(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Commits in the whole cluster so far.
async fn commits(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("select sum(xact_commit)::int8 from pg_stat_database").fetch_one(pool).await?)
}
