//! Alert webhooks. Operators name endpoints in `[[webhooks]]` tables (a
//! URL, the event kinds they want, a signing secret, a window); the event
//! log is their outbox:
//! - [`outbox`]: turns each webhook's matching events after its cursor into
//!   one delivery per window (a digest, not one post per event), moving the
//!   cursor in the same transaction (`db::webhooks`).
//! - [`sender`]: posts due deliveries, each on its own (a receiver that hangs
//!   holds up no other), and retries failures with backoff until
//!   `webhook_delivery.give_up_after`.
//! - [`digest`]: the JSON posted, with a Slack-compatible `text`.
//! - [`post`]: one signed HTTP/1.1 POST (Standard Webhooks headers), over
//!   TLS for `https://`.
//! - [`deliveries`]: listing deliveries and resending one (audited).
//!
//! Every coordinator runs both loops, so each must have the same webhooks.

pub(crate) mod deliveries;
pub(crate) mod digest;
pub(crate) mod outbox;
pub(crate) mod post;
pub(crate) mod sender;

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::config::WebhookConfig;
use crate::events::KINDS;

/// A configured webhook, checked and ready to use.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// Its name.
    pub name: String,
    /// Where to post.
    pub url: http::Uri,
    /// The kinds it wants, as SQL `like` patterns.
    pub patterns: Vec<String>,
    /// The signing key (the secret's bytes).
    pub key: Vec<u8>,
    /// Events within this long of the first waiting one go in one post.
    pub window: Duration,
}

impl std::fmt::Debug for Endpoint {
    /// Its name and host only: the URL and the key are credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("host", &self.url.host().unwrap_or_default())
            .field("patterns", &self.patterns)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// The endpoints of `configs` that are valid (all of them, once the config validated).
pub(crate) fn endpoints(configs: &[WebhookConfig]) -> Vec<Endpoint> {
    configs.iter().filter_map(|config| endpoint(config).ok()).collect()
}

/// Every problem with the `[[webhooks]]` tables, each naming the webhook and key.
pub(crate) fn config_problems(configs: &[WebhookConfig]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut names = HashSet::new();
    for (index, config) in configs.iter().enumerate() {
        if !names.insert(config.name.as_str()) {
            problems.push(format!("webhooks[{index}].name: {:?} is used by another webhook", config.name));
        }
        if let Err(found) = endpoint(config) {
            problems.extend(found.into_iter().map(|problem| format!("webhooks[{index}] ({}): {problem}", config.name)));
        }
    }
    problems
}

fn endpoint(config: &WebhookConfig) -> Result<Endpoint, Vec<String>> {
    let mut problems = Vec::new();
    let name_ok = !config.name.is_empty()
        && config.name.len() <= 64
        && config.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok {
        problems.push("name must have 1 to 64 letters, digits, '-' or '_'".to_owned());
    }
    let url = match url(config.url.expose()) {
        Ok(url) => Some(url),
        Err(problem) => {
            problems.push(format!("url {:?}: {problem}", config.url.expose()));
            None
        }
    };
    if config.events.is_empty() {
        problems.push("events must name at least one kind (task.dead) or family (worker.*)".to_owned());
    }
    let mut patterns = Vec::new();
    for kind in &config.events {
        match pattern(kind) {
            Some(pattern) => patterns.push(pattern),
            None => problems.push(format!(
                "events: {kind:?} is not an event kind or family (kinds: {}; families: task.*, worker.*, …; * for all)",
                KINDS.join(", ")
            )),
        }
    }
    let key = match secret_key(config.secret.expose()) {
        Ok(key) => Some(key),
        Err(problem) => {
            problems.push(format!("secret: {problem}"));
            None
        }
    };
    if config.window.is_zero() || config.window > Duration::from_secs(3600) {
        problems.push("window must be between 1ms and 1h".to_owned());
    }
    match (url, key) {
        (Some(url), Some(key)) if problems.is_empty() => {
            Ok(Endpoint { name: config.name.clone(), url, patterns, key, window: config.window })
        }
        _ => Err(problems),
    }
}

fn url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text.parse().map_err(|err| format!("not a URL ({err})"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must start with http:// or https://".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(uri)
}

/// The SQL `like` pattern of a kind, a family (`task.*`) or `*`; `None` when it names nothing.
fn pattern(kind: &str) -> Option<String> {
    if kind == "*" {
        return Some("%".into());
    }
    let escaped = |text: &str| text.replace('\\', "\\\\").replace('_', "\\_").replace('%', "\\%");
    if let Some(family) = kind.strip_suffix(".*") {
        let prefix = format!("{family}.");
        return KINDS.iter().any(|known| known.starts_with(&prefix)).then(|| format!("{}%", escaped(&prefix)));
    }
    KINDS.contains(&kind).then(|| escaped(kind))
}

/// The signing key of a `whsec_` secret.
fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("must be \"whsec_\" and base64 of 24 to 64 random bytes (e.g. `whsec_$(openssl rand -base64 32)`)")?;
    let key = STANDARD.decode(encoded).map_err(|_| "the part after \"whsec_\" is not base64")?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!("decodes to {} bytes; use 24 to 64", key.len()));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_shared::config::Secret;

