//! The per-attempt scratch folder: where the prompt file, the JSON files an
//! agent is handed (input, dependency results, a builder's result, a
//! validator's feedback) and the result file live, and the agent's default
//! working folder.
//!
//! Folders are reused: each attempt takes one from a pool (one per slot in
//! use) and empties it when done, keeping only the process-group record. A
//! folder and files made and removed per attempt cost ext4 an inode search
//! each time (`recently_deleted`, `find_inode_bit`), which dominates the
//! cost of spawning short agents. With `keep_work_dirs`, each attempt gets
//! its own folder, named after it, and it stays.
//!
//! Where the worker may make cgroups, each folder has one, named after it
//! ([`super::cgroup`]): pooled with the folder, made once, removed when the
//! worker stops ([`Folders::remove_cgroups`]); with `keep_work_dirs`,
//! removed when the attempt ends.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hive_shared::convert::JsonObject;
use hive_shared::ids::AttemptId;

use super::cgroup::{AgentCgroup, CgroupRoot};
use super::orphans::PGID_FILE;

/// A JSON file handed to an agent, and the variable that names it.
#[derive(Debug, Clone)]
pub(crate) struct JsonFile {
    /// Environment variable (e.g. `HIVE_INPUT_FILE`).
    pub variable: &'static str,
    /// File name in the scratch folder.
    pub name: &'static str,
    pub content: JsonObject,
}

/// The scratch folders of one worker process under its `work_dir` (named
/// after the process, as several workers may share a `work_dir`).
#[derive(Debug)]
pub(crate) struct Folders {
    root: PathBuf,
    owner: String,
    keep: bool,
    /// Where each folder's cgroup is made; `None` where the worker cannot make them.
    cgroups: Option<CgroupRoot>,
    free: Mutex<Vec<PathBuf>>,
    made: AtomicUsize,
}

impl Folders {
    /// Folders of worker `owner` under `root`, each with a cgroup under
    /// `cgroups`; with `keep`, one per attempt, never emptied.
    pub(crate) fn new(root: PathBuf, owner: String, keep: bool, cgroups: Option<CgroupRoot>) -> Self {
        Self { root, owner, keep, cgroups, free: Mutex::default(), made: AtomicUsize::new(0) }
    }

    /// A folder for `attempt`, and whether it is new (its cgroup not made yet).
    fn take(&self, attempt: AttemptId) -> (PathBuf, bool) {
        if self.keep {
            return (self.root.join(format!("{}-{attempt}", self.owner)), true);
        }
        if let Some(folder) = self.free.lock().ok().and_then(|mut free| free.pop()) {
            return (folder, false);
        }
        let made = self.made.fetch_add(1, Ordering::Relaxed) + 1;
        (self.root.join(format!("{}-{made}", self.owner)), true)
    }

    fn give_back(&self, folder: PathBuf) {
        if let Ok(mut free) = self.free.lock() {
            free.push(folder);
        }
    }

    /// The cgroup of `folder`, made or not; `None` where there are no cgroups.
    fn cgroup_of(&self, folder: &Path) -> Option<AgentCgroup> {
        let name = folder.file_name()?.to_str()?;
        self.cgroups.as_ref()?.child(name).ok()
    }

    /// Removes the cgroups of the folders in the pool: call it once every
    /// attempt has ended. Their processes were killed as each attempt ended.
    pub(crate) async fn remove_cgroups(&self) {
        let pooled: Vec<AgentCgroup> = match self.free.lock() {
            Ok(free) => free.iter().filter_map(|folder| self.cgroup_of(folder)).collect(),
            Err(_) => return,
        };
        if pooled.is_empty() {
            return;
        }
        let _ = super::blocking_io(move || {
            for cgroup in &pooled {
                if let Err(err) = cgroup.remove() {
                    tracing::warn!(%cgroup, error = %err, "could not remove a scratch folder's cgroup");
                }
            }
            Ok(())
        })
        .await;
    }
}

