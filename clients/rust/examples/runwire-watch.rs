//! Watches one run and prints each event as one line of proto3 JSON.
//!
//! ```text
//! cargo run --example runwire-watch -- --addr 127.0.0.1:50051 --run-id RUN [--after-seq N]
//!     [--token TOKEN] [--tls-ca CA.pem [--tls-cert CERT.pem --tls-key KEY.pem]] [--give-up-after SECS]
//!     [--kinds KIND,...] [--node-ids NODE,...]
//! cargo run --example runwire-watch -- --events [--cursor CURSOR] [--start latest|earliest]
//!     [--flow-name NAME] [--kinds KIND,...] [--node-ids NODE,...] [--count N] [connection flags]
//! ```
//!
//! `--kinds` and `--node-ids` filter the watch (the grammar check then
//! follows the filtered-stream rule). `--events` watches every run instead
//! (WatchEvents, resumed from the last cursor), printing the same lines,
//! until `--count` events (forever without it); it checks no grammar.
//!
//! Exit status, the same in every client's example: 0 at the run's end
//! (after RunCompleted, or told by the server that the run finished at or
//! before `--after-seq`, whose final status then goes to stderr) when the
//! stream kept the grammar; 1 when it broke a grammar rule or skipped a seq;
//! 2 for bad usage; 3 when the watch failed (a server error, an unknown
//! event, the give-up budget). Disconnects and server restarts are retried
//! for up to `--give-up-after` seconds (default 120) without a response,
//! with one line on stderr per reconnect; stdout carries only the events.
//! `--tls-ca` connects with TLS (tonic's rustls), `--tls-cert`/`--tls-key`
//! add a client certificate for mutual TLS.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use runwire_client::v1::run_service_client::RunServiceClient;
use runwire_client::v1::{EventFilter, RunEvent, RunEventsFilter, StreamStart, WatchEventsRequest};
use runwire_client::{
    Error, GrammarChecker, OnRetry, WatchOptions, watch_events_with_options, watch_with_filter, watch_with_options,
};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

struct Args {
    addr: String,
    /// `None` with `--events`.
    run_id: Option<String>,
    filter: Option<EventFilter>,
    /// `--events`: the request, and how many events to print (0: forever).
    events: Option<(WatchEventsRequest, usize)>,
    after_seq: i64,
    token: Option<String>,
    tls_ca: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    give_up_after: Duration,
}

const USAGE: &str = "usage: runwire-watch --addr HOST:PORT --run-id ID [--after-seq N] [--kinds K,...] [--node-ids N,...] [--token TOKEN] [--tls-ca CA.pem [--tls-cert CERT.pem --tls-key KEY.pem]] [--give-up-after SECONDS]
       runwire-watch --addr HOST:PORT --events [--cursor C] [--start latest|earliest] [--flow-name F] [--kinds K,...] [--node-ids N,...] [--count N] [connection flags]";

const HELP: &str = "
  --addr HOST:PORT         the server (default 127.0.0.1:50051)
  --run-id ID              the run to watch (not with --events)
  --kinds K,...            only these event kinds (oneof names, comma-separated)
  --node-ids N,...         only these nodes' events (comma-separated)
  --events                 watch every run's events (WatchEvents) instead
  --cursor C               --events: resume after this cursor
  --start latest|earliest  --events without --cursor: where to start (default latest)
  --flow-name F            --events: only runs of this flow
  --count N                --events: exit 0 after this many events
  --after-seq N            print only the events after this seq (default 0)
  --token TOKEN            send `authorization: Bearer TOKEN`
  --tls-ca CA.pem          connect with TLS, trusting this PEM CA bundle
  --tls-cert CERT.pem      client certificate (PEM) for mutual TLS
  --tls-key KEY.pem        private key (PEM) of --tls-cert
  --give-up-after SECONDS  give up after failing this long without an answer;
                           0 retries forever (default 120)";

enum Parsed {
    Run(Box<Args>),
    Help,
}

