//! The coordinator's configuration: defaults in code, then `--config FILE`
//! (TOML), then `HIVE_COORDINATOR__*` variables, then flags. `validate`
//! lists every problem at once.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use hive_shared::config::{ConfigError, Secret};
use hive_shared::telemetry::LogFormat;
use hive_shared::traces::ExportConfig;
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that set config keys (`__` separates levels).
pub const ENV_PREFIX: &str = "HIVE_COORDINATOR__";

/// Everything the coordinator can be configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the gRPC server binds; by default 0.0.0.0:50051 with auth on,
    /// 127.0.0.1:50051 with it off. See [`Config::listen_address`].
    pub listen: Option<SocketAddr>,
    /// Who may call what.
    pub auth: AuthConfig,
    /// Log line format.
    pub log_format: LogFormat,
    /// PostgreSQL connection.
    pub database: DatabaseConfig,
    /// Lease and heartbeat timing.
    pub leases: LeaseConfig,
    /// Claim long-polling.
    pub claims: ClaimConfig,
    /// Defaults for submitted tasks.
    pub tasks: TaskDefaults,
    /// Size limits on requests and stored output.
    pub limits: LimitConfig,
    /// Workers' records.
    pub workers: WorkersConfig,
    /// Agents' saved sessions (`session = "resume"`).
    pub sessions: SessionsConfig,
    /// The event log.
    pub events: EventsConfig,
    /// Cool-downs of provider accounts after a rate limit.
    pub rate_limits: RateLimitConfig,
    /// TLS of the gRPC server; plaintext without `tls.cert`.
    pub tls: TlsConfig,
    /// The HTTP listener beside gRPC (`/metrics`).
    pub http: HttpConfig,
    /// Alert webhooks (`[[webhooks]]` tables).
    pub webhooks: Vec<WebhookConfig>,
    /// How webhook deliveries are posted and retried.
    pub webhook_delivery: WebhookDeliveryConfig,
    /// Where traces go: from the standard `OTEL_*` variables, not the file
    /// (see `hive_shared::traces`); none exports nothing.
    #[serde(skip)]
    pub traces: Option<ExportConfig>,
    /// How long shutdown waits for in-flight RPCs.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// Authentication. Setting `admin_token_file` turns auth on: every call then
/// needs a token, and roles decide what it may call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// File holding the first admin token (`hive_a_` and 64 hex digits, as
    /// `hivectl tokens mint` prints); the operator makes it, there is no default.
    pub admin_token_file: Option<PathBuf>,
    /// Serve without auth on an address other than loopback: anyone who can
    /// reach the port can then run code on every worker. Flag `--insecure`.
    pub insecure: bool,
}

/// Port the coordinator serves on unless told otherwise.
pub const DEFAULT_PORT: u16 = 50051;

/// PostgreSQL connection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Connection URL (`postgres://user@host:port/db`); required.
    pub url: Secret<String>,
    /// Connections in all: the workers' hot path's, and the rest for everything else.
    pub max_connections: u32,
    /// Connections of the workers' hot path (claims, outcomes, heartbeats,
    /// output); by default as many as this host has cores, at least 2 and
    /// at most half of `max_connections`. See `db::hot_connections`.
    pub hot_connections: Option<u32>,
    /// How long a query waits for a pooled connection.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// On start, how long to keep trying to reach the database before giving up.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

/// How long the records of workers are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// A worker not seen for this long, and holding no lease, is forgotten
    /// (`hivectl workers --all` stops listing it).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self { retention: Duration::from_secs(24 * 3600) }
    }
}

/// The session state workers save for tasks that resume their agent's
/// session (`hive.v1.WorkerService/SaveSession`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Largest state saved for one task; a larger save is refused (the
    /// retry resumes the last save that fitted, if any).
    pub max_size: ByteSize,
    /// How long a task's session is kept after the task finished (for
    /// `hivectl tasks retry` to resume it).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self { max_size: ByteSize::mib(8), retention: Duration::from_secs(7 * 24 * 3600) }
    }
}

/// The event log (`hive.v1.AdminService/Watch`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Whether task events (submitted, started, succeeded, retried, dead,
    /// cancelled, stalled) are written; off, the log holds only worker,
    /// swarm and operator events. For measuring what the log costs.
    pub tasks: bool,
    /// How long events are kept; a watcher resuming from an older event is
    /// told to resync.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { tasks: true, retention: Duration::from_secs(7 * 24 * 3600) }
    }
}

