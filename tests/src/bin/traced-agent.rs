//! An agent for the traces test: records one span, `agent.work`, as a child
//! of the span `$TRACEPARENT` names, exports it to the collector the
//! `OTEL_*` environment names, and exits 0; but while the file `$FAIL_ONCE`
//! names does not exist, it makes it and exits 75 (EX_TEMPFAIL, a
//! transient failure) after exporting, so the task's first attempt fails
//! and a second one runs.

use std::process::ExitCode;
use std::time::SystemTime;

use hive_shared::traces::{self, ExportConfig, Kind, Span, SpanId, Tracer};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let Some((trace, parent)) = std::env::var("TRACEPARENT").ok().as_deref().and_then(traces::parse_traceparent) else {
        eprintln!("no TRACEPARENT");
        return ExitCode::from(2);
    };
    let export = match ExportConfig::from_env("traced-agent", std::env::vars()) {
        Ok(Some(export)) => export,
        other => {
            eprintln!("no OTLP export configured: {other:?}");
            return ExitCode::from(2);
        }
    };
    let stop = CancellationToken::new();
    let (tracer, exporter) = Tracer::start(export, stop.clone());
    let exporting = tokio::spawn(exporter);
    let now = SystemTime::now();
    tracer.record(Span {
        trace,
        id: SpanId::random(),
        parent: Some(parent),
        name: "agent.work",
        kind: Kind::Internal,
        start: now,
        end: now,
        attributes: Vec::new(),
        error: None,
    });
    stop.cancel();
    let _ = exporting.await;
    let fail_once = std::env::var_os("FAIL_ONCE").map(std::path::PathBuf::from);
    match fail_once {
        Some(marker) if !marker.exists() => {
            let _ = std::fs::write(marker, b"failed once");
            ExitCode::from(75)
        }
        _ => ExitCode::SUCCESS,
    }
}
