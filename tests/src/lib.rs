//! Harness for Hive's end-to-end tests: everything real.
//!
//! - [`postgres`]: one throwaway PostgreSQL cluster per test binary (initdb
//!   in a temp folder, run as an unprivileged user when root), or the server
//!   `DATABASE_URL` names; each test gets a fresh database with the
//!   coordinator's migrations applied.
//! - [`auth`]: the admin and worker tokens of the suite, which runs with auth on.
//! - [`browser`]: headless Chromium over the DevTools protocol, for the dashboard.
//! - [`coordinator`]: a coordinator in-process on 127.0.0.1:0, with real
//!   gRPC clients; [`fake_worker`]: a worker whose every call the test makes.
//! - [`http`]: a plain HTTP GET, for the `/metrics` listeners, and a scripted webhook receiver.
//! - [`procs`]: the real `hive-coordinator`, `hive-worker` and `hivectl`
//!   binaries as child processes (build them first: `cargo build --bins`,
//!   which `scripts/test` does).
//! - [`db_rows`]: swarms, workers, tasks, claims, reports and fates written
//!   through the coordinator's own statements, for tests of the db layer.
//! - [`invariants`]: the data model's invariants that only tests check.
//! - [`statement_plans`]: the coordinator's statements as `.sqlx/` records
//!   them, prepared and `EXPLAIN`ed, and the scans their plans make.
//! - [`otlp`]: an OpenTelemetry collector in the test process (OTLP trace export over gRPC).
//! - [`model_stub`]: a scripted Anthropic Messages API, for the real Claude Code CLI.
//! - [`wait`]: wait on a condition with a deadline, never a bare sleep.
//! - [`worker_setup`]: worker config files from typed settings and agents.
//!
//! Assertions read the database with plain `sqlx::query`: test-only SQL that
//! has no place in the coordinator's checked query set.

pub mod auth;
pub mod browser;
pub mod coordinator;
pub mod db_rows;
pub mod fake_worker;
pub mod http;
pub mod invariants;
pub mod model_stub;
pub mod otlp;
pub mod postgres;
pub mod procs;
pub mod statement_plans;
pub mod wait;
pub mod worker_setup;
