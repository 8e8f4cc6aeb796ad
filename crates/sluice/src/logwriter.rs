//! The log writer: every thread appends its finished lines to one shared
//! buffer, and one thread writes what gathered, a few milliseconds' worth at
//! a time, in one `write(2)`.
//!
//! Two lines a message (the transaction, each delivery) are the operator's
//! record, so at full rate the log is written 50,000 times a second. The
//! general writer this replaces (tracing-appender's non-blocking worker)
//! gave every line a heap buffer of its own, freed on another thread, and
//! wrote whenever its queue ran dry, which under load meant waking the
//! writer, and it a `write(2)`, every few messages: 5 µs of CPU a message in
//! all, an eighth of the server's (docs/benchmarks.md, "The log"). Here a
//! line is a copy under a mutex held for that copy; the writer, once woken
//! by the first line into an empty buffer, lets lines gather for
//! [`LINGER`] before it takes them all, so under load nobody wakes it.
//!
//! Lossless, as the record must be: when the writer falls behind (a stderr
//! that does not keep up) and [`CAPACITY`] bytes wait, a thread with a line
//! to add waits for room instead of dropping it. What the buffer holds when
//! the process is killed is lost, at most [`LINGER`]'s worth, as a queue's
//! lines were before.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long lines gather after the first before they are written. Short
/// enough that a person watching the log sees no delay; long enough that at
/// 50,000 lines a second a write carries hundreds.
pub const LINGER: Duration = Duration::from_millis(5);

/// Bytes waiting before a thread with a line waits for the writer (about
/// 100,000 lines).
pub const CAPACITY: usize = 32 << 20;

struct Pending {
    lines: Vec<u8>,
    /// The writer sleeps on `wake` until a line comes: the one to add the
    /// first line wakes it.
    writer_idle: bool,
    closing: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// The writer waits here for a first line or for closing.
    wake: Condvar,
    /// Threads wait here for room when [`CAPACITY`] is reached.
    room: Condvar,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A thread that panicked while copying a line leaves at worst part
        // of a line: the log goes on.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where tracing's formatter writes: [`MakeWriter`] for the subscriber.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Flushes what is left and stops the writer when dropped; keep it until
/// `main` returns.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread over `out`.
pub fn start<W: Write + Send + 'static>(out: W) -> io::Result<(LogWriter, Guard)> {
    start_with(out, CAPACITY, LINGER)
}

