//! The per-attempt scratch folder: where the prompt file, the JSON files an
//! agent is handed (input, dependency results, a builder's result, a
//! validator's feedback) and the result file live, and the agent's default
//! working folder.

use std::path::{Path, PathBuf};

use hive_shared::convert::JsonObject;
use hive_shared::ids::AttemptId;

/// A JSON file handed to an agent, and the variable that names it.
#[derive(Debug, Clone)]
pub struct JsonFile {
    /// Environment variable (e.g. `HIVE_INPUT_FILE`).
    pub variable: &'static str,
    /// File name in the scratch folder.
    pub name: &'static str,
    /// Content.
    pub content: JsonObject,
}

/// The scratch folder of one attempt and the files in it.
#[derive(Debug, Clone)]
pub struct Scratch {
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
    /// Creates the folder under `root` and writes the prompt and the JSON files.
    ///
    /// # Errors
    /// File system failures.
    pub async fn create(root: &Path, attempt: AttemptId, prompt: &str, json: Vec<JsonFile>) -> std::io::Result<Self> {
        let dir = root.join(attempt.to_string());
        tokio::fs::create_dir_all(&dir).await?;
        let prompt_file = dir.join("prompt.txt");
        tokio::fs::write(&prompt_file, prompt).await?;
        let mut files = Vec::with_capacity(json.len());
        for file in json {
            let path = dir.join(file.name);
            tokio::fs::write(&path, serde_json::to_vec(&file.content).map_err(std::io::Error::other)?).await?;
            files.push((file.variable, path));
        }
        Ok(Self { result_file: dir.join("result.json"), prompt_file, files, dir })
    }

    /// Removes the folder and everything the agent left in it.
    pub async fn remove(&self) {
        if let Err(err) = tokio::fs::remove_dir_all(&self.dir).await
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %err, "could not remove an attempt's scratch folder");
        }
    }
}
