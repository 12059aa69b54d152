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

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use hive_shared::convert::JsonObject;
use hive_shared::ids::AttemptId;

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
    free: Mutex<Vec<PathBuf>>,
    made: AtomicUsize,
}

impl Folders {
    /// Folders of worker `owner` under `root`; with `keep`, one per attempt, never emptied.
    pub(crate) fn new(root: PathBuf, owner: String, keep: bool) -> Self {
        Self { root, owner, keep, free: Mutex::default(), made: AtomicUsize::new(0) }
    }

    fn take(&self, attempt: AttemptId) -> PathBuf {
        if self.keep {
            return self.root.join(format!("{}-{attempt}", self.owner));
        }
        if let Some(folder) = self.free.lock().ok().and_then(|mut free| free.pop()) {
            return folder;
        }
        let made = self.made.fetch_add(1, Ordering::Relaxed) + 1;
        self.root.join(format!("{}-{made}", self.owner))
    }

    fn give_back(&self, folder: PathBuf) {
        if let Ok(mut free) = self.free.lock() {
            free.push(folder);
        }
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
}

impl Scratch {
    /// Takes a folder and writes the prompt (when the agent reads it from a
    /// file) and the JSON files.
    ///
    /// # Errors
    /// File system failures (the folder goes back to the pool, emptied).
    pub(crate) async fn create(
        folders: &Folders,
        attempt: AttemptId,
        prompt: Option<&str>,
        json: Vec<JsonFile>,
    ) -> std::io::Result<Self> {
        let dir = folders.take(attempt);
        let prompt = prompt.map(str::to_owned);
        let folder = dir.clone();
        match super::blocking_io(move || write_files(&folder, prompt.as_deref(), json)).await {
            Ok(files) => Ok(Self { files, ..Self::empty(dir) }),
            Err(err) => {
                Self::empty(dir).finish(folders).await;
                Err(err)
            }
        }
    }

    fn empty(dir: PathBuf) -> Self {
        Self { result_file: dir.join("result.json"), prompt_file: dir.join("prompt.txt"), files: Vec::new(), dir }
    }

    /// Empties the folder (all the agent left too, but the process-group
    /// record) and hands it back; with `keep_work_dirs`, leaves it as it is.
    pub(crate) async fn finish(self, folders: &Folders) {
        if folders.keep {
            return;
        }
        let dir = self.dir.clone();
        match super::blocking_io(move || empty_folder(&dir)).await {
            Ok(()) => folders.give_back(self.dir),
            // A folder that cannot be emptied is not reused (nor leaked into another attempt).
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
        let folders = Folders::new(root.path().to_path_buf(), "w".into(), false);
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
        let other = Folders::new(root.path().to_path_buf(), "v".into(), false);
        let theirs = Scratch::create(&other, AttemptId::new(), None, vec![]).await.unwrap();
        assert!(
            theirs.dir != second.dir && theirs.dir != third.dir,
            "another worker on the same work_dir gets its own"
        );
    }

    #[tokio::test]
    async fn kept_folders_are_named_after_their_worker_and_attempt_and_stay() {
        let root = tempfile::tempdir().unwrap();
        let folders = Folders::new(root.path().to_path_buf(), "w".into(), true);
        let attempt = AttemptId::new();
        let scratch = Scratch::create(&folders, attempt, Some("p"), vec![input()]).await.unwrap();
        assert_eq!(scratch.dir, root.path().join(format!("w-{attempt}")));
        let dir = scratch.dir.clone();
        scratch.finish(&folders).await;
        assert!(dir.join("prompt.txt").exists() && dir.join("input.json").exists());
    }
}
