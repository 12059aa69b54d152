//! The worker's Prometheus metrics, served on its own HTTP listener
//! (`http.listen`, off by default; no token: bind it to loopback or a
//! network only the scrapers reach). Per agent: the agents running and
//! their resident memory (read from /proc at each scrape), how long each
//! took to start (from its attempt taking a slot to its process running:
//! scratch folder, workspace and session included), the output
//! bytes they wrote, and their stalls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use hive_shared::ids::AttemptId;
use hive_shared::metrics::{Counter, Histogram, Page};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Bucket bounds for agent start times, seconds.
const SPAWN_SECONDS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// What this worker counted, and the agents it runs now.
#[derive(Debug)]
pub(crate) struct WorkerMetrics {
    spawn: Histogram,
    output: Counter,
    stalls: Counter,
    /// Running agents: their agent name and process group, by attempt.
    running: Mutex<HashMap<AttemptId, (Arc<str>, i32)>>,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self {
            spawn: Histogram::new(
                "hive_worker_agent_spawn_seconds",
                "How long each agent took to start: from its attempt taking a slot to its process running.",
                &["agent"],
                SPAWN_SECONDS,
            ),
            output: Counter::new(
                "hive_worker_output_bytes_total",
                "Bytes agents wrote, by stream (stdout, stderr).",
                &["agent", "stream"],
            ),
            stalls: Counter::new("hive_worker_stalls_total", "Agents found stalled.", &["agent"]),
            running: Mutex::default(),
        }
    }
}

impl WorkerMetrics {
    /// An agent's process started `took` after its attempt took a slot.
    pub(crate) fn started(&self, attempt: AttemptId, agent: &Arc<str>, group: i32, took: Duration) {
        self.spawn.observe_duration(&[agent], took);
        self.running().insert(attempt, (Arc::clone(agent), group));
    }

    /// The agent of `attempt` is no longer running.
    pub(crate) fn ended(&self, attempt: AttemptId) {
        self.running().remove(&attempt);
    }

    /// An agent wrote `bytes` on `stream` (1 stdout, 2 stderr).
    pub(crate) fn output(&self, agent: &str, stream: i32, bytes: u64) {
        let stream = if stream == 2 { "stderr" } else { "stdout" };
        self.output.add(&[agent, stream], bytes);
    }

    /// An agent stalled.
    pub(crate) fn stalled(&self, agent: &str) {
        self.stalls.add(&[agent], 1);
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<AttemptId, (Arc<str>, i32)>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The page a scrape gets.
    pub(crate) async fn page(&self, agents: &[String]) -> String {
        let running: Vec<(Arc<str>, i32)> = self.running().values().cloned().collect();
        let groups = running.clone();
        let rss =
            tokio::task::spawn_blocking(move || crate::resources::rss_bytes(groups.iter().map(|(_, group)| *group)))
                .await
                .unwrap_or_default();
        let mut by_agent: HashMap<&str, (f64, f64)> = agents.iter().map(|agent| (agent.as_str(), (0.0, 0.0))).collect();
        for ((agent, _), bytes) in running.iter().zip(rss) {
            let entry = by_agent.entry(agent).or_default();
            entry.0 += 1.0;
            entry.1 += bytes as f64;
        }
        let mut rows: Vec<(&str, (f64, f64))> = by_agent.into_iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        let mut page = Page::new();
        page.gauge_rows(
            "hive_worker_running_agents",
            "Agents running now.",
            &["agent"],
            rows.iter().map(|(agent, (count, _))| (vec![*agent], *count)),
        );
        page.gauge_rows(
            "hive_worker_agent_rss_bytes",
            "Resident memory of the running agents' process groups, summed.",
            &["agent"],
            rows.iter().map(|(agent, (_, bytes))| (vec![*agent], *bytes)),
        );
        page.histogram(&self.spawn);
        page.counter(&self.output);
        page.counter(&self.stalls);
        page.finish()
    }
}

/// Serves `/metrics` on `listener` until `stop`.
pub(crate) async fn serve(
    metrics: Arc<WorkerMetrics>,
    agents: Vec<String>,
    listener: TcpListener,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let state = (metrics, Arc::new(agents));
    let router = Router::new().route("/metrics", get(scrape)).with_state(state);
    axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }).await
}

async fn scrape(State((metrics, agents)): State<(Arc<WorkerMetrics>, Arc<Vec<String>>)>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics.page(&agents).await)
}