/// The scratch folder of one attempt and the files in it.
#[derive(Debug, Clone)]
pub(crate) struct Scratch {
    /// The folder.
    pub dir: PathBuf,
    /// Where the agent may write its result (`$HIVE_RESULT_FILE`).
    pub result_file: PathBuf,
    /// The prompt, for `prompt = "file"` (`$HIVE_PROMPT_FILE`).
    pub prompt_file: PathBuf,
    /// JSON files written for the agent: (variable, path).
    pub files: Vec<(&'static str, PathBuf)>,
    /// The folder's cgroup, which the agent is moved into; `None` where there are no cgroups.
    pub cgroup: Option<AgentCgroup>,
}

impl Scratch {
    /// Takes a folder and writes the prompt (when the agent reads it from a
    /// file) and the JSON files. A pooled folder with nothing to write is
    /// handed out as it is, without a trip to the blocking pool: it was
    /// emptied, and its cgroup made, when it was first used.
    ///
    /// # Errors
    /// File system failures (the folder goes back to the pool, emptied).
    pub(crate) async fn create(
        folders: &Arc<Folders>,
        attempt: AttemptId,
        prompt: Option<&str>,
        json: Vec<JsonFile>,
    ) -> std::io::Result<Self> {
        let (dir, new) = folders.take(attempt);
        let cgroup = folders.cgroup_of(&dir);
        if !new && prompt.is_none() && json.is_empty() {
            return Ok(Self { cgroup, ..Self::empty(dir) });
        }
        let prompt = prompt.map(str::to_owned);
        let (folder, made) = (dir.clone(), cgroup.clone().filter(|_| new));
        let written = super::blocking_io(move || {
            // Made first: the folder goes back to the pool even when writing
            // fails, and the attempts that reuse it expect its cgroup.
            if let Some(cgroup) = made
                && let Err(err) = cgroup.create()
            {
                tracing::debug!(%cgroup, error = %err, "the folder's agents run without a cgroup of their own");
            }
            write_files(&folder, prompt.as_deref(), json)
        })
        .await;
        match written {
            Ok(files) => Ok(Self { files, cgroup, ..Self::empty(dir) }),
            Err(err) => {
                Self { cgroup, ..Self::empty(dir) }.finish(folders).await;
                Err(err)
            }
        }
    }

    fn empty(dir: PathBuf) -> Self {
        let (result_file, prompt_file) = (dir.join("result.json"), dir.join("prompt.txt"));
        Self { result_file, prompt_file, files: Vec::new(), cgroup: None, dir }
    }

    /// Empties the folder (all the agent left too, but the process-group
    /// record) and hands it back with its cgroup; with `keep_work_dirs`,
    /// leaves it as it is and removes its cgroup. Call it once the attempt's
    /// processes are gone.
    pub(crate) async fn finish(self, folders: &Arc<Folders>) {
        if folders.keep && self.cgroup.is_none() {
            return;
        }
        self.finish_after(folders, || ()).await;
    }

    /// Runs `last_look` (blocking file work on the folder as the agent left
    /// it), then finishes the folder as [`Scratch::finish`] does, in one trip
    /// to the blocking pool; `None` when that trip failed. The folder is
    /// handed back by the trip itself, so a caller that stops waiting (a
    /// timeout) loses no folder.
    pub(crate) async fn finish_after<T: Send + 'static>(
        self,
        folders: &Arc<Folders>,
        last_look: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let folders = Arc::clone(folders);
        super::blocking_io(move || {
            let looked = last_look();
            self.hand_back(&folders);
            Ok(looked)
        })
        .await
        .ok()
    }

    /// [`Scratch::finish`], blocking.
    fn hand_back(self, folders: &Folders) {
        let emptied = if folders.keep { Ok(()) } else { empty_folder(&self.dir) };
        // A folder that cannot be emptied is not reused (nor leaked into
        // another attempt): nor is its cgroup.
        if (folders.keep || emptied.is_err())
            && let Some(cgroup) = &self.cgroup
            && let Err(err) = cgroup.remove()
        {
            tracing::warn!(%cgroup, error = %err, "could not remove an attempt's cgroup");
        }
        match emptied {
            Ok(()) if !folders.keep => folders.give_back(self.dir),
            Ok(()) => {}
            Err(err) => {
                tracing::warn!(dir = %self.dir.display(), error = %err, "could not empty an attempt's scratch folder")
            }
        }
    }
}

fn write_files(dir: &Path, prompt: Option<&str>, json: Vec<JsonFile>) -> std::io::Result<Vec<(&'static str, PathBuf)>> {
    std::fs::create_dir_all(dir)?;
    if let Some(prompt) = prompt {
        std::fs::write(dir.join("prompt.txt"), prompt)?;
    }
    let mut files = Vec::with_capacity(json.len());
    for file in json {
        let path = dir.join(file.name);
        std::fs::write(&path, serde_json::to_vec(&file.content).map_err(std::io::Error::other)?)?;
        files.push((file.variable, path));
    }
    Ok(files)
}

