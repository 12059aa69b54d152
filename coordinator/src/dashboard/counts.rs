//! The overview's numbers, pushed to every open overview over its event
//! stream. One loop per coordinator reads them (the statements `/metrics`
//! runs, none over the tasks) at most once a second, and only while the
//! event log has moved and some page follows them: open pages cost the
//! database nothing each, and an idle dashboard nothing at all.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::db;
use crate::events::tail::Tail;

/// How often the numbers are read at most.
const EVERY: Duration = Duration::from_secs(1);

/// The newest numbers, as the JSON the overview's script applies.
#[derive(Debug)]
pub(crate) struct Counts {
    latest: watch::Sender<Option<Arc<String>>>,
}

impl Default for Counts {
    fn default() -> Self {
        Self { latest: watch::channel(None).0 }
    }
}

impl Counts {
    /// Follows the numbers from now on.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Arc<String>>> {
        self.latest.subscribe()
    }
}

/// Reads the numbers when the log has moved and someone follows them, until `cancel`.
pub(crate) async fn run(pool: PgPool, tail: Arc<Tail>, counts: Arc<Counts>, cancel: CancellationToken) {
    let mut read_at = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = cancel.cancelled() => return,
        }
        if counts.latest.receiver_count() == 0 {
            read_at = None;
            continue;
        }
        let head = tail.newest();
        if read_at == Some(head) {
            continue;
        }
        match read(&pool).await {
            Ok(numbers) => {
                counts.latest.send_replace(Some(Arc::new(numbers.to_string())));
                read_at = Some(head);
            }
            Err(err) => debug!(error = %err, "could not read the overview's numbers"),
        }
    }
}

/// Tasks by agent and status (with each agent's oldest ready task, in
/// seconds), the overview's swarms by status, and the workers.
async fn read(pool: &PgPool) -> sqlx::Result<Value> {
    let (totals, fleet, newest) = tokio::try_join!(
        db::metrics::task_totals(pool),
        db::metrics::fleet(pool),
        db::progress::newest(pool, super::pages::SWARMS),
    )?;
    let mut swarms: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for count in newest {
        swarms.entry(count.swarm_id.to_string()).or_default().insert(count.status.to_string(), count.count);
    }
    let mut agents: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for total in totals {
        let agent = agents.entry(total.agent).or_default();
        if let Some(age) = total.oldest_ready_seconds {
            agent.insert("oldest_ready_s".into(), json!(age));
        }
        agent.insert(total.status, json!(total.tasks));
    }
    Ok(json!({
        "agents": agents,
        "swarms": swarms,
        "workers": { "live": fleet.live_workers, "draining": fleet.draining_workers },
    }))
}
