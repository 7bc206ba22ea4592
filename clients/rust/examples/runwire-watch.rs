//! Watches one run and prints each event as one line of proto3 JSON.
//!
//! ```text
//! cargo run --example runwire-watch -- --addr 127.0.0.1:50051 --run-id RUN [--after-seq N] [--give-up-after SECS]
//! ```
//!
//! Exits 0 after RunCompleted when the stream kept the grammar; otherwise
//! prints why on stderr and exits 1 (grammar), 2 (usage) or 3 (watch
//! failed). Disconnects and server restarts are retried for up to
//! `--give-up-after` seconds (default 60) without progress, with one line
//! on stderr per reconnect; stdout carries only the events.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use runwire_client::v1::run_service_client::RunServiceClient;
use runwire_client::{GrammarChecker, OnRetry, WatchOptions, watch_with_options};
use tonic::transport::Endpoint;

struct Args {
    addr: String,
    run_id: String,
    after_seq: i64,
    give_up_after: Duration,
}

const USAGE: &str = "usage: runwire-watch --addr HOST:PORT --run-id RUN_ID [--after-seq N] [--give-up-after SECONDS]";

fn parse_args() -> Result<Args, String> {
    let mut addr = None;
    let mut run_id = None;
    let mut after_seq = 0;
    let mut give_up_after = WatchOptions::default().give_up_after;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = Some(value()?),
            "--run-id" => run_id = Some(value()?),
            "--after-seq" => {
                let v = value()?;
                after_seq = v.parse().map_err(|e| format!("--after-seq {v:?}: {e}"))?;
            }
            "--give-up-after" => {
                let v = value()?;
                let secs: f64 = v.parse().map_err(|e| format!("--give-up-after {v:?}: {e}"))?;
                give_up_after = Duration::try_from_secs_f64(secs).map_err(|e| format!("--give-up-after {v:?}: {e}"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        addr: addr.ok_or("--addr is required")?,
        run_id: run_id.ok_or("--run-id is required")?,
        after_seq,
        give_up_after,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("runwire-watch: {why}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let uri = if args.addr.contains("://") { args.addr.clone() } else { format!("http://{}", args.addr) };
    let endpoint = match Endpoint::from_shared(uri) {
        Ok(endpoint) => endpoint,
        Err(e) => {
            eprintln!("runwire-watch: --addr {:?}: {e}", args.addr);
            return ExitCode::from(2);
        }
    };
    // Lazy: a server that is not up yet is retried like a restarting one.
    let client = RunServiceClient::new(endpoint.connect_lazy());
    let run_id = args.run_id.clone();
    let on_retry = OnRetry::new(move |retry| {
        eprintln!(
            "runwire-watch: run {run_id}: {}; reconnecting after seq {} in {:?}",
            retry.error, retry.after_seq, retry.delay
        );
    });
    let options =
        WatchOptions { give_up_after: args.give_up_after, on_retry: Some(on_retry), ..WatchOptions::default() };
    let mut events = watch_with_options(client, args.run_id.clone(), args.after_seq, options);
    let mut checker = GrammarChecker::new(args.after_seq);
    let mut stdout = std::io::stdout().lock();

    while let Some(item) = events.next().await {
        let event = match item {
            Ok(event) => event,
            Err(e) => {
                eprintln!("runwire-watch: run {}: {e}", args.run_id);
                return ExitCode::from(3);
            }
        };
        let line = match serde_json::to_string(&event) {
            Ok(line) => line,
            Err(e) => {
                eprintln!("runwire-watch: seq {}: cannot encode as JSON: {e}", event.seq);
                return ExitCode::from(3);
            }
        };
        // One flushed line per event, so a reader sees each as it arrives.
        if writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_err() {
            return ExitCode::from(3);
        }
        // Violations are collected and reported once the stream ends.
        let _ = checker.check(&event);
    }
    let _ = checker.finish();
    if checker.violations().is_empty() {
        return ExitCode::SUCCESS;
    }
    for violation in checker.violations() {
        eprintln!("runwire-watch: {violation}");
    }
    ExitCode::from(1)
}