fn empty_folder(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name() == PGID_FILE {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) }?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> JsonFile {
        let mut content = JsonObject::new();
        content.insert("k".into(), serde_json::Value::from(1));
        JsonFile { variable: "HIVE_INPUT_FILE", name: "input.json", content }
    }

    #[tokio::test]
    async fn a_folder_is_emptied_and_reused_and_nothing_leaks_into_the_next_attempt() {
        let root = tempfile::tempdir().unwrap();
        let folders = Arc::new(Folders::new(root.path().to_path_buf(), "w".into(), false, None));
        let first = Scratch::create(&folders, AttemptId::new(), Some("secret prompt"), vec![input()]).await.unwrap();
        assert_eq!(std::fs::read_to_string(&first.prompt_file).unwrap(), "secret prompt");
        std::fs::write(&first.result_file, "{}").unwrap();
        std::fs::create_dir_all(first.dir.join("agent-made/deeper")).unwrap();
        std::fs::write(first.dir.join(PGID_FILE), "123 x").unwrap();
        let dir = first.dir.clone();
        first.finish(&folders).await;

        let second = Scratch::create(&folders, AttemptId::new(), None, vec![]).await.unwrap();
        assert_eq!(second.dir, dir, "the folder is reused");
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into()).collect();
        left.sort();
        assert_eq!(left, vec![PGID_FILE.to_owned()], "only the process-group record stays");
        let third = Scratch::create(&folders, AttemptId::new(), None, vec![]).await.unwrap();
        assert_ne!(third.dir, second.dir, "a folder in use is never handed out twice");
        let other = Arc::new(Folders::new(root.path().to_path_buf(), "v".into(), false, None));
        let theirs = Scratch::create(&other, AttemptId::new(), None, vec![]).await.unwrap();
        assert!(
            theirs.dir != second.dir && theirs.dir != third.dir,
            "another worker on the same work_dir gets its own"
        );
    }

    #[tokio::test]
    async fn a_folder_goes_back_to_the_pool_though_its_finish_was_not_awaited_to_the_end() {
        let root = tempfile::tempdir().unwrap();
        let folders = Arc::new(Folders::new(root.path().to_path_buf(), "w".into(), false, None));
        let scratch = Scratch::create(&folders, AttemptId::new(), None, vec![]).await.unwrap();
        let dir = scratch.dir.clone();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let finishing = scratch.finish_after(&folders, move || held.recv().is_ok());
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), finishing).await;
        assert!(waited.is_err(), "the last look is still running");
        release.send(()).unwrap();
        let back = || folders.free.lock().unwrap().contains(&dir);
        crate::process::eventually("the folder back in the pool", std::time::Duration::from_secs(5), back).await;
    }

    /// Needs a host where the test process may make cgroups; passes without
    /// checking anything elsewhere.
    #[tokio::test]
    async fn a_pooled_folders_cgroup_is_made_once_and_removed_when_the_worker_stops() {
        let Ok(cgroups) = CgroupRoot::detect() else { return };
        let root = tempfile::tempdir().unwrap();
        let owner = uuid::Uuid::new_v4().to_string();
        let folders = Arc::new(Folders::new(root.path().to_path_buf(), owner.clone(), false, Some(cgroups.clone())));
        let first = Scratch::create(&folders, AttemptId::new(), None, vec![]).await.unwrap();
        let cgroup = first.cgroup.clone().expect("a cgroup for the folder");
        assert_eq!(cgroup.to_string(), cgroups.child(&format!("{owner}-1")).unwrap().to_string());
        assert!(cgroup.exists());
        first.finish(&folders).await;
        assert!(cgroup.exists(), "the cgroup stays with its pooled folder");
        let second = Scratch::create(&folders, AttemptId::new(), None, vec![]).await.unwrap();
        assert_eq!(second.cgroup.as_ref().map(ToString::to_string), Some(cgroup.to_string()));
        second.finish(&folders).await;
        folders.remove_cgroups().await;
        assert!(!cgroup.exists(), "removed when the worker stops");

        let kept = Arc::new(Folders::new(root.path().to_path_buf(), owner, true, Some(cgroups)));
        let scratch = Scratch::create(&kept, AttemptId::new(), None, vec![]).await.unwrap();
        let cgroup = scratch.cgroup.clone().expect("a cgroup for the kept folder");
        assert!(cgroup.exists());
        scratch.finish(&kept).await;
        assert!(!cgroup.exists(), "a kept folder's cgroup goes with its attempt");
    }

    #[tokio::test]
    async fn kept_folders_are_named_after_their_worker_and_attempt_and_stay() {
        let root = tempfile::tempdir().unwrap();
        let folders = Arc::new(Folders::new(root.path().to_path_buf(), "w".into(), true, None));
        let attempt = AttemptId::new();
        let scratch = Scratch::create(&folders, attempt, Some("p"), vec![input()]).await.unwrap();
        assert_eq!(scratch.dir, root.path().join(format!("w-{attempt}")));
        let dir = scratch.dir.clone();
        scratch.finish(&folders).await;
        assert!(dir.join("prompt.txt").exists() && dir.join("input.json").exists());
    }
}
