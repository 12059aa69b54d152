//! The repository an attempt's worktree comes from, and the commits a task
//! starts from looked up in it.

use std::path::PathBuf;

use hive_shared::convert::JsonObject;

use super::Unprepared;
use super::git::git;
use crate::config::WorkspaceConfig;

/// The repository worktrees are made from.
#[derive(Debug)]
pub(super) struct Repository {
    /// The repository.
    pub(super) dir: PathBuf,
}

/// A dependency's change: the commit its result names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Dependency {
    /// The dependency's key among the task's inputs.
    pub(super) key: String,
    pub(super) commit: String,
}

impl Repository {
    /// The repository of `config`.
    pub(super) fn open(config: &WorkspaceConfig) -> Self {
        Self { dir: PathBuf::from(&config.repo) }
    }

    /// The commit `base` names (`HEAD` without one).
    ///
    /// # Errors
    /// The worker's: `base` names no commit.
    pub(super) async fn base(&self, base: Option<&str>) -> Result<String, Unprepared> {
        let name = base.unwrap_or("HEAD");
        // As a commit: a tag names its commit, and `HEAD` is never a worktree's own.
        match git(&self.dir, &["rev-parse", "--verify", "--quiet", &format!("{name}^{{commit}}")]).await {
            Ok(commit) => Ok(commit.trim().to_owned()),
            Err(_) => Err(Unprepared::Worker(format!("workspace.base: `{name}` names no commit in {}", self.shown()))),
        }
    }

    /// Checks that every dependency's commit is here.
    ///
    /// # Errors
    /// The worker's (another host may have the commit): a commit that is not here.
    pub(super) async fn check_dependencies(&self, dependencies: &[Dependency]) -> Result<(), Unprepared> {
        let Some(missing) = self.first_missing(dependencies).await else { return Ok(()) };
        Err(Unprepared::Worker(format!(
            "dependency `{}` names commit `{}`, which is not in {} (run dependent tasks on the host of their \
             dependencies, or share the repository)",
            missing.key,
            missing.commit,
            self.shown()
        )))
    }

    async fn first_missing<'a>(&self, dependencies: &'a [Dependency]) -> Option<&'a Dependency> {
        for dependency in dependencies {
            let known = git(&self.dir, &["cat-file", "-e", &format!("{}^{{commit}}", dependency.commit)]).await;
            if known.is_err() {
                return Some(dependency);
            }
        }
        None
    }

    /// The repository as messages name it.
    fn shown(&self) -> String {
        format!("the repository {}", self.dir.display())
    }
}

/// The commits the dependencies' results name (their own workspaces' changes), in key order.
///
/// # Errors
/// The worker's, as for a commit not here: a dependency whose result names
/// something that is not a full commit id.
pub(super) fn dependencies(inputs: Option<&JsonObject>) -> Result<Vec<Dependency>, Unprepared> {
    let mut dependencies: Vec<Dependency> = inputs
        .into_iter()
        .flatten()
        .filter_map(|(key, result)| {
            let commit = result.get("workspace")?.get("commit")?.as_str()?;
            Some(Dependency { key: key.clone(), commit: commit.to_owned() })
        })
        .collect();
    dependencies.sort();
    match dependencies
        .iter()
        .find(|dependency| !(dependency.commit.len() == 40 && dependency.commit.chars().all(|c| c.is_ascii_hexdigit())))
    {
        Some(malformed) => Err(Unprepared::Worker(format!(
            "dependency `{}` names `{}`, which is not a commit id",
            malformed.key,
            crate::outcome::clip(&malformed.commit, 80)
        ))),
        None => Ok(dependencies),
    }
}
