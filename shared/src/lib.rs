//! Hive's wire contract and the plumbing every Hive binary shares.
//!
//! What lives here: the generated gRPC code ([`pb`]) and its codec
//! ([`codec`]), how clients connect ([`client`]: URL, TLS, bearer token),
//! token text and roles ([`tokens`]), id newtypes ([`ids`]),
//! conversions between protobuf and plain Rust values ([`convert`]), the
//! config-layering helper ([`config`]), the shutdown signal ([`signal`]),
//! tracing setup ([`telemetry`]), in-memory Prometheus metrics and their text
//! format ([`metrics`]), OpenTelemetry traces exported over OTLP
//! ([`traces`]) and spawning onto a task tracker with panics logged ([`tracked`]).
//!
//! What must not: business logic. Task states, scheduling and SQL belong to
//! the coordinator; processes belong to the worker.

pub mod client;
pub mod codec;
pub mod config;
pub mod convert;
pub mod ids;
pub mod metrics;
pub mod pb;
pub mod signal;
pub mod telemetry;
pub mod tokens;
pub mod traces;
pub mod tracked;

/// The version every Hive binary reports (`Register`, `--version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
