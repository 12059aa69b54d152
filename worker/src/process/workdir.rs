//! The per-attempt scratch folder: where the prompt file, the input file and
//! the result file live, and the agent's default working folder.

use std::path::{Path, PathBuf};

use hive_shared::convert::JsonObject;
use hive_shared::ids::AttemptId;

/// The scratch folder of one attempt and the files in it.
#[derive(Debug, Clone)]
pub struct Scratch {
    /// The folder.
    pub dir: PathBuf,
    /// Where the agent may write its result (`$HIVE_RESULT_FILE`).
    pub result_file: PathBuf,
    /// The prompt, for `prompt = "file"` (`$HIVE_PROMPT_FILE`).
    pub prompt_file: PathBuf,
    /// The task input, when there is one (`$HIVE_INPUT_FILE`).
    pub input_file: Option<PathBuf>,
}

impl Scratch {
    /// Creates the folder under `root` and writes the prompt and input files.
    ///
    /// # Errors
    /// File system failures.
    pub async fn create(
        root: &Path,
        attempt: AttemptId,
        prompt: &str,
        input: Option<&JsonObject>,
    ) -> std::io::Result<Self> {
        let dir = root.join(attempt.to_string());
        tokio::fs::create_dir_all(&dir).await?;
        let prompt_file = dir.join("prompt.txt");
        tokio::fs::write(&prompt_file, prompt).await?;
        let input_file = match input {
            Some(object) => {
                let path = dir.join("input.json");
                tokio::fs::write(&path, serde_json::to_vec(object).map_err(std::io::Error::other)?).await?;
                Some(path)
            }
            None => None,
        };
        Ok(Self { result_file: dir.join("result.json"), prompt_file, input_file, dir })
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
