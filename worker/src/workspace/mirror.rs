//! A repository URL's mirror on this host: a bare repository under the
//! mirror folder (`workspace.mirror_dir`, `<work_dir>/mirrors` unless set),
//! from which attempts' worktrees are made. Workers on one host that use the
//! same folder share it.
//!
//! - **Made on first use**: `git init --bare`, remote `origin` the URL,
//!   fetching `+refs/heads/*:refs/remotes/origin/*`: the upstream's branches
//!   are `origin/…` and never overwrite the task branches kept in it
//!   (`refs/heads/<branch_prefix>…`). It is made in a folder of its own and
//!   moved into place once its first fetch succeeded, so a URL that cannot
//!   be fetched leaves nothing behind. `origin/HEAD` is learned from the
//!   upstream then (and after any fetch that finds it missing).
//! - **Fetched** when the last fetch is older than `workspace.fetch_interval`
//!   (the time of the last successful fetch is that of `hive-fetched` in the
//!   mirror), and whenever a commit a task starts from is missing.
//! - **One at a time**: made and fetched under the repository's host-wide
//!   worktree lock, so workers sharing it fetch once per interval.
//! - **Errors** name the URL without its credentials.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::git::{git, worktree_lock};
use super::remote::RepoUrl;

/// File whose modification time is that of the mirror's last successful fetch.
const FETCHED: &str = "hive-fetched";
/// Longest part of a mirror's folder name taken from its URL.
const MAX_STEM: usize = 40;

/// The mirror of one URL.
#[derive(Debug)]
pub(super) struct Mirror {
    /// The bare repository (it may not exist yet).
    pub(super) dir: PathBuf,
    url: RepoUrl,
}

impl Mirror {
    /// The mirror of `url` under `root` (made when first refreshed).
    ///
    /// # Errors
    /// When `root` cannot be made.
    pub(super) async fn locate(root: &Path, url: RepoUrl) -> Result<Self, String> {
        tokio::fs::create_dir_all(root)
            .await
            .map_err(|err| format!("cannot make the mirror folder {}: {err}", root.display()))?;
        // Canonical, so the lock taken before it exists is the one taken after.
        let root = tokio::fs::canonicalize(root).await.unwrap_or_else(|_| root.to_path_buf());
        Ok(Self { dir: root.join(folder_name(&url)), url })
    }

    /// The mirror of `url` under `root`, if it has been made.
    pub(super) fn existing(root: &Path, url: &RepoUrl) -> Option<PathBuf> {
        let dir = std::fs::canonicalize(root).ok()?.join(folder_name(url));
        dir.is_dir().then_some(dir)
    }

    /// Makes the mirror if it is missing, and fetches when its last fetch
    /// is older than `interval`.
    ///
    /// # Errors
    /// When the mirror cannot be made or fetched; it names the URL.
    pub(super) async fn refresh(&self, interval: Duration) -> Result<(), String> {
        let _lock = worktree_lock(&self.dir).await?;
        if !tokio::fs::try_exists(&self.dir).await.unwrap_or(false) {
            return self.create().await;
        }
        if self.fetched_within(interval).await {
            return Ok(());
        }
        fetch_into(&self.dir, &self.url).await
    }

    /// Fetches now, however recent the last fetch.
    ///
    /// # Errors
    /// When the fetch fails; it names the URL.
    pub(super) async fn fetch(&self) -> Result<(), String> {
        let _lock = worktree_lock(&self.dir).await?;
        fetch_into(&self.dir, &self.url).await
    }

    /// The URL, without credentials.
    pub(super) fn url(&self) -> &RepoUrl {
        &self.url
    }

    async fn fetched_within(&self, interval: Duration) -> bool {
        let modified = tokio::fs::metadata(self.dir.join(FETCHED)).await.and_then(|metadata| metadata.modified());
        modified.is_ok_and(|at| SystemTime::now().duration_since(at).is_ok_and(|age| age < interval))
    }

    /// Makes the mirror beside its place, fetches it, and moves it in.
    async fn create(&self) -> Result<(), String> {
        let partial = self.dir.with_extension("partial");
        let _ = tokio::fs::remove_dir_all(&partial).await;
        let root = self.dir.parent().unwrap_or(&self.dir);
        let made = async {
            git(root, &["init", "--bare", "--quiet", &partial.to_string_lossy()]).await?;
            git(&partial, &["remote", "add", "origin", self.url.as_git_argument()]).await?;
            fetch_into(&partial, &self.url).await?;
            tokio::fs::rename(&partial, &self.dir)
                .await
                .map_err(|err| format!("cannot move the mirror of {} into place: {err}", self.url))
        }
        .await;
        if made.is_err() {
            let _ = tokio::fs::remove_dir_all(&partial).await;
        }
        made
    }
}

/// Fetches `url` into the mirror at `dir` (its `origin` set to the URL
/// first: workers sharing the mirror may hold other credentials) and
/// marks the time.
async fn fetch_into(dir: &Path, url: &RepoUrl) -> Result<(), String> {
    let cannot = |err: String| format!("cannot fetch {url}: {err}");
    git(dir, &["remote", "set-url", "origin", url.as_git_argument()]).await.map_err(cannot)?;
    git(dir, &["fetch", "--prune", "--quiet", "origin"]).await.map_err(cannot)?;
    let head = git(dir, &["rev-parse", "--verify", "--quiet", "refs/remotes/origin/HEAD"]).await;
    if head.is_err()
        && let Err(err) = git(dir, &["remote", "set-head", "origin", "--auto"]).await
    {
        // An empty upstream has no HEAD: only a task without `base` needs it, and it says so.
        tracing::debug!(url = %url, error = %err, "the upstream names no default branch");
    }
    let marker = dir.join(FETCHED);
    let marked = crate::process::blocking_io(move || {
        let file = std::fs::File::options().create(true).truncate(false).write(true).open(marker)?;
        file.set_modified(SystemTime::now())
    })
    .await;
    marked.map_err(|err| format!("cannot mark the time of the fetch of {url}: {err}"))
}

/// The mirror's folder name: the end of the URL's path, then a hash of
/// the URL without credentials (which can thus change without a new mirror).
fn folder_name(url: &RepoUrl) -> String {
    let shown = url.to_string();
    let last = shown.trim_end_matches('/').rsplit(['/', ':']).next().unwrap_or_default();
    let stem: String = last
        .trim_end_matches(".git")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(MAX_STEM)
        .collect();
    let hash = super::git::short_hash(shown.as_bytes());
    let stem = stem.trim_start_matches('.');
    format!("{}-{hash}.git", if stem.is_empty() { "repository" } else { stem })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::remote::{Source, parse};

    fn url(text: &str) -> RepoUrl {
        match parse(text) {
            Ok(Source::Url(url)) => url,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn a_mirror_is_named_after_its_url_without_credentials() {
        let plain = folder_name(&url("https://example.com/org/app.git"));
        assert!(plain.starts_with("app-") && plain.ends_with(".git"), "{plain}");
        assert_eq!(folder_name(&url("https://user:secret@example.com/org/app.git")), plain);
        assert_ne!(folder_name(&url("https://example.com/other/app.git")), plain);
        assert!(folder_name(&url("git@example.com:org/../..")).starts_with("repository-"), "never `..`");
    }
}