fn start_with<W: Write + Send + 'static>(
    mut out: W,
    capacity: usize,
    linger: Duration,
) -> io::Result<(LogWriter, Guard)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending {
            lines: Vec::with_capacity(64 << 10),
            writer_idle: false,
            closing: false,
        }),
        wake: Condvar::new(),
        room: Condvar::new(),
        capacity,
    });
    let theirs = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_until_closed(&theirs, &mut out, linger))?;
    Ok((
        LogWriter {
            shared: Arc::clone(&shared),
        },
        Guard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn write_until_closed(shared: &Shared, out: &mut dyn Write, linger: Duration) {
    let mut taken = Vec::with_capacity(64 << 10);
    loop {
        let mut pending = shared.lock();
        while pending.lines.is_empty() && !pending.closing {
            pending.writer_idle = true;
            pending = shared.wake.wait(pending).unwrap_or_else(|p| p.into_inner());
        }
        pending.writer_idle = false;
        let closing = pending.closing;
        if !closing {
            // Let the lines of the next few milliseconds join the first.
            drop(pending);
            std::thread::sleep(linger);
            pending = shared.lock();
        }
        std::mem::swap(&mut pending.lines, &mut taken);
        let was_full = taken.len() >= shared.capacity;
        drop(pending);
        if was_full {
            shared.room.notify_all();
        }
        // Nowhere to report a failed write but the log itself: the lines
        // are dropped and the next batch tried.
        let _ = out.write_all(&taken).and_then(|()| out.flush());
        // A burst's buffer is not kept for the quiet that follows.
        if taken.capacity() > 1 << 20 {
            taken = Vec::with_capacity(64 << 10);
        } else {
            taken.clear();
        }
        if closing && shared.lock().lines.is_empty() {
            return;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One event's text, as the formatter hands it over.
pub struct Line<'a> {
    shared: &'a Shared,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let shared = self.shared;
        let mut pending = shared.lock();
        while pending.lines.len() >= shared.capacity && !pending.closing {
            pending = shared.room.wait(pending).unwrap_or_else(|p| p.into_inner());
        }
        pending.lines.extend_from_slice(buf);
        let wake = std::mem::take(&mut pending.writer_idle);
        drop(pending);
        if wake {
            shared.wake.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    /// What the writer thread wrote, and in how many writes.
    #[derive(Clone, Default)]
    struct Out {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicUsize>,
        /// While held by a test, writes wait: a stderr that does not keep up.
        gate: Arc<Mutex<()>>,
    }

    impl Write for Out {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Out {
        fn text(&self) -> String {
            String::from_utf8(self.bytes.lock().unwrap().clone()).unwrap()
        }
    }

    fn line(writer: &LogWriter, text: &str) {
        writer.make_writer().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn every_line_of_every_thread_is_written_whole_and_in_order() {
        let out = Out::default();
        let (writer, guard) = start(out.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        line(
                            &writer,
                            &format!("thread={t} line={i} {}\n", "x".repeat(i % 97)),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Closing writes what is left.
        drop(guard);
        let text = out.text();
        let mut next = [0usize; 4];
        for l in text.lines() {
            let (t, rest) = l
                .strip_prefix("thread=")
                .and_then(|l| l.split_once(" line="))
                .unwrap_or_else(|| panic!("a broken line: {l:?}"));
            let t: usize = t.parse().unwrap();
            let (i, pad) = rest.split_once(' ').unwrap();
            let i: usize = i.parse().unwrap();
            assert_eq!(i, next[t], "thread {t}'s lines in order");
            assert_eq!(pad, "x".repeat(i % 97), "line {i} of thread {t} whole");
            next[t] += 1;
        }
        assert_eq!(next, [5_000; 4], "every line written");
        // 20,000 lines came as fast as four threads could write them; a
        // write each, as before, would be 20,000 writes.
        let writes = out.writes.load(Ordering::SeqCst);
        assert!(writes <= 2_000, "{writes} writes for 20,000 lines");
    }

    #[test]
    fn a_lone_line_is_written_without_another_to_push_it() {
        let out = Out::default();
        let (writer, _guard) = start(out.clone()).unwrap();
        for n in 1..=3 {
            // Each time after the writer has gone idle again.
            line(&writer, &format!("alone {n}\n"));
            let deadline = Instant::now() + Duration::from_secs(10);
            while out.text().lines().count() < n {
                assert!(
                    Instant::now() < deadline,
                    "line {n} never written: {:?}",
                    out.text()
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        assert_eq!(out.text(), "alone 1\nalone 2\nalone 3\n");
    }

    #[test]
    fn a_full_buffer_makes_the_logger_wait_instead_of_dropping_lines() {
        let out = Out::default();
        let (writer, guard) = start_with(out.clone(), 1_000, Duration::from_millis(1)).unwrap();
        // Taken after the guard, so that a failing assertion lets the
        // writer go on before the guard waits for it.
        let gate = out.gate.lock().unwrap();
        let added = Arc::new(AtomicUsize::new(0));
        let logger = {
            let (writer, added) = (writer.clone(), Arc::clone(&added));
            std::thread::spawn(move || {
                for i in 0..1_000 {
                    line(&writer, &format!("{i:09}\n"));
                    added.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        // The writer is stuck in its first write, so at most one batch was
        // taken and then 1,000 bytes (100 lines) fit; the logger must wait.
        let deadline = Instant::now() + Duration::from_secs(10);
        while added.load(Ordering::SeqCst) < 100 {
            assert!(
                Instant::now() < deadline,
                "the logger never filled the buffer"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(50));
        let waiting_at = added.load(Ordering::SeqCst);
        assert!(
            waiting_at < 1_000,
            "the logger did not wait: {waiting_at} lines added"
        );
        drop(gate);
        logger.join().unwrap();
        drop(guard);
        let text = out.text();
        let expected: String = (0..1_000).map(|i| format!("{i:09}\n")).collect();
        assert_eq!(
            text, expected,
            "every line, in order, once the writer went on"
        );
    }
}
