//! Hive's benchmark, `hive-bench`: starts a durable PostgreSQL (fsync on, as
//! the peers' harness does), then for each workload a fresh database, a
//! coordinator and workers as real processes over loopback gRPC, and prints
//! one line per workload in the peers' format (`peer=hive workload=drain …`).
//!
//! Layout: [`stack`] owns the processes; [`workloads`] has one module per
//! workload; [`stats`] computes percentiles and formats lines; [`cpu`] reads
//! processes' CPU time; [`auth`] turns tokens on for a run
//! (`HIVE_BENCH_AUTH=1`), [`tls`] TLS (`HIVE_BENCH_TLS=1`). `HIVE_BENCH_SQL`
//! is run in each fresh database once it is migrated, to switch a feature
//! off at the database (a trigger, say) and measure what it costs.

pub mod auth;
pub mod cpu;
pub mod stack;
pub mod stats;
pub mod tls;
pub mod workloads;
