//! TLS for a bench run: off by default (as the peers run), on with
//! `HIVE_BENCH_TLS=1`, so one build measures what TLS costs. With it on, the
//! run makes a development CA and server certificate (as `hivectl certs dev`
//! does) in a temporary folder; each coordinator serves that certificate,
//! and the workers and every client reach it over `https://` trusting that CA.

use std::path::PathBuf;
use std::sync::OnceLock;

use hive_shared::client::{ClientTls, Connect};
use tokio::process::Command;

/// The certificate files of a run with TLS on.
#[derive(Debug)]
pub struct BenchTls {
    /// Folder holding `ca.pem`, `server.pem` and `server-key.pem`.
    pub dir: PathBuf,
}

/// The run's certificates, or `None` when `HIVE_BENCH_TLS` is not `1`.
///
/// # Panics
/// When the certificates cannot be written.
pub fn files() -> Option<&'static BenchTls> {
    static FILES: OnceLock<Option<BenchTls>> = OnceLock::new();
    FILES
        .get_or_init(|| {
            if std::env::var("HIVE_BENCH_TLS").as_deref() != Ok("1") {
                return None;
            }
            let dir = std::env::temp_dir().join(format!("hive-bench-tls-{}", std::process::id()));
            let args = hivectl::commands::certs::DevArgs {
                dir: dir.clone(),
                hosts: Vec::new(),
                clients: Vec::new(),
                ca_from: None,
                force: true,
            };
            hivectl::commands::certs::dev(&args).expect("write the bench certificates");
            Some(BenchTls { dir })
        })
        .as_ref()
}

/// The scheme of coordinator URLs in this run.
pub fn scheme() -> &'static str {
    if files().is_some() { "https" } else { "http" }
}

/// Turns TLS on for a coordinator `command`, when the run has it on.
pub fn serve(command: &mut Command) {
    if let Some(files) = files() {
        command
            .env("HIVE_COORDINATOR__TLS__CERT", files.dir.join("server.pem"))
            .env("HIVE_COORDINATOR__TLS__KEY", files.dir.join("server-key.pem"));
    }
}

/// Makes a worker `command` trust the run's CA, when TLS is on.
pub fn trust(command: &mut Command) {
    if let Some(files) = files() {
        command.arg("--tls-ca").arg(files.dir.join("ca.pem"));
    }
}

/// How a client reaches the coordinator at `url`.
pub fn connect(url: &str) -> Connect {
    let tls = ClientTls { ca: files().map(|files| files.dir.join("ca.pem")), ..ClientTls::default() };
    Connect { tls, ..Connect::plain(url) }
}
