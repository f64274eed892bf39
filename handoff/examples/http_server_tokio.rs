//! The service of `http_server.rs` on tokio and hyper (docs/embedding.md,
//! feature `tokio`): `http_server_tokio CONTROL_SOCKET DATA_DIR`, under a
//! supervisor that passes it a listener named `http`. `GET /` answers
//! `pid=<pid>`; `POST /counter` adds one to a counter kept in DATA_DIR and
//! answers `pid=<pid> count=<n>` once the new count is on disk; `GET
//! /counter` answers the count. Connections are kept alive.
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use handoff::drain::{Connection, Drain};
use handoff::tokio::AsyncDrainable;
use handoff::{DataDirLock, Incumbent, IncumbentConfig, Readiness, Role, SealError, SealReport};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

#[path = "support/counter.rs"]
mod counter;
use counter::Counter;

/// The hooks the drain does not cover: the counter's seal and its undoing.
struct Service {
    counter: Arc<Counter>,
}

impl AsyncDrainable for Service {
    /// Every acknowledged increment is already on disk: stop writing. The
    /// library releases the flock right after.
    async fn seal(&mut self) -> Result<SealReport, SealError> {
        let count = self.counter.set_sealed(true);
        Ok(SealReport {
            last_revision_per_shard: vec![count],
            data_dir_fingerprint: format!("count={count}"),
        })
    }

    /// The handoff was aborted: write again; accepting resumes right after.
    async fn resume_after_abort(&mut self) {
        self.counter.set_sealed(false);
    }
}

async fn accept_loop(drain: Drain, listener: TcpListener, counter: Arc<Counter>) {
    loop {
        match drain.accept_async(&listener).await {
            Ok((stream, conn)) => {
                tokio::spawn(serve_connection(stream, conn, Arc::clone(&counter)));
            }
            Err(e) => {
                eprintln!("http_server_tokio: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await; // back off (e.g. out of FDs)
            }
        }
    }
}

/// One connection, with hyper. `conn` is dropped on return: the drain
/// counts it closed.
async fn serve_connection(stream: TcpStream, mut conn: Connection, counter: Arc<Counter>) {
    // Drained before its first request arrived (and none came within the
    // grace): close without reading, so the client may resend.
    if !conn.wait_for_request_async(&stream).await.unwrap_or(false) {
        return;
    }
    // Told when hyper has parsed a request: the permit of the first one
    // stays until taken.
    let started = Arc::new(Notify::new());
    let service = {
        let started = Arc::clone(&started);
        service_fn(move |request| {
            started.notify_one();
            respond(request, Arc::clone(&counter))
        })
    };
    let http = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(http);
    tokio::select! {
        _ = http.as_mut() => return,
        _ = conn.draining() => {}
    }
    // Draining. hyper's graceful shutdown closes a connection at once when
    // no request is under way, and before hyper parsed the first one none
    // is: the request the wait above saw arrive would go unanswered. So
    // the first request is let start; then hyper finishes the request
    // under way, answers it with `connection: close`, and closes an idle
    // keep-alive connection without reading from it.
    tokio::select! {
        _ = http.as_mut() => return,
        _ = started.notified() => {}
    }
    http.as_mut().graceful_shutdown();
    let _ = http.await;
}

async fn respond(
    request: Request<Incoming>,
    counter: Arc<Counter>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let pid = std::process::id();
    let (status, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => (StatusCode::OK, format!("pid={pid}\n")),
        (&Method::GET, "/counter") => (StatusCode::OK, format!("count={}\n", counter.count())),
        (&Method::POST, "/counter") => {
            // The fsync blocks: off the runtime's worker threads.
            match tokio::task::spawn_blocking(move || counter.increment()).await {
                Ok(Ok(n)) => (StatusCode::OK, format!("pid={pid} count={n}\n")),
                Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        _ => (StatusCode::NOT_FOUND, String::new()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    Ok(response)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    handoff::events::init_from_env();
    let args: Vec<String> = std::env::args().collect();
    let [_, control, data_dir] = &args[..] else {
        return Err("usage: http_server_tokio CONTROL_SOCKET DATA_DIR".into());
    };
    let (control, data_dir) = (Path::new(control), Path::new(data_dir));
    // Everything that can fail comes before the take-over (see the std
    // example).
    let config = IncumbentConfig::from_env()?;
    // The take-over is the std example's, before the runtime starts:
    // `detect_role` clears the environment, which must happen before any
    // thread runs.
    let (incumbent, listener, counter) = match handoff::detect_role()? {
        Role::ColdStart { listeners } => {
            let mut http = listeners.into_iter().filter(|(name, _)| name == "http");
            let (_, listener) = http
                .next()
                .ok_or("no `http` listener: run me under a supervisor")?;
            let lock = DataDirLock::acquire(data_dir)?;
            let counter = Counter::open(data_dir)?;
            (
                Incumbent::bind_cold_start(control, lock)?,
                listener,
                counter,
            )
        }
        Role::Successor(successor) => {
            let mut handshook = successor.handshake(b"http-tokio-example".to_vec())?;
            handshook.prepare_control_socket(control)?;
            let mut begun = handshook.wait_for_begin()?; // the incumbent drained and sealed
            let listener = begun.take_listener("http")?;
            let lock = begun.acquire_lock(data_dir)?;
            let counter = Counter::open(data_dir)?;
            let ready = Readiness {
                healthz_ok: true,
                ..Readiness::default()
            };
            (
                begun.announce_and_bind(ready, control, lock)?,
                listener,
                counter,
            )
        }
    };
    let incumbent = incumbent.with_config(config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (drain, counter) = (Drain::new(), Arc::new(counter));
        // Non-blocking for tokio while this process accepts; the drain
        // makes it blocking again for a successor that may need it.
        let listener = handoff::tokio::listener(&drain, listener)?;
        tokio::spawn(accept_loop(drain.clone(), listener, Arc::clone(&counter)));
        // Serve supervisor sessions; returns once a successor has taken over.
        handoff::tokio::serve(incumbent, drain, Service { counter }).await?;
        Ok(())
    })
}
