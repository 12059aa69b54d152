//! Agents' sessions carried between hosts through the coordinator, for
//! tasks with `session = "resume"`: the file an attempt's agent needs to
//! resume its session (for Claude Code, its transcript) is saved whenever it
//! changes while the agent runs and once more when it ends, so a retry on
//! any worker resumes where the last save left off, even after this worker
//! was killed. The attempt that resumes loads it before its agent starts.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use hive_shared::pb;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::connection;
use crate::context::Context;
use crate::outcome::Ids;

/// How often a running agent's session file is looked at.
const SAVE_EVERY: Duration = Duration::from_secs(5);
/// Longest a save or load keeps retrying an unreachable coordinator.
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// Largest session file sent; the coordinator's `sessions.max_size` is the real cap.
const MAX_STATE: u64 = 64 * 1024 * 1024;

/// A task's saved session.
#[derive(Debug)]
pub(crate) struct Saved {
    /// Its id.
    pub session_id: String,
    /// Its state.
    pub state: Vec<u8>,
}

/// What loading a task's saved session found.
#[derive(Debug)]
pub(crate) enum Loaded {
    /// A saved session.
    Found(Saved),
    /// None was saved.
    Nothing,
    /// The attempt is not the task's current one.
    LeaseLost,
    /// The coordinator could not be asked; the attempt must not start (a
    /// fresh session would overwrite the saved one).
    Failed(String),
}

/// The session saved for the task's stage.
pub(crate) async fn load(context: &Context, ids: &Ids) -> Loaded {
    let request = pb::LoadSessionRequest {
        worker_id: context.worker_id.to_string(),
        task_id: ids.task_id.clone(),
        attempt_id: ids.attempt_id.clone(),
    };
    let loaded = within_limit(context, "load session", || {
        let mut client = context.client.clone();
        let request = request.clone();
        async move { client.load_session(request).await }
    })
    .await;
    match loaded {
        Ok(loaded) if loaded.found => Loaded::Found(Saved { session_id: loaded.session_id, state: loaded.state }),
        Ok(_) => Loaded::Nothing,
        Err(status) if status.code() == tonic::Code::Aborted => Loaded::LeaseLost,
        Err(status) => Loaded::Failed(format!("could not load the saved session: {}", status.message())),
    }
}

/// Saves `file` as the task's session `session_id` whenever it changed,
/// every few seconds until `stop`, then once more if it changed since.
pub(crate) async fn keep_saving(
    context: &Context,
    ids: &Ids,
    session_id: &str,
    file: PathBuf,
    stop: CancellationToken,
) {
    let mut saved: Option<(u64, SystemTime)> = None;
    let mut ticker = tokio::time::interval(SAVE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        let last = tokio::select! {
            _ = ticker.tick() => false,
            () = stop.cancelled() => true,
        };
        if let Some(version) = changed(&file, saved).await
            && save(context, ids, session_id, &file).await != SaveOutcome::Retry
        {
            // Saved, or refused for good (too large): not sent again until it changes.
            saved = Some(version);
        }
        if last {
            return;
        }
    }
}

/// The file's length and modification time, when they differ from `saved`.
async fn changed(file: &PathBuf, saved: Option<(u64, SystemTime)>) -> Option<(u64, SystemTime)> {
    let metadata = tokio::fs::symlink_metadata(file).await.ok().filter(std::fs::Metadata::is_file)?;
    let version = (metadata.len(), metadata.modified().ok()?);
    (saved != Some(version)).then_some(version)
}

/// How one save ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SaveOutcome {
    /// The coordinator took it.
    Taken,
    /// It was refused for what it is (too large, say); sending it again would not help.
    Refused,
    /// Try again at the next look.
    Retry,
}

/// Sends the file as the task's session.
async fn save(context: &Context, ids: &Ids, session_id: &str, file: &PathBuf) -> SaveOutcome {
    let state = match read_bounded(file).await {
        Ok(state) => state,
        Err(problem) => {
            warn!(file = %file.display(), %problem, "cannot save the session");
            return SaveOutcome::Refused;
        }
    };
    let request = pb::SaveSessionRequest {
        worker_id: context.worker_id.to_string(),
        task_id: ids.task_id.clone(),
        attempt_id: ids.attempt_id.clone(),
        session_id: session_id.to_owned(),
        state,
    };
    let bytes = request.state.len();
    let saved = within_limit(context, "save session", || {
        let mut client = context.client.clone();
        let request = request.clone();
        async move { client.save_session(request).await }
    })
    .await;
    match saved {
        Ok(_) => {
            debug!(bytes, "session saved");
            SaveOutcome::Taken
        }
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            warn!(message = status.message(), "the session was refused; a retry resumes the last save that fitted");
            SaveOutcome::Refused
        }
        Err(status) => {
            info!(code = ?status.code(), message = status.message(), "the session was not saved");
            SaveOutcome::Retry
        }
    }
}

async fn read_bounded(file: &PathBuf) -> Result<Vec<u8>, String> {
    use nix::fcntl::OFlag;
    use tokio::io::AsyncReadExt;
    let mut options = tokio::fs::OpenOptions::new();
    options.read(true).custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits());
    let opened = options.open(file).await.map_err(|err| err.to_string())?;
    let mut state = Vec::new();
    opened.take(MAX_STATE + 1).read_to_end(&mut state).await.map_err(|err| err.to_string())?;
    if state.len() as u64 > MAX_STATE {
        return Err(format!("it is larger than {MAX_STATE} bytes"));
    }
    Ok(state)
}

/// Makes `call`, retrying what is worth retrying for at most [`CALL_LIMIT`]
/// and not once the worker stops at once.
async fn within_limit<T, F, Fut>(context: &Context, what: &str, call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let retried = connection::retry(what, context.retry_delay_max, &context.stop_now, call);
    tokio::time::timeout(CALL_LIMIT, retried)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded(format!("{what}: no answer within {CALL_LIMIT:?}"))))
}