/// How long a provider account cools down after a rate limit: `base`,
/// doubled at each refusal in a row, at most `max`, spread by ±`jitter`; a
/// reset time the agent reports wins (capped at `max`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// The first step's wait.
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// The longest wait.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    /// Spread of each wait, as a fraction.
    pub jitter: f64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { base: Duration::from_secs(10), max: Duration::from_secs(600), jitter: 0.2 }
    }
}

/// TLS files of the gRPC server, PEM, read again whenever they change on disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Certificate chain the server presents (leaf first); turns TLS on.
    pub cert: Option<PathBuf>,
    /// Private key of `cert`.
    pub key: Option<PathBuf>,
    /// CA bundle client certificates must chain to; when set, every client
    /// needs a certificate, and a worker's must name it (see the README).
    pub client_ca: Option<PathBuf>,
}

impl TlsConfig {
    /// Whether the server speaks TLS.
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }

    /// Whether clients must present a certificate.
    pub fn client_certs_required(&self) -> bool {
        self.enabled() && self.client_ca.is_some()
    }
}

/// The HTTP listener beside gRPC: `/metrics` (Prometheus text format),
/// readable with a `metrics` or `admin` token when auth is on. Plain HTTP:
/// keep it on a network only the scrapers reach.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to serve HTTP on; none (the default) serves no HTTP.
    pub listen: Option<SocketAddr>,
    /// Link from a task's dashboard page to its trace in a tracing UI, with
    /// `{trace_id}` standing for the trace id (e.g.
    /// `https://jaeger.example/trace/{trace_id}`); none shows the id alone.
    pub trace_url: Option<String>,
}

/// One alert webhook: the events of the kinds it names, posted as one
/// signed digest per `window` (the Standard Webhooks scheme).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique name: letters, digits, `-` and `_`, at most 64 (deliveries are listed by it).
    pub name: String,
    /// Where to post: `http://` or `https://` with a host. Kept out of logs:
    /// a receiver's URL is often its credential (Slack's are).
    pub url: Secret<String>,
    /// Event kinds (`task.dead`) or families (`worker.*`) to send.
    pub events: Vec<String>,
    /// Signing secret: `whsec_` and base64 of 24 to 64 random bytes.
    pub secret: Secret<String>,
    /// Events within this long of the first waiting one go in one post.
    #[serde(default = "default_webhook_window", with = "humantime_serde")]
    pub window: Duration,
}

fn default_webhook_window() -> Duration {
    Duration::from_secs(10)
}

/// How webhook deliveries are posted and retried.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookDeliveryConfig {
    /// Longest wait for a receiver's answer.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Wait before the first retry; each next one waits twice as long.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest wait between retries.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// A delivery still failing this long after it was queued is given up (`failed`).
    #[serde(with = "humantime_serde")]
    pub give_up_after: Duration,
    /// Delivered and given-up deliveries are kept this long.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for WebhookDeliveryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            retry_initial: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Lease and heartbeat timing, handed to workers at registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseConfig {
    /// How long an attempt's lease lasts without a heartbeat.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How often workers beat.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How long the coordinator gathers heartbeats before writing them in one
    /// statement (a beat's reply waits at most this much longer).
    #[serde(with = "humantime_serde")]
    pub heartbeat_write_window: Duration,
    /// How often the reaper looks for expired leases.
    #[serde(with = "humantime_serde")]
    pub reap_interval: Duration,
}

/// Claim long-poll settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimConfig {
    /// Most tasks one Claim hands out.
    pub max_batch: u32,
    /// Longest wait a worker may ask for.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// How often the coordinator looks for due tasks no notification announced
    /// (a `run_after` passing, a notification lost in a reconnect) and, if there
    /// are any, wakes its waiting claims. Wake-ups normally come from LISTEN/NOTIFY.
    #[serde(with = "humantime_serde")]
    pub recheck_interval: Duration,
}

/// Defaults applied to submitted tasks that do not set their own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskDefaults {
    /// Attempts allowed in total (1 + retries).
    pub max_attempts: u32,
    /// Attempts a task may lose with their worker (its lease ran out) before
    /// it is dead-lettered; lost attempts do not count against `max_attempts`.
    pub max_lost_attempts: u32,
    /// Attempts its agent's provider may refuse (rate limits) before a
    /// refusal counts as a failure, so a "rate limit" that is really the
    /// task's own ends.
    pub max_refusals: u32,
    /// First retry delay.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Growth factor of the delay per retry.
    pub backoff_multiplier: f64,
    /// Largest delay.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Random spread of each delay, as a fraction (0.2 = ±20 %).
    pub backoff_jitter: f64,
    /// Longest an attempt of a task without its own timeout may run before the
    /// coordinator fails it (the worker enforces the agent's own timeout first).
    #[serde(with = "humantime_serde")]
    pub max_runtime: Duration,
}

