//! What `workspace.repo` names: a repository on this host (a path), or the
//! URL of one elsewhere (`https://`, `http://`, `ssh://`, `git://`,
//! `file://`, or scp-like `user@host:path`), which the worker mirrors
//! ([`super::mirror`]). A URL may carry credentials (`https://user:token@…`):
//! git gets them, messages and logs never do ([`redact`]).

use std::fmt;
use std::path::PathBuf;

/// Schemes git fetches over that `repo` may name.
const SCHEMES: [&str; 5] = ["https", "http", "ssh", "git", "file"];

/// Where a workspace's repository is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A repository on this host.
    Path(PathBuf),
    /// A repository elsewhere, mirrored on this host.
    Url(RepoUrl),
}

/// A repository URL; shown without its credentials.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RepoUrl(String);

impl RepoUrl {
    /// The URL as written, credentials included: for git only.
    pub(crate) fn as_git_argument(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for RepoUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "RepoUrl({self})")
    }
}

/// What `repo` names: a URL when it has a scheme (`scheme://`) or is
/// scp-like (`user@host:path`, no `/` before the `:`), else a path.
///
/// # Errors
/// A URL git cannot fetch from, or that is malformed, with the reason
/// (the URL in it without credentials).
pub(crate) fn parse(repo: &str) -> Result<Source, String> {
    if let Some((scheme, rest)) = repo.split_once("://") {
        return parse_scheme_url(repo, scheme, rest).map(|()| Source::Url(RepoUrl(repo.to_owned())));
    }
    match scp_like(repo) {
        Some(Ok(())) => Ok(Source::Url(RepoUrl(repo.to_owned()))),
        Some(Err(problem)) => Err(problem),
        None => Ok(Source::Path(PathBuf::from(repo))),
    }
}

fn parse_scheme_url(repo: &str, scheme: &str, rest: &str) -> Result<(), String> {
    let shown = redact(repo);
    if !SCHEMES.contains(&scheme) {
        return Err(format!(
            "`{shown}` is not a URL git can fetch from (https://, http://, ssh://, git://, file:// or user@host:path)"
        ));
    }
    if repo.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{shown}` holds spaces or control characters"));
    }
    if scheme == "file" {
        return if rest.len() > 1 && rest.starts_with('/') {
            Ok(())
        } else {
            Err(format!("`{shown}` names no absolute path (file:///path/to/repository)"))
        };
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("`{shown}` names no host"));
    }
    if host.starts_with('-') {
        return Err(format!("`{shown}` names a host starting with -"));
    }
    if path.is_empty() {
        return Err(format!("`{shown}` names no repository on its host"));
    }
    Ok(())
}

/// `Some` when `repo` is scp-like (`user@host:path`): whether it is well formed.
fn scp_like(repo: &str) -> Option<Result<(), String>> {
    let (before, path) = repo.split_once(':')?;
    let (user, host) = before.split_once('@')?;
    if before.contains('/') {
        return None;
    }
    let fine = [user, host, path].iter().all(|part| !part.is_empty() && !part.starts_with('-'))
        && !repo.chars().any(|c| c.is_whitespace() || c.is_control());
    Some(if fine { Ok(()) } else { Err(format!("`{repo}` is not a well-formed user@host:path")) })
}

/// `text` with the credentials of every `scheme://user:password@host` in it
/// removed (`scheme://host`), whatever put them there: git's own messages
/// may repeat the URL it was given.
pub(crate) fn redact(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        shown.push_str(head);
        let end = tail.find(|c: char| c == '/' || c.is_whitespace() || "'\"`<>".contains(c)).unwrap_or(tail.len());
        let authority = &tail[..end];
        shown.push_str(authority.rsplit_once('@').map_or(authority, |(_, host)| host));
        rest = &tail[end..];
    }
    shown.push_str(rest);
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> bool {
        matches!(parse(text), Ok(Source::Url(_)))
    }

    #[test]
    fn urls_of_every_kind_are_told_from_paths() {
        for text in [
            "https://example.com/org/app.git",
            "http://127.0.0.1:8080/app",
            "ssh://git@example.com:2222/org/app.git",
            "git://example.com/app.git",
            "file:///srv/upstream/app.git",
            "git@example.com:org/app.git",
        ] {
            assert!(url(text), "{text}");
        }
        for text in ["/srv/repos/app", "repos/app", "./a@b/c:d"] {
            assert_eq!(parse(text), Ok(Source::Path(PathBuf::from(text))));
        }
    }

    #[test]
    fn malformed_urls_are_refused_with_the_reason() {
        for (text, reason) in [
            ("ftp://example.com/app.git", "is not a URL git can fetch from"),
            ("https://", "names no host"),
            ("https://user:secret@/app", "names no host"),
            ("ssh://-oProxyCommand=x/app", "a host starting with -"),
            ("https://example.com", "names no repository"),
            ("https://example.com/a b", "spaces"),
            ("file://relative/path", "names no absolute path"),
            ("git@example.com:", "not a well-formed"),
            ("-o@example.com:app", "not a well-formed"),
        ] {
            let problem = parse(text).unwrap_err();
            assert!(problem.contains(reason), "{text}: {problem}");
            assert!(!problem.contains("secret"), "{problem}");
        }
    }

    #[test]
    fn credentials_never_show() {
        let url = RepoUrl("https://user:s3cret@example.com/app.git".into());
        assert_eq!(url.to_string(), "https://example.com/app.git");
        assert_eq!(format!("{url:?}"), "RepoUrl(https://example.com/app.git)");
        assert_eq!(url.as_git_argument(), "https://user:s3cret@example.com/app.git");
        let message = "fatal: unable to access 'https://token@example.com/app.git/': refused; also http://a:b@h:1";
        assert_eq!(redact(message), "fatal: unable to access 'https://example.com/app.git/': refused; also http://h:1");
        assert_eq!(redact("no url here"), "no url here");
    }
}