    fn config(url: &str, events: &[&str], secret: &str) -> WebhookConfig {
        WebhookConfig {
            name: "ops".into(),
            url: Secret::new(url.into()),
            events: events.iter().map(|kind| (*kind).to_owned()).collect(),
            secret: Secret::new(secret.into()),
            window: Duration::from_secs(10),
        }
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn kinds_and_families_become_like_patterns_and_unknown_ones_are_refused() {
        assert_eq!(pattern("task.retry_scheduled").as_deref(), Some("task.retry\\_scheduled"));
        assert_eq!(pattern("worker.*").as_deref(), Some("worker.%"));
        assert_eq!(pattern("*").as_deref(), Some("%"));
        assert_eq!(pattern("task.exploded"), None);
        assert_eq!(pattern("nothing.*"), None);
        assert!(config_problems(&[config("https://hooks.example/x", &["task.dead", "swarm.*"], SECRET)]).is_empty());
    }

    #[test]
    fn urls_and_secrets_stay_out_of_logs() {
        let config = config("https://hooks.example/services/T0/B0/credential", &["task.dead"], SECRET);
        let endpoint = endpoint(&config).unwrap();
        for logged in [format!("{config:?}"), format!("{endpoint:?}")] {
            assert!(!logged.contains("credential") && !logged.contains("MfKQ9r8"), "{logged}");
        }
    }

    #[test]
    fn each_bad_setting_is_named() {
        let bad = [
            ("not a url", &["task.dead"][..], SECRET, "url \"not a url\""),
            ("ftp://host/x", &["task.dead"][..], SECRET, "must start with http:// or https://"),
            ("http:///x", &["task.dead"][..], SECRET, "url \"http:///x\""),
            ("http://h/x", &["task.deadd"][..], SECRET, "events: \"task.deadd\" is not an event kind"),
            ("http://h/x", &[][..], SECRET, "events must name at least one"),
            ("http://h/x", &["task.dead"][..], "hunter2", "secret: must be \"whsec_\""),
            ("http://h/x", &["task.dead"][..], "whsec_!!!", "secret: the part after \"whsec_\" is not base64"),
            ("http://h/x", &["task.dead"][..], "whsec_c2hvcnQ=", "secret: decodes to 5 bytes"),
        ];
        for (url, events, secret, expected) in bad {
            let problems = config_problems(&[config(url, events, secret)]);
            assert!(problems.iter().any(|problem| problem.contains(expected)), "{url} {events:?}: {problems:?}");
            assert!(problems.iter().all(|problem| problem.starts_with("webhooks[0] (ops)")), "{problems:?}");
        }
        let twice = [config("http://h/x", &["task.dead"], SECRET), config("http://h/y", &["task.dead"], SECRET)];
        assert_eq!(config_problems(&twice), ["webhooks[1].name: \"ops\" is used by another webhook"]);
    }
}
