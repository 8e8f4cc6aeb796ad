//! The `[metrics]` HTTP endpoint: `GET /metrics` for Prometheus and
//! `GET /healthz` for load balancers and supervisors.
//!
//! One thread, one request per connection, `Connection: close`: a scraper
//! comes every few seconds, so there is nothing to gain from keep-alive or
//! a thread pool, and a blocking `std::net` loop is short enough to read in
//! one sitting. A client that stalls is cut off by the socket timeouts; it
//! holds up the next scrape for at most that long, never the mail.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a client may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests are a line and a few headers; anything longer is not a scraper.
const MAX_REQUEST: usize = 8 * 1024;

/// Whether the server accepts mail now, for `/healthz`.
pub type Health = Arc<dyn Fn() -> bool + Send + Sync>;

/// A running endpoint; dropping it stops the thread.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish()
    }
}

/// Binds first (a taken port is a start-up error), serves once
/// [`MetricsServer::start`] knows how to judge health.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| format!("cannot listen for [metrics] on {addr}: {e}"))
}

impl MetricsServer {
    pub fn start(listener: TcpListener, health: Health) -> Result<MetricsServer, String> {
        let addr = listener
            .local_addr()
            .map_err(|e| format!("metrics listener: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::Acquire) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        serve_one(stream, &health);
                    }
                }
            })
            .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept call so the thread sees the flag.
        let woken = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok();
        if let (true, Some(thread)) = (woken, self.thread.take()) {
            let _ = thread.join();
        }
    }
}

fn serve_one(mut stream: TcpStream, health: &Health) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let (status, content_type, body) = match read_request(&mut stream) {
        Err(Refusal(status, why)) => (status, "text/plain; charset=utf-8", format!("{why}\n")),
        Ok(Request { method, path }) => respond(&method, &path, health),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
}

struct Request {
    method: String,
    path: String,
}

struct Refusal(&'static str, &'static str);

fn read_request(stream: &mut TcpStream) -> Result<Request, Refusal> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_REQUEST {
            return Err(Refusal(
                "431 Request Header Fields Too Large",
                "request too large",
            ));
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(Refusal("400 Bad Request", "incomplete request")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(target), Some(version)) if version.starts_with("HTTP/1.") => {
            // The query string (Prometheus sends none; curl users might).
            let path = target.split('?').next().unwrap_or(target);
            Ok(Request {
                method: method.to_owned(),
                path: path.to_owned(),
            })
        }
        _ => Err(Refusal("400 Bad Request", "not an HTTP/1 request line")),
    }
}

fn respond(method: &str, path: &str, health: &Health) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" {
        return ("405 Method Not Allowed", TEXT, "GET only\n".into());
    }
    match path {
        "/metrics" => (
            "200 OK",
            sluice_metrics::CONTENT_TYPE,
            sluice_metrics::render(),
        ),
        "/healthz" if health() => ("200 OK", TEXT, "ok: accepting mail\n".into()),
        "/healthz" => (
            "503 Service Unavailable",
            TEXT,
            "shutting down: not accepting mail\n".into(),
        ),
        _ => (
            "404 Not Found",
            TEXT,
            "not here: try /metrics or /healthz\n".into(),
        ),
    }
}

/// The queue's gauges, read from the scheduler at each scrape.
pub fn queue_collector(
    scheduler: sluice_delivery::scheduler::SchedulerHandle,
) -> impl Fn(&mut sluice_metrics::Exposition) + Send + Sync + 'static {
    use sluice_delivery::scheduler::{QueueState, StateCount};
    use sluice_metrics::Kind;
    move |e| {
        // A scheduler busy for a whole second gets no gauges this time:
        // a gap in the graph, not a stuck scrape.
        let Some(stats) = scheduler.stats(Duration::from_secs(1)) else {
            return;
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let gauge = |e: &mut sluice_metrics::Exposition,
                     name: &str,
                     help: &str,
                     value: &dyn Fn(&StateCount) -> f64| {
            e.family(name, help, Kind::Gauge);
            for state in QueueState::ALL {
                e.sample(
                    name,
                    &[("state", state.name())],
                    value(&stats.0[state as usize]),
                );
            }
        };
        gauge(
            e,
            "sluice_queue_messages",
            "Messages in the queue, by state.",
            &|c| c.messages as f64,
        );
        gauge(
            e,
            "sluice_queue_bytes",
            "Size of the messages in the queue, by state.",
            &|c| c.bytes as f64,
        );
        gauge(
            e,
            "sluice_queue_oldest_age_seconds",
            "Age of the oldest message in each state (0 when there is none).",
            &|c| {
                c.oldest_arrival_unix_ms
                    .map_or(0.0, |t| now_ms.saturating_sub(t) as f64 / 1000.0)
            },
        );
    }
}

/// The spool's segment files, read at scrape time from the counters its
/// threads keep: whether the next segment is ready when the head fills
/// (`origin="prepared"`) or is made then (`"new"`), and what compaction
/// and deletion did.
pub fn spool_collector(
    spool: sluice_spool::SpoolHandle,
) -> impl Fn(&mut sluice_metrics::Exposition) + Send + Sync + 'static {
    use sluice_metrics::Kind;
    move |e| {
        let stats = spool.stats();
        let name = "sluice_spool_segments_created_total";
        e.family(
            name,
            "Segment files begun, by origin: a file prepared ahead (zeros written and synced) or one made when it was needed.",
            Kind::Counter,
        );
        let prepared = stats.segments_from_prepared;
        e.sample(name, &[("origin", "prepared")], prepared as f64);
        let new = stats.segments_created.saturating_sub(prepared);
        e.sample(name, &[("origin", "new")], new as f64);
        let counters: [(&str, &str, u64); 3] = [
            (
                "sluice_spool_segments_prepared_total",
                "Files written full of zeros ahead of need, to become segments.",
                stats.segments_prepared,
            ),
            (
                "sluice_spool_segments_deleted_total",
                "Segment files deleted because nothing in them was live.",
                stats.segments_deleted,
            ),
            (
                "sluice_spool_messages_compacted_total",
                "Live messages copied forward out of a mostly dead segment.",
                stats.messages_compacted,
            ),
        ];
        for (name, help, value) in counters {
            e.family(name, help, Kind::Counter);
            e.sample(name, &[], value as f64);
        }
    }
}
