//! The repository an attempt's worktree comes from, and the commits a task
//! starts from looked up in it: the repository `workspace.repo` names on
//! this host, or the mirror of its URL ([`super::mirror`]), where `base` is
//! the upstream's first (`origin/<base>`, `origin/HEAD` without one) and a
//! missing commit is fetched for before it counts as missing.

use std::path::{Path, PathBuf};

use hive_shared::convert::JsonObject;

use super::Unprepared;
use super::git::git;
use super::mirror::Mirror;
use super::remote::{self, Source};
use crate::config::WorkspaceConfig;

/// The repository worktrees are made from.
#[derive(Debug)]
pub(super) struct Repository {
    /// The repository (a URL's is its bare mirror).
    pub(super) dir: PathBuf,
    mirror: Option<Mirror>,
}

/// A dependency's change: the commit its result names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Dependency {
    /// The dependency's key among the task's inputs.
    pub(super) key: String,
    pub(super) commit: String,
}

impl Repository {
    /// The repository of `config`; a URL's mirror is made when missing and
    /// fetched when its last fetch is older than `fetch_interval`.
    ///
    /// # Errors
    /// The worker's: a mirror that cannot be made or fetched.
    pub(super) async fn open(config: &WorkspaceConfig, mirror_root: &Path) -> Result<Self, Unprepared> {
        match remote::parse(&config.repo).map_err(Unprepared::Worker)? {
            Source::Path(dir) => Ok(Self { dir, mirror: None }),
            Source::Url(url) => {
                let mirror = Mirror::locate(mirror_root, url).await.map_err(Unprepared::Worker)?;
                mirror.refresh(config.fetch_interval()).await.map_err(Unprepared::Worker)?;
                Ok(Self { dir: mirror.dir.clone(), mirror: Some(mirror) })
            }
        }
    }

    /// The commit `base` names (`HEAD` without one); in a mirror, the
    /// upstream's branch of that name first, and looked for again after a
    /// fetch when missing.
    ///
    /// # Errors
    /// The worker's: `base` names no commit, or the fetch failed.
    pub(super) async fn base(&self, base: Option<&str>) -> Result<String, Unprepared> {
        let names: Vec<String> = match (&self.mirror, base) {
            (None, base) => vec![base.unwrap_or("HEAD").to_owned()],
            (Some(_), None) => vec!["refs/remotes/origin/HEAD".to_owned()],
            (Some(_), Some(base)) => vec![format!("refs/remotes/origin/{base}"), base.to_owned()],
        };
        if let Some(commit) = self.first_commit(&names).await {
            return Ok(commit);
        }
        if let Some(mirror) = &self.mirror {
            mirror.fetch().await.map_err(Unprepared::Worker)?;
            if let Some(commit) = self.first_commit(&names).await {
                return Ok(commit);
            }
        }
        Err(Unprepared::Worker(format!(
            "workspace.base: `{}` names no commit in {}",
            names.join("` or `"),
            self.shown()
        )))
    }

    /// The commit the first of `names` that names one names.
    async fn first_commit(&self, names: &[String]) -> Option<String> {
        for name in names {
            // As a commit: a tag names its commit, and `HEAD` is never a worktree's own.
            if let Ok(commit) =
                git(&self.dir, &["rev-parse", "--verify", "--quiet", &format!("{name}^{{commit}}")]).await
            {
                return Some(commit.trim().to_owned());
            }
        }
        None
    }

    /// Checks that every dependency's commit is here; in a mirror, fetches
    /// once when one is not.
    ///
    /// # Errors
    /// The worker's (another host may have the commit): a commit that is
    /// not here, or a fetch that failed.
    pub(super) async fn check_dependencies(&self, dependencies: &[Dependency]) -> Result<(), Unprepared> {
        let Some(mut missing) = self.first_missing(dependencies).await else { return Ok(()) };
        if let Some(mirror) = &self.mirror {
            mirror.fetch().await.map_err(Unprepared::Worker)?;
            let Some(still) = self.first_missing(dependencies).await else { return Ok(()) };
            missing = still;
        }
        let hint = match self.mirror {
            None => "run dependent tasks on the host of their dependencies, or share the repository",
            Some(_) => {
                "push the dependencies' branches upstream (`push = \"origin\"`), or run dependent tasks on their host"
            }
        };
        Err(Unprepared::Worker(format!(
            "dependency `{}` names commit `{}`, which is not in {} ({hint})",
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

    /// The repository as messages name it: its path, or its URL without credentials.
    fn shown(&self) -> String {
        match &self.mirror {
            None => format!("the repository {}", self.dir.display()),
            Some(mirror) => format!("{} (mirrored at {})", mirror.url(), self.dir.display()),
        }
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
