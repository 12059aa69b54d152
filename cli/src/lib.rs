//! `hivectl`: operate a Hive swarm — submit task files, inspect tasks, read
//! logs, see workers and progress — and `hivectl up`, which runs a whole
//! swarm on one machine.
//!
//! Layout: [`commands`] has one module per subcommand; [`taskfile`] parses
//! and checks YAML task files; [`client`] connects to the coordinator;
//! [`output`] prints tables or JSON; [`local_pg`] starts a PostgreSQL of
//! Hive's own (also used by the test harness).

pub mod client;
pub mod commands;
pub mod local_pg;
pub mod output;
pub mod taskfile;