/// Request and storage limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitConfig {
    /// Largest gRPC message accepted.
    pub max_message_size: ByteSize,
    /// Largest prompt of one task.
    pub max_prompt_size: ByteSize,
    /// Largest input of one task (as JSON).
    pub max_input_size: ByteSize,
    /// Largest result of one task (as JSON).
    pub max_result_size: ByteSize,
    /// Most tasks in one submission.
    pub max_tasks_per_submit: u32,
    /// Output stored per task; later output is dropped behind a truncation marker.
    pub max_log_size_per_task: ByteSize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: None,
            auth: AuthConfig::default(),
            log_format: LogFormat::Text,
            database: DatabaseConfig::default(),
            leases: LeaseConfig::default(),
            claims: ClaimConfig::default(),
            tasks: TaskDefaults::default(),
            limits: LimitConfig::default(),
            workers: WorkersConfig::default(),
            sessions: SessionsConfig::default(),
            events: EventsConfig::default(),
            rate_limits: RateLimitConfig::default(),
            tls: TlsConfig::default(),
            http: HttpConfig::default(),
            webhooks: Vec::new(),
            webhook_delivery: WebhookDeliveryConfig::default(),
            traces: None,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret::default(),
            max_connections: 16,
            hot_connections: None,
            acquire_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(60),
        }
    }
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_write_window: Duration::from_millis(50),
            reap_interval: Duration::from_secs(1),
        }
    }
}

impl Default for ClaimConfig {
    fn default() -> Self {
        Self { max_batch: 512, max_wait: Duration::from_secs(60), recheck_interval: Duration::from_secs(5) }
    }
}

impl Default for TaskDefaults {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            max_lost_attempts: 3,
            max_refusals: 20,
            backoff_initial: Duration::from_secs(10),
            backoff_multiplier: 2.0,
            backoff_max: Duration::from_secs(300),
            backoff_jitter: 0.2,
            max_runtime: Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            max_message_size: ByteSize::mib(16),
            max_prompt_size: ByteSize::mib(1),
            max_input_size: ByteSize::mib(1),
            max_result_size: ByteSize::mib(4),
            max_tasks_per_submit: 10_000,
            max_log_size_per_task: ByteSize::mib(4),
        }
    }
}

/// The few settings that also have flags (and their usual environment variables).
#[derive(Debug, Default, Serialize)]
pub struct Flags {
    /// `--listen` / `HIVE_LISTEN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--insecure`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthFlags>,
    /// `--database-url` / `DATABASE_URL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseFlags>,
}

/// Auth flags.
#[derive(Debug, Serialize)]
pub struct AuthFlags {
    /// Serve without auth beyond loopback.
    pub insecure: bool,
}

/// Database flags.
#[derive(Debug, Serialize)]
pub struct DatabaseFlags {
    /// Connection URL.
    pub url: String,
}

