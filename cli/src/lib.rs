//! `hivectl`: operate a Hive swarm — submit task files, inspect tasks, read
//! logs, see workers and progress — and `hivectl up`, which runs a whole
//! swarm on one machine.
//!
//! Other crates see [`commands`], one module per subcommand (the binary is
//! their argument parsing and dispatch), and [`local_pg`], which starts a
//! PostgreSQL of Hive's own (the test harness and the benchmark use it too).
//! Internal: `taskfile` parses and checks YAML task files, `client` talks to
//! the coordinator, `output` prints tables or JSON.

mod client;
pub mod commands;
pub mod local_pg;
mod output;
mod taskfile;
