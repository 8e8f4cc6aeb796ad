//! The queue control socket: how `sluice queue flush|hold|release|delete|bounce`
//! reaches a running server, and how `list`, `summary` and `show` read its
//! in-memory queue.
//!
//! A Unix socket `control.sock` in the spool directory, mode 0600, reachable
//! however long the spool directory's path is ([`sluice_sys::unix_socket`]).
//! Only the
//! user the server runs as (and root) can connect, which is the "local
//! administrator" of the queue, and nothing listens on the network. The
//! protocol is one request line per connection and a reply that starts with
//! `ok` or `error: <reason>`; a command for one message that the queue does
//! not hold (never queued, or already delivered, bounced or deleted) gets
//! `error: no such message: <id>`. `list`, `summary` and `show` answer `ok`
//! on a line of its own, then their text, streamed, until the server closes
//! the connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sluice_delivery::scheduler::SchedulerHandle;
use sluice_spool::{QueueId, SpoolHandle};
use sluice_sys::unix_socket;

/// The socket's name inside the spool directory.
pub const SOCKET_NAME: &str = "control.sock";

/// A running control socket; dropping it stops the thread and removes the file.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    pub fn start(
        spool_dir: &Path,
        scheduler: SchedulerHandle,
        spool: SpoolHandle,
    ) -> Result<ControlServer, String> {
        let path = spool_dir.join(SOCKET_NAME);
        // A file left by a server that was killed: nobody answers on it.
        if path.exists() && unix_socket::connect(&path).is_err() {
            let _ = std::fs::remove_file(&path);
        }
        let listener = unix_socket::bind(&path)
            .map_err(|e| format!("cannot create the control socket {}: {e}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::Acquire) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        serve_one(stream, &scheduler, &spool);
                    }
                }
            })
            .map_err(|e| format!("cannot start the control thread: {e}"))?;
        Ok(ControlServer {
            path,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept call so the thread sees the flag.
        let woken = unix_socket::connect(&self.path).is_ok();
        if let Some(thread) = self.thread.take() {
            if woken {
                let _ = thread.join();
            } else {
                // The socket file is gone (someone removed it, or the spool
                // directory): nothing can wake the accept now, and waiting
                // would hang the shutdown. The thread only answers operators
                // and ends with the process.
                tracing::warn!(
                    path = %self.path.display(),
                    "control socket unreachable at shutdown; not waiting for its thread"
                );
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_one(stream: UnixStream, scheduler: &SchedulerHandle, spool: &SpoolHandle) {
    // An operator's command is one short line; a peer that sends nothing must
    // not hold the control thread.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    if BufReader::new((&stream).take(1024))
        .read_line(&mut line)
        .is_err()
    {
        return;
    }
    if let Some(result) = read_queue(line.trim(), spool, &stream) {
        tracing::info!(
            command = %line.trim(),
            result = result.as_ref().err().map(String::as_str).unwrap_or("ok"),
            "queue read"
        );
        return;
    }
    let reply = execute(line.trim(), scheduler);
    tracing::info!(
        command = line.trim(),
        reply = reply.lines().next().unwrap_or(""),
        "queue control"
    );
    let mut stream = &stream;
    let _ = stream.write_all(reply.as_bytes());
}

/// What `list`, `summary` and `show` ask for.
enum QueueRead {
    List(crate::queue::Filter),
    Summary(crate::queue::Filter),
    Show(QueueId),
}

/// `list`, `summary` and `show`, answered from the live spool index and
/// streamed; `None` for the other commands.
fn read_queue(line: &str, spool: &SpoolHandle, stream: &UnixStream) -> Option<Result<(), String>> {
    let mut words = line.split_whitespace();
    let verb = words.next()?;
    if !matches!(verb, "list" | "summary" | "show") {
        return None;
    }
    // The reader may be slow (a pager); it must not hold the control
    // thread for ever.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut out = stream;
    let now = crate::queue::now_ms();
    let read = match verb {
        "show" => match words.next().map(str::parse::<QueueId>) {
            Some(Ok(id)) => Ok(QueueRead::Show(id)),
            _ => Err("a queue id is needed".to_string()),
        },
        "list" => crate::queue::Filter::from_words(words).map(QueueRead::List),
        _ => crate::queue::Filter::from_words(words).map(QueueRead::Summary),
    };
    Some(match read {
        Err(e) => {
            let _ = out.write_all(format!("error: {e}\n").as_bytes());
            Err(e)
        }
        Ok(read) => {
            // A message that is not queued is known only once looked up;
            // its error follows the `ok`, as text the client shows.
            if out.write_all(b"ok\n").is_err() {
                return Some(Err("the client left".into()));
            }
            let written = match read {
                QueueRead::Show(id) => crate::queue::write_show(spool, id, now, &mut out),
                QueueRead::List(filter) => crate::queue::write_list(spool, &filter, now, &mut out),
                QueueRead::Summary(filter) => {
                    crate::queue::write_summary(spool, &filter, now, &mut out)
                }
            };
            if let Err(e) = &written {
                let _ = out.write_all(format!("error: {e}\n").as_bytes());
            }
            written
        }
    })
}

fn execute(line: &str, scheduler: &SchedulerHandle) -> String {
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or("");
    let arg = words.next();
    if words.next().is_some() {
        return "error: one argument at most\n".into();
    }
    // Asking the scheduler first tells the operator about a mistyped or
    // finished id, where the command itself would silently do nothing. The
    // message can still finish between the two; then the command is a no-op.
    let id = || -> Result<QueueId, String> {
        let text = arg.ok_or("a queue id is needed")?;
        let id = text
            .parse::<QueueId>()
            .map_err(|_| format!("{text:?} is not a queue id"))?;
        match scheduler.status(id) {
            Some(_) => Ok(id),
            None => Err(format!("no such message: {id}")),
        }
    };
    let result = match verb {
        "flush" if arg == Some("all") || arg.is_none() => {
            scheduler.flush(None);
            Ok("every deferred message is due now".to_string())
        }
        "flush" => id().map(|id| {
            scheduler.flush(Some(id));
            format!("{id} is due now")
        }),
        "hold" => id().map(|id| {
            scheduler.hold(id);
            format!("{id} is held")
        }),
        "release" => id().map(|id| {
            scheduler.release(id);
            format!("{id} is released")
        }),
        "delete" => id().map(|id| {
            scheduler.delete(id);
            format!("{id} is deleted")
        }),
        "bounce" => id().map(|id| {
            scheduler.bounce(id);
            format!("{id} is bounced to its sender")
        }),
        other => Err(format!("unknown command {other:?}")),
    };
    match result {
        Ok(text) => format!("ok {text}\n"),
        Err(e) => format!("error: {e}\n"),
    }
}

/// Why [`stream`] did not copy an answer.
#[derive(Debug)]
pub enum StreamError {
    /// Nothing answers on the socket: no server runs for this spool.
    NoServer,
    /// The server answered with an error, or the connection failed midway.
    Failed(String),
}

/// Sends `list`, `summary` or `show` to the server that owns `spool_dir` and
/// copies its answer to `out` as it comes.
pub fn stream(spool_dir: &Path, command: &str, out: &mut impl Write) -> Result<(), StreamError> {
    let path = spool_dir.join(SOCKET_NAME);
    let Ok(mut stream) = unix_socket::connect(&path) else {
        return Err(StreamError::NoServer);
    };
    let failed = |what: &str, e: std::io::Error| {
        StreamError::Failed(format!("{what} {}: {e}", path.display()))
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| failed("cannot set a timeout on", e))?;
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(|e| failed("cannot send to", e))?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut first = String::new();
    reader
        .read_line(&mut first)
        .map_err(|e| failed("no reply from", e))?;
    if first.is_empty() {
        // Accepted, then closed unanswered: a server that stopped meanwhile.
        return Err(StreamError::NoServer);
    }
    if first != "ok\n" {
        let text = first.trim_end();
        return Err(StreamError::Failed(
            text.strip_prefix("error: ").unwrap_or(text).to_string(),
        ));
    }
    // An error found midway (a message gone between the ok and its
    // lookup) comes as a last line `error: …`: everything but the last line
    // is copied as it comes, the last one once the server has closed.
    let mut pending: Vec<u8> = Vec::new();
    let write_failed = |e: std::io::Error| StreamError::Failed(e.to_string());
    loop {
        let chunk = reader
            .fill_buf()
            .map_err(|e| failed("the answer broke off from", e))?;
        if chunk.is_empty() {
            break;
        }
        pending.extend_from_slice(chunk);
        let n = chunk.len();
        reader.consume(n);
        let body = &pending[..pending.len() - 1];
        if let Some(last_line) = body.iter().rposition(|&b| b == b'\n').map(|p| p + 1) {
            out.write_all(&pending[..last_line]).map_err(write_failed)?;
            pending.drain(..last_line);
        }
    }
    match pending.strip_prefix(b"error: ") {
        Some(e) => Err(StreamError::Failed(
            String::from_utf8_lossy(e).trim_end().to_string(),
        )),
        None => out.write_all(&pending).map_err(write_failed),
    }
}

/// Sends one command to the server that owns `spool_dir`; returns its reply.
pub fn request(spool_dir: &Path, command: &str) -> Result<String, String> {
    let path = spool_dir.join(SOCKET_NAME);
    let mut stream = unix_socket::connect(&path).map_err(|e| {
        format!(
            "no running server answers on {} ({e}); start `sluice serve` for this spool",
            path.display()
        )
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(|e| format!("cannot send to {}: {e}", path.display()))?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(|e| format!("no reply from {}: {e}", path.display()))?;
    match reply.strip_prefix("ok ") {
        Some(text) => Ok(text.trim_end().to_string()),
        None => Err(reply
            .trim_end()
            .strip_prefix("error: ")
            .unwrap_or(reply.trim_end())
            .to_string()),
    }
}
