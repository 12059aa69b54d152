//! Swarm progress: counts by status, usage, times and budget, and why ready
//! tasks are not running when something stands in the way (no live worker
//! offers their agent and labels; the swarm's budget is spent).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::audit::{self, Action, Entry};
use crate::auth::Caller;
use crate::db;
use crate::error::{Error, Result};
use crate::status::TaskStatus;

/// One swarm's progress.
#[derive(Debug)]
pub(crate) struct Progress {
    /// Swarm id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Submitted.
    pub created_at: DateTime<Utc>,
    /// Tasks per status.
    pub counts: Vec<(TaskStatus, i64)>,
    /// Totals and budget.
    pub summary: Option<db::progress::Summary>,
    /// Why ready tasks wait, for people.
    pub waiting: Vec<String>,
}

/// Progress of one swarm, or of all.
///
/// # Errors
/// Database failures.
pub(crate) async fn of(pool: &PgPool, swarm: Option<Uuid>, live: std::time::Duration) -> Result<Vec<Progress>> {
    let counts = db::progress::counts(pool, swarm).await?;
    let mut summaries: HashMap<Uuid, db::progress::Summary> =
        db::progress::summaries(pool, swarm).await?.into_iter().map(|summary| (summary.id, summary)).collect();
    let mut unserved: HashMap<Uuid, Vec<String>> = HashMap::new();
    for group in db::progress::unserved(pool, swarm, db::seconds(live)).await? {
        let labels = label_text(&group.labels);
        let with = if labels.is_empty() { String::new() } else { format!(" with labels {labels}") };
        unserved.entry(group.swarm_id).or_default().push(format!(
            "waiting: no live worker offers agent {}{with}, or each that does reports it unavailable ({} task(s))",
            group.agent, group.count
        ));
    }
    let mut progress: Vec<Progress> = Vec::new();
    for row in counts {
        if progress.last().is_none_or(|last| last.id != row.swarm_id) {
            let summary = summaries.remove(&row.swarm_id);
            let mut waiting = unserved.remove(&row.swarm_id).unwrap_or_default();
            if let Some(summary) = &summary
                && let Some(budget) = summary.budget
                && summary.spent >= budget
            {
                waiting.push(format!(
                    "held: the budget of {budget:.2} is spent ({:.2}); raise it to go on",
                    summary.spent
                ));
            }
            progress.push(Progress {
                id: row.swarm_id,
                name: row.name.clone(),
                created_at: row.created_at,
                counts: Vec::new(),
                summary,
                waiting,
            });
        }
        if let Some(last) = progress.last_mut() {
            last.counts.push((row.status, row.count));
        }
    }
    Ok(progress)
}

/// Sets a swarm's budget (`None` clears it) and wakes claims, since raising
/// it releases held tasks; returns (budget, spent). Audited as `SetSwarmBudget`.
///
/// # Errors
/// [`Error::InvalidArgument`] for a bad amount; [`Error::SwarmNotFound`].
pub(crate) async fn set_budget(
    pool: &PgPool,
    caller: &Caller,
    swarm: Uuid,
    budget: Option<f64>,
) -> Result<(Option<f64>, f64)> {
    if budget.is_some_and(|amount| !(amount.is_finite() && amount > 0.0)) {
        return Err(Error::invalid("budget", "must be a positive amount (or 0 to clear it)"));
    }
    let mut tx = pool.begin().await?;
    let set = db::swarms::set_budget(&mut *tx, swarm, budget).await?;
    let Some(set) = set else { return Err(Error::SwarmNotFound(swarm)) };
    db::notifications::notify_ready(&mut *tx).await?;
    let target = json!({ "swarm_id": swarm.to_string(), "budget": budget });
    audit::record(&mut tx, &Entry::done(caller, Action::SetSwarmBudget, target, 1)).await?;
    tx.commit().await?;
    Ok(set)
}

/// `k=v,k2=v2` for a JSON object of labels.
pub(crate) fn label_text(labels: &serde_json::Value) -> String {
    labels
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}