fn parse_args() -> Result<Parsed, String> {
    let mut addr = "127.0.0.1:50051".to_owned();
    let mut run_id = None;
    let mut token = None;
    let (mut tls_ca, mut tls_cert, mut tls_key) = (None, None, None);
    let mut after_seq = 0;
    let mut give_up_after = WatchOptions::default().give_up_after;
    let (mut kinds, mut node_ids) = (Vec::new(), Vec::new());
    let (mut events, mut cursor, mut start, mut flow_name, mut count) =
        (false, String::new(), StreamStart::Latest, String::new(), 0);
    let list = |v: String| v.split(',').filter(|p| !p.is_empty()).map(str::to_owned).collect::<Vec<_>>();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = value()?,
            "--token" => token = Some(value()?),
            "--tls-ca" => tls_ca = Some(value()?),
            "--tls-cert" => tls_cert = Some(value()?),
            "--tls-key" => tls_key = Some(value()?),
            "--run-id" => run_id = Some(value()?),
            "--kinds" => kinds = list(value()?),
            "--node-ids" => node_ids = list(value()?),
            "--events" => events = true,
            "--cursor" => cursor = value()?,
            "--flow-name" => flow_name = value()?,
            "--start" => {
                start = match value()?.as_str() {
                    "latest" => StreamStart::Latest,
                    "earliest" => StreamStart::Earliest,
                    other => return Err(format!("--start must be latest or earliest, got {other:?}")),
                };
            }
            "--count" => {
                let v = value()?;
                count = v.parse().map_err(|e| format!("--count {v:?}: {e}"))?;
            }
            "--after-seq" => {
                let v = value()?;
                after_seq = v.parse().map_err(|e| format!("--after-seq {v:?}: {e}"))?;
            }
            "--give-up-after" => {
                let v = value()?;
                let secs: f64 = v.parse().map_err(|e| format!("--give-up-after {v:?}: {e}"))?;
                give_up_after = Duration::try_from_secs_f64(secs).map_err(|e| format!("--give-up-after {v:?}: {e}"))?;
                if give_up_after.is_zero() {
                    give_up_after = Duration::MAX; // 0 retries forever
                }
            }
            "-h" | "--help" => return Ok(Parsed::Help),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if after_seq < 0 {
        return Err(format!("--after-seq must not be negative, got {after_seq}"));
    }
    if tls_cert.is_some() != tls_key.is_some() {
        return Err("--tls-cert and --tls-key go together".into());
    }
    if tls_cert.is_some() && tls_ca.is_none() {
        return Err("--tls-cert needs --tls-ca".into());
    }
    if run_id.is_some() == events {
        return Err("give either --run-id or --events".into());
    }
    let filter = (!kinds.is_empty() || !node_ids.is_empty()).then_some(EventFilter { kinds, node_ids });
    let events = events.then(|| {
        let filter = RunEventsFilter { flow_name, events: filter.clone(), ..RunEventsFilter::default() };
        (WatchEventsRequest { cursor, start: start as i32, filter: Some(filter) }, count)
    });
    Ok(Parsed::Run(Box::new(Args {
        addr,
        run_id,
        filter,
        events,
        after_seq,
        token,
        tls_ca,
        tls_cert,
        tls_key,
        give_up_after,
    })))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            println!("{USAGE}\n{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(why) => {
            eprintln!("runwire-watch: {why}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let bearer = match args.token.as_deref().map(|t| format!("Bearer {t}").parse::<MetadataValue<_>>()).transpose() {
        Ok(bearer) => bearer,
        Err(e) => {
            eprintln!("runwire-watch: --token: {e}");
            return ExitCode::from(2);
        }
    };
    let scheme = if args.tls_ca.is_some() { "https" } else { "http" };
    let uri = if args.addr.contains("://") { args.addr.clone() } else { format!("{scheme}://{}", args.addr) };
    let endpoint = match Endpoint::from_shared(uri).map_err(|e| e.to_string()).and_then(|e| with_tls(e, &args)) {
        Ok(endpoint) => endpoint,
        Err(e) => {
            eprintln!("runwire-watch: --addr {:?}: {e}", args.addr);
            return ExitCode::from(2);
        }
    };
    // Lazy: a server that is not up yet is retried like a restarting one.
    let client = RunServiceClient::with_interceptor(endpoint.connect_lazy(), move |mut request: tonic::Request<()>| {
        if let Some(bearer) = &bearer {
            request.metadata_mut().insert("authorization", bearer.clone());
        }
        Ok(request)
    });
    let what = args.run_id.as_ref().map_or_else(|| "events".to_owned(), |id| format!("run {id}"));
    let on_retry = OnRetry::new(move |retry| match retry.cursor {
        Some(cursor) => eprintln!(
            "runwire-watch: {what}: {}; reconnecting from cursor {cursor:?} in {:?}",
            retry.error, retry.delay
        ),
        None => eprintln!(
            "runwire-watch: {what}: {}; reconnecting after seq {} in {:?}",
            retry.error, retry.after_seq, retry.delay
        ),
    });
    let options =
        WatchOptions { give_up_after: args.give_up_after, on_retry: Some(on_retry), ..WatchOptions::default() };
    let mut stdout = std::io::stdout().lock();
    let Some(run_id) = args.run_id.clone() else {
        let Some((request, count)) = args.events.clone() else { return ExitCode::from(2) };
        let mut items = watch_events_with_options(client, request, options);
        let mut printed = 0;
        while let Some(item) = items.next().await {
            match item {
                Ok(item) => {
                    if print(&mut stdout, &item.event).is_err() {
                        return ExitCode::from(3);
                    }
                    printed += 1;
                    if printed == count {
                        return ExitCode::SUCCESS;
                    }
                }
                Err(e) => {
                    eprintln!("runwire-watch: events: {e}");
                    return ExitCode::from(3);
                }
            }
        }
        return ExitCode::from(3);
    };
    let (mut events, mut checker) = match args.filter.clone() {
        Some(filter) => (
            watch_with_filter(client, run_id.clone(), args.after_seq, filter.clone(), options),
            GrammarChecker::with_filter(args.after_seq, &filter),
        ),
        None => {
            (watch_with_options(client, run_id.clone(), args.after_seq, options), GrammarChecker::new(args.after_seq))
        }
    };

    while let Some(item) = events.next().await {
        let event = match item {
            Ok(event) => event,
            Err(e) => {
                eprintln!("runwire-watch: run {run_id}: {e}");
                return ExitCode::from(if matches!(e, Error::SeqGap { .. }) { 1 } else { 3 });
            }
        };
        if print(&mut stdout, &event).is_err() {
            return ExitCode::from(3);
        }
        // Violations are collected and reported once the stream ends.
        let _ = checker.check(&event);
    }
    let Some(end) = events.end() else {
        eprintln!("runwire-watch: run {run_id}: the watch stopped before the run's end");
        return ExitCode::from(3);
    };
    if end.last_seq > args.after_seq {
        let _ = checker.finish();
    } else {
        // No RunCompleted line printed to say it: the run ended before --after-seq.
        eprintln!("runwire-watch: run {} finished {} at seq {}", end.run_id, end.status_name(), end.last_seq);
    }
    if checker.violations().is_empty() {
        return ExitCode::SUCCESS;
    }
    for violation in checker.violations() {
        eprintln!("runwire-watch: {violation}");
    }
    ExitCode::from(1)
}

/// Prints the event as one flushed line of proto3 JSON, so a reader sees
/// each as it arrives.
fn print(stdout: &mut impl Write, event: &RunEvent) -> Result<(), ()> {
    let line = serde_json::to_string(event).map_err(|e| {
        eprintln!("runwire-watch: seq {}: cannot encode as JSON: {e}", event.seq);
    })?;
    writeln!(stdout, "{line}").and_then(|()| stdout.flush()).map_err(|_| ())
}

/// The endpoint with the TLS of `--tls-ca` and, for mutual TLS,
/// `--tls-cert`/`--tls-key`; unchanged without `--tls-ca`.
fn with_tls(endpoint: Endpoint, args: &Args) -> Result<Endpoint, String> {
    let Some(ca) = &args.tls_ca else { return Ok(endpoint) };
    let read = |path: &str| std::fs::read(path).map_err(|e| format!("{path}: {e}"));
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    // The cause says more than tonic's "transport error" (rustls refuses X.509 v1, say).
    endpoint
        .tls_config(tls)
        .map_err(|e| std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| format!("{e}: {s}")))
}
