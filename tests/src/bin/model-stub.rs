//! Runs the model stub on a given port with its default script, to try the Claude Code CLI by hand.
//!
//! Usage: `model-stub <port>`. Prints the base URL on stdout, then each request body as one JSON
//! line on stderr, until interrupted.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use hive_tests::model_stub::{ModelStub, Request, default_reply};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port = std::env::args().nth(1).context("usage: model-stub <port>")?;
    let port: u16 = port.parse().context("parse the port")?;
    let script = Arc::new(|request: &Request| {
        eprintln!("{}", request.body);
        default_reply(request)
    });
    let stub = ModelStub::bind(SocketAddr::from(([127, 0, 0, 1], port)), script).await.context("bind the port")?;
    writeln!(std::io::stdout().lock(), "{}", stub.url()).context("print the url")?;
    tokio::signal::ctrl_c().await.context("wait for ctrl-c")?;
    Ok(())
}
