//! Running git for the worker, guarded: a cleared environment, no hooks,
//! fsmonitor, signing, pagers, external diffs or text conversions, no
//! prompts, never above the folder it works in, and errors that name the
//! command with credentials stripped from any URL in it. Also the host-wide
//! lock under which a repository's worktrees are made, removed and pruned.

use std::path::Path;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use tokio::process::Command;

use super::remote::redact;

/// Longest one git command may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(300);

/// Who commits what an agent left.
pub(super) const AUTHOR: [&str; 4] = ["-c", "user.name=Hive", "-c", "user.email=hive@localhost"];

/// Settings every git call gets, whatever the user's or repository's
/// config says: nothing runs but git itself, and nothing waits for a person.
const GUARDS: [&str; 14] = [
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "commit.gpgSign=false",
    "-c",
    "tag.gpgSign=false",
    "-c",
    "gc.auto=0",
    "-c",
    "core.pager=cat",
    "-c",
    "color.ui=false",
];

/// Variables git keeps from the worker's environment.
const GIT_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("git");
    command.env_clear();
    for name in GIT_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    // Never look for a repository above the folder worked in.
    let ceiling = dir.parent().unwrap_or(dir);
    command
        .env("GIT_CEILING_DIRECTORIES", ceiling)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        .arg("-C")
        .arg(dir)
        .args(GUARDS)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

fn failed(dir: &Path, args: &[&str], stderr: &[u8]) -> String {
    redact(&format!("`git {}` in {} failed: {}", args.join(" "), dir.display(), String::from_utf8_lossy(stderr).trim()))
}

fn too_slow(args: &[&str]) -> String {
    redact(&format!("`git {}` took longer than {GIT_TIMEOUT:?}", args.join(" ")))
}

/// Runs `git -C dir args…`; its stdout, or an error naming the command and its stderr.
pub(super) async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let output = match tokio::time::timeout(GIT_TIMEOUT, command(dir, args).output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => return Err(format!("cannot run git: {err}")),
        Err(_) => return Err(too_slow(args)),
    };
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(failed(dir, args, &output.stderr))
    }
}

/// Like [`git`], keeping at most `limit` bytes of stdout (cut at a
/// character boundary) and whether there was more; the rest is not read.
pub(super) async fn git_capped(dir: &Path, args: &[&str], limit: usize) -> Result<(String, bool), String> {
    use tokio::io::AsyncReadExt;
    let mut child = command(dir, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run git: {err}"))?;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("git's output pipes were not made".into());
    };
    let read = async {
        let mut kept = Vec::new();
        stdout.take(limit as u64 + 1).read_to_end(&mut kept).await.map_err(|err| err.to_string())?;
        let more = kept.len() > limit;
        kept.truncate(limit);
        let mut errors = Vec::new();
        if !more {
            let _ = stderr.read_to_end(&mut errors).await;
        }
        Ok::<_, String>((kept, more, errors))
    };
    let (kept, more, errors) = match tokio::time::timeout(GIT_TIMEOUT, read).await {
        Ok(read) => read?,
        Err(_) => return Err(too_slow(args)),
    };
    if more {
        let _ = child.kill().await;
    } else {
        let status = child.wait().await.map_err(|err| err.to_string())?;
        if !status.success() {
            return Err(failed(dir, args, &errors));
        }
    }
    let text = String::from_utf8_lossy(&kept);
    Ok((crate::outcome::clip(&text, limit).to_owned(), more))
}

/// The first 8 bytes of `bytes`' SHA-256, in hex: for names that every
/// build of the worker gives the same thing.
pub(super) fn short_hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().take(8).map(|byte| format!("{byte:02x}")).collect()
}

/// Takes the host-wide lock on `repo`'s worktree list: git's `worktree
/// add`, `remove` and `prune` race when run at once on one repository (a
/// prune deletes the record an add is still writing), so every worker on
/// this host makes, removes and prunes a repository's worktrees, and takes
/// a task's branch into one, one at a time; a mirror is made and fetched
/// under its lock too. An `flock` on a file in the temporary folder named
/// after a SHA-256 of the repository's path, the same in every build of
/// the worker (workers of two versions on one host during an upgrade take
/// the same lock); it is released when the guard drops.
pub(super) async fn worktree_lock(repo: &Path) -> Result<Flock<std::fs::File>, String> {
    let repo = std::fs::canonicalize(repo).unwrap_or_else(|_| repo.to_path_buf());
    let hash = short_hash(repo.as_os_str().as_encoded_bytes());
    let path = std::env::temp_dir().join(format!("hive-worktrees-{hash}.lock"));
    let locked = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| std::io::Error::from(errno))
    })
    .await;
    match locked {
        Ok(Ok(lock)) => Ok(lock),
        Ok(Err(err)) => Err(format!("cannot take the worktree lock of {}: {err}", repo.display())),
        Err(err) => Err(format!("cannot take the worktree lock of {}: {err}", repo.display())),
    }
}