impl Config {
    /// Loads the layered config and validates it.
    ///
    /// # Errors
    /// Every unreadable, unknown or invalid setting, each named.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: Flags,
    ) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut config: Self = hive_shared::config::load(file, env.clone(), ENV_PREFIX, flags, Self::validate)?;
        config.traces = ExportConfig::from_env("hive-coordinator", env).map_err(|problems| ConfigError { problems })?;
        Ok(config)
    }

    /// Whether calls need tokens.
    pub fn auth_on(&self) -> bool {
        self.auth.admin_token_file.is_some()
    }

    /// The address to serve on: `listen`, or port 50051 on every address
    /// with auth on and on loopback with it off.
    pub fn listen_address(&self) -> SocketAddr {
        self.listen.unwrap_or_else(|| {
            let ip = if self.auth_on() { Ipv4Addr::UNSPECIFIED } else { Ipv4Addr::LOCALHOST };
            SocketAddr::new(IpAddr::V4(ip), DEFAULT_PORT)
        })
    }

    /// Lists every problem with this config; empty when it is usable.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.auth_on() && !self.auth.insecure && !self.listen_address().ip().is_loopback() {
            problems.push(format!(
                "listen: {} is not a loopback address and auth is off: set auth.admin_token_file \
                 (HIVE_COORDINATOR__AUTH__ADMIN_TOKEN_FILE) to turn auth on, or pass --insecure to let \
                 anyone who can reach the port run code on every worker",
                self.listen_address()
            ));
        }
        if let Some(url) = &self.http.trace_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            problems.push(format!("http.trace_url: `{url}` must start with http:// or https://"));
        }
        if let Some(http) = self.http.listen
            && !self.auth_on()
            && !self.auth.insecure
            && !http.ip().is_loopback()
        {
            problems.push(format!(
                "http.listen: {http} is not a loopback address and auth is off: turn auth on \
                 (auth.admin_token_file) so /metrics needs a token, or pass --insecure"
            ));
        }
        let mut check = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        check(
            self.workers.retention >= self.leases.ttl,
            "workers.retention must be at least leases.ttl (a worker is gone only once its leases could have lapsed)",
        );
        let url = self.database.url.expose();
        check(!url.is_empty(), "database.url is required (flag --database-url or env DATABASE_URL)");
        check(
            url.is_empty() || url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "database.url must start with postgres:// or postgresql://",
        );
        check(
            self.database.max_connections >= 2,
            "database.max_connections must be at least 2 (the workers' hot path has connections of its own)",
        );
        check(
            self.database.hot_connections.is_none_or(|hot| hot >= 1 && hot < self.database.max_connections),
            "database.hot_connections must be at least 1 and less than database.max_connections (the rest serve everything else)",
        );
        check(!self.leases.ttl.is_zero(), "leases.ttl must be greater than zero");
        check(
            self.events.retention >= Duration::from_secs(60),
            "events.retention must be at least a minute (watchers resume from events kept that long)",
        );
        check(
            self.leases.heartbeat_interval * 2 <= self.leases.ttl,
            "leases.heartbeat_interval must be at most half of leases.ttl, so one lost beat does not lose a lease",
        );
        check(!self.leases.heartbeat_interval.is_zero(), "leases.heartbeat_interval must be greater than zero");
        check(
            self.leases.heartbeat_write_window * 4 <= self.leases.heartbeat_interval,
            "leases.heartbeat_write_window must be at most a quarter of leases.heartbeat_interval",
        );
        check(!self.leases.reap_interval.is_zero(), "leases.reap_interval must be greater than zero");
        check((1..=10_000).contains(&self.claims.max_batch), "claims.max_batch must be between 1 and 10000");
        check(!self.claims.recheck_interval.is_zero(), "claims.recheck_interval must be greater than zero");
        check(self.tasks.max_attempts >= 1, "tasks.max_attempts must be at least 1");
        check(self.tasks.max_lost_attempts >= 1, "tasks.max_lost_attempts must be at least 1");
        check(self.tasks.max_refusals >= 1, "tasks.max_refusals must be at least 1");
        check(!self.tasks.max_runtime.is_zero(), "tasks.max_runtime must be greater than zero");
        check(self.tasks.backoff_multiplier >= 1.0, "tasks.backoff_multiplier must be at least 1.0");
        check((0.0..1.0).contains(&self.tasks.backoff_jitter), "tasks.backoff_jitter must be in [0, 1)");
        check(
            self.tasks.backoff_initial <= self.tasks.backoff_max,
            "tasks.backoff_initial must not exceed tasks.backoff_max",
        );
        check(
            self.limits.max_prompt_size < self.limits.max_message_size,
            "limits.max_prompt_size must be below limits.max_message_size",
        );
        check(
            self.sessions.max_size < self.limits.max_message_size,
            "sessions.max_size must be below limits.max_message_size (a session is saved in one message)",
        );
        check(
            !self.rate_limits.base.is_zero() && self.rate_limits.base <= self.rate_limits.max,
            "rate_limits.base must be greater than zero and at most rate_limits.max",
        );
        check((0.0..1.0).contains(&self.rate_limits.jitter), "rate_limits.jitter must be in [0, 1)");
        check(self.limits.max_tasks_per_submit >= 1, "limits.max_tasks_per_submit must be at least 1");
        check(
            self.tls.cert.is_some() == self.tls.key.is_some(),
            "tls.cert and tls.key must be set together (the certificate and its private key)",
        );
        check(
            self.tls.client_ca.is_none() || self.tls.cert.is_some(),
            "tls.client_ca needs tls.cert and tls.key (client certificates are checked only over TLS)",
        );
        let delivery = &self.webhook_delivery;
        check(
            !delivery.timeout.is_zero()
                && !delivery.retry_initial.is_zero()
                && delivery.retry_initial <= delivery.retry_max,
            "webhook_delivery: timeout and retry_initial must be greater than zero, retry_initial at most retry_max",
        );
        problems.extend(crate::webhooks::config_problems(&self.webhooks));
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url() -> Flags {
        Flags { listen: None, auth: None, database: Some(DatabaseFlags { url: "postgres://x@localhost/db".into() }) }
    }

    #[test]
    fn defaults_plus_a_database_url_are_valid() {
        let config = Config::load(None, vec![], with_url()).unwrap();
        assert_eq!(config.leases.ttl, Duration::from_secs(30));
        assert_eq!(config.listen_address(), "127.0.0.1:50051".parse().unwrap());
    }

    #[test]
    fn a_missing_url_and_bad_timing_are_all_reported() {
        let env = vec![
            ("HIVE_COORDINATOR__LEASES__TTL".to_owned(), "4s".to_owned()),
            ("HIVE_COORDINATOR__CLAIMS__MAX_BATCH".to_owned(), "0".to_owned()),
        ];
        let err = Config::load(None, env, Flags::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("database.url is required"), "{text}");
        assert!(text.contains("leases.heartbeat_interval"), "{text}");
        assert!(text.contains("claims.max_batch"), "{text}");
    }

    #[test]
    fn hot_connections_must_leave_some_for_the_rest() {
        let env = |hot: &str| {
            vec![
                ("HIVE_COORDINATOR__DATABASE__MAX_CONNECTIONS".to_owned(), "4".to_owned()),
                ("HIVE_COORDINATOR__DATABASE__HOT_CONNECTIONS".to_owned(), hot.to_owned()),
            ]
        };
        for bad in ["0", "4", "5"] {
            let err = Config::load(None, env(bad), with_url()).unwrap_err();
            assert!(err.to_string().contains("database.hot_connections"), "{bad}: {err}");
        }
        let config = Config::load(None, env("3"), with_url()).unwrap();
        assert_eq!(config.database.hot_connections, Some(3));
    }

    #[test]
    fn without_auth_only_loopback_is_served_unless_insecure() {
        let open = |extra: Vec<(String, String)>| {
            let mut env = vec![("HIVE_COORDINATOR__LISTEN".to_owned(), "0.0.0.0:7000".to_owned())];
            env.extend(extra);
            Config::load(None, env, with_url())
        };
        let err = open(vec![]).unwrap_err().to_string();
        assert!(err.contains("auth.admin_token_file") && err.contains("--insecure"), "{err}");
        assert!(open(vec![("HIVE_COORDINATOR__AUTH__INSECURE".into(), "true".into())]).is_ok());
        let with_auth = open(vec![("HIVE_COORDINATOR__AUTH__ADMIN_TOKEN_FILE".into(), "/etc/hive/admin".into())]);
        assert_eq!(with_auth.unwrap().listen_address(), "0.0.0.0:7000".parse().unwrap());
    }

    #[test]
    fn tls_keys_come_from_the_environment_and_must_fit_together() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(key, value)| (format!("HIVE_COORDINATOR__TLS__{key}"), (*value).to_owned()))
                .collect::<Vec<_>>()
        };
        let config = Config::load(None, env(&[("CERT", "/c.pem"), ("KEY", "/k.pem")]), with_url()).unwrap();
        assert_eq!(config.tls.cert.as_deref(), Some(Path::new("/c.pem")));
        assert!(config.tls.enabled() && !config.tls.client_certs_required());

        let err = Config::load(None, env(&[("CERT", "/c.pem")]), with_url()).unwrap_err();
        assert!(err.to_string().contains("tls.cert and tls.key"), "{err}");
        let err = Config::load(None, env(&[("CLIENT_CA", "/ca.pem")]), with_url()).unwrap_err();
        assert!(err.to_string().contains("tls.client_ca needs tls.cert"), "{err}");
    }

    #[test]
    fn a_bad_duration_names_the_key() {
        let env = vec![("HIVE_COORDINATOR__LEASES__TTL".to_owned(), "soon".to_owned())];
        let err = Config::load(None, env, with_url()).unwrap_err();
        assert!(err.to_string().contains("ttl"), "{err}");
    }
}
