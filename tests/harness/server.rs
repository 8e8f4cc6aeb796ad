//! Runs `sluice serve` as a child process on a kernel-chosen loopback port
//! and keeps its log lines for the test to read.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::binary::sluice_bin;

/// How long a server may take to start listening. Generous: the first start
/// in a test process may wait on spool recovery in a slow sandbox.
const START_LIMIT: Duration = Duration::from_secs(20);

/// The hostname every harness config sets (greeting, EHLO, `Received:`).
pub const HOSTNAME: &str = "mx.example.test";

/// How to run a server; [`Server::start`] covers the common case.
#[derive(Debug, Clone, Default)]
pub struct ServerBuilder {
    extra: String,
    default_config: bool,
    fsize_limit: Option<u64>,
    ignore_sigxfsz: bool,
    keep_queued: bool,
    env: Vec<(String, String)>,
    env_removed: Vec<String>,
    deep_spool: bool,
    binary: Option<PathBuf>,
    working_dir: Option<PathBuf>,
    default_plugins: bool,
}

/// Delivery that can never succeed: local mail goes to an LMTP server and
/// remote mail to a smarthost, both at 127.0.0.1:9 where nothing listens,
/// and the retry is an hour away. Every message stays in the queue, so
/// tests about receiving can compare the queue with what they sent.
const KEEP_QUEUED: &str = "\n[delivery]\nlmtp = \"127.0.0.1:9\"\nsmarthost = \"127.0.0.1:9\"\n\
                           retry_schedule_secs = [3600]\n";

impl ServerBuilder {
    /// TOML tables appended to the harness's base config (which sets
    /// `hostname`, `spool_dir`, one `[[listen]]` on 127.0.0.1:0 and a
    /// `[local]` with domain `example.test` and users postmaster, alice and
    /// bob; email authentication off). A `[local]`, `[[listen]]` or
    /// `[authentication]` table here replaces the base one.
    pub fn config(mut self, extra: &str) -> Self {
        self.extra = extra.to_string();
        self
    }

    /// Runs `sluice serve` with no `--config` at all (embedded defaults,
    /// 127.0.0.1:2525, spool `./var/spool`) in a fresh working directory.
    pub fn default_config(mut self) -> Self {
        self.default_config = true;
        self
    }

    /// Runs the server under `prlimit --fsize=<bytes>` (RLIMIT_FSIZE): a
    /// write past `bytes` raises SIGXFSZ, whose default action kills the
    /// process; a process that ignores or catches it sees the write fail
    /// with EFBIG instead, as on a full disk.
    pub fn file_size_limit(mut self, bytes: u64) -> Self {
        self.fsize_limit = Some(bytes);
        self
    }

    /// Starts the server with SIGXFSZ already ignored (a shell `trap` that
    /// survives `exec`), so that [`ServerBuilder::file_size_limit`] acts as
    /// a full disk whether or not the server ignores the signal itself.
    pub fn ignore_sigxfsz(mut self) -> Self {
        self.ignore_sigxfsz = true;
        self
    }

    /// Keeps every accepted message in the queue (see `KEEP_QUEUED`): for
    /// tests about receiving, which check the queue against what they sent.
    pub fn keep_queued(mut self) -> Self {
        self.keep_queued = true;
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts the server without `key` in its environment (as systemd and
    /// container runtimes start it without `$USER`).
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env_removed.push(key.to_string());
        self
    }

    /// Leaves the filter chain to the defaults (the shipped plugins) when
    /// the config has no `[[plugin]]`, instead of `plugin = []`.
    pub fn default_plugins(mut self) -> Self {
        self.default_plugins = true;
        self
    }

    /// Runs this executable instead of the one cargo built (an installed
    /// copy, say).
    pub fn binary(mut self, path: &Path) -> Self {
        self.binary = Some(path.to_path_buf());
        self
    }

    /// Runs the server in this working directory instead of its temp dir.
    pub fn working_dir(mut self, dir: &Path) -> Self {
        self.working_dir = Some(dir.to_path_buf());
        self
    }

    /// Puts the spool several directories deep, so that its path alone is
    /// longer than a Unix socket address holds (107 octets), as
    /// per-instance and container-volume paths often are.
    pub fn deep_spool(mut self) -> Self {
        self.deep_spool = true;
        self
    }

    pub fn start(self) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("sluice-e2e-")
            .tempdir()
            .expect("a temp dir");
        let config_path = dir.path().join("sluice.toml");
        let spool_dir = if self.default_config {
            // The working directory is a fresh temp dir, outside the source
            // tree: the shipped plugins must be found from the executable.
            dir.path().join("var/spool")
        } else {
            let mut spool = dir.path().join("spool");
            if self.deep_spool {
                while spool.as_os_str().len() <= 140 {
                    spool.push("per-instance-volume-directory");
                }
            }
            let mut extra = self.extra.clone();
            if self.keep_queued {
                extra.push_str(KEEP_QUEUED);
            }
            std::fs::write(
                &config_path,
                base_config(&spool, &extra, self.default_plugins),
            )
            .expect("write the config");
            spool
        };
        let mut server = Server {
            builder: self,
            dir,
            config_path,
            spool_dir,
            child: None,
            addr: None,
            logs: Arc::new(Logs::default()),
            past_logs: Vec::new(),
        };
        server.launch();
        server
    }
}

fn base_config(spool: &Path, extra: &str, default_plugins: bool) -> String {
    let mut text = format!(
        "hostname = \"{HOSTNAME}\"\nspool_dir = \"{}\"\n",
        spool.display()
    );
    // No filter plugins unless the test asks for them: most tests are about
    // other parts, and the plugins have tests of their own (tests/plugins.rs).
    if !default_plugins && !extra.contains("[[plugin]]") && !extra.contains("plugin =") {
        text.push_str("plugin = []\n");
    }
    text.push('\n');
    text.push_str(extra);
    text.push('\n');
    if !extra.contains("[[listen]]") {
        text.push_str("\n[[listen]]\naddr = \"127.0.0.1:0\"\n");
    }
    // No email authentication unless the test asks for it (and brings the
    // DNS it needs, tests/email_auth.rs): other tests compare stored
    // messages byte for byte, and must not wait on the machine's resolver.
    if !extra.contains("[authentication]") {
        text.push_str(
            "\n[authentication]\nspf = false\ndkim = false\ndmarc = false\narc = false\niprev = false\n",
        );
    }
    // The metrics endpoint on a port of its own only for the tests that
    // scrape it (tests/metrics.rs): the default port would be taken by the
    // first of the servers running side by side.
    if !extra.contains("[metrics]") {
        text.push_str("\n[metrics]\nlisten = \"\"\n");
    }
    if !extra.contains("[local]") {
        text.push_str(
            "\n[local]\ndomains = [\"example.test\"]\nusers = [\"postmaster\", \"alice\", \"bob\"]\n\
             aliases = { root = \"postmaster\" }\n",
        );
    }
    text
}

/// A running (or stopped) `sluice serve` and its temp directory, which holds
/// the config and the spool and is removed when the `Server` is dropped.
#[derive(Debug)]
pub struct Server {
    builder: ServerBuilder,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    spool_dir: PathBuf,
    child: Option<Child>,
    addr: Option<SocketAddr>,
    logs: Arc<Logs>,
    past_logs: Vec<String>,
}

impl Server {
    /// Starts a server with the base config plus `extra` TOML tables.
    pub fn start(extra: &str) -> Server {
        Server::builder().config(extra).start()
    }

    /// Like [`Server::start`], with every accepted message kept in the queue
    /// ([`ServerBuilder::keep_queued`]).
    pub fn start_receiving(extra: &str) -> Server {
        Server::builder().config(extra).keep_queued().start()
    }

    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The address it listens on (changes across restarts: port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("the server is not running")
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    pub fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The temp directory (the working directory of a default-config server).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is not running").id()
    }

    /// Every log line of every run of this server so far.
    pub fn logs(&self) -> Vec<String> {
        let mut all = self.past_logs.clone();
        all.extend(self.logs.lines.lock().expect("log lock").iter().cloned());
        all
    }

    /// The addresses of the first `n` listeners, in the order of the
    /// config's `[[listen]]` tables (each logs `listening on` as it starts).
    pub fn listen_addrs(&self, n: usize) -> Vec<SocketAddr> {
        let read = |lines: &[String]| -> Vec<SocketAddr> {
            lines
                .iter()
                .filter_map(|l| l.split("listening on ").nth(1))
                .filter_map(|rest| rest.split_whitespace().next())
                .filter_map(|a| a.parse().ok())
                .collect()
        };
        crate::wait_for(Duration::from_secs(10), || {
            let addrs = read(&self.logs.lines.lock().expect("log lock"));
            (addrs.len() >= n).then(|| addrs[..n].to_vec())
        })
        .unwrap_or_else(|| {
            panic!(
                "fewer than {n} listeners; logs:\n{}",
                self.logs().join("\n")
            )
        })
    }

    /// Waits (at most `limit`) for a log line of the current run that
    /// contains `needle`, and returns it.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> Option<String> {
        self.logs.wait_for(limit, |line| line.contains(needle))
    }

    /// Like [`Server::wait_for_log`], for a line that contains every one of
    /// `needles`: lines from the event loops and the delivery threads
    /// interleave, so one needle (a queue id) can match the wrong event.
    pub fn wait_for_log_with(&self, needles: &[&str], limit: Duration) -> Option<String> {
        self.logs
            .wait_for(limit, |line| needles.iter().all(|n| line.contains(n)))
    }

    /// The lines of every run so far that contain every one of `needles`,
    /// once at least `n` do (or `limit` has passed). Assertions on how many
    /// lines something logged wait here: the server writes its log a few
    /// milliseconds after the event, so a line can trail the reply that
    /// follows it.
    pub fn wait_for_log_lines(&self, needles: &[&str], n: usize, limit: Duration) -> Vec<String> {
        let matching = || {
            self.logs()
                .into_iter()
                .filter(|l| needles.iter().all(|needle| l.contains(needle)))
                .collect::<Vec<_>>()
        };
        crate::wait_for(limit, || {
            let lines = matching();
            (lines.len() >= n).then_some(lines)
        })
        .unwrap_or_else(matching)
    }

    /// SIGKILL by PID, then reap: the crash the spool must survive.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill sends SIGKILL to this child's PID only.
            child.kill().expect("SIGKILL the server");
            child.wait().expect("reap the server");
            self.end_run();
        }
    }

    /// SIGTERM by PID, then waits at most `limit` for the exit, returning its
    /// status. Panics (after a SIGKILL) if the server does not exit in time.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        self.send_sigterm();
        self.wait_exit(limit)
    }

    /// Sends SIGTERM without waiting (see [`Server::wait_exit`]).
    pub fn send_sigterm(&self) {
        self.send_signal("TERM");
    }

    /// Sends the signal named `name` (`"INT"`, `"TERM"`, ...) by PID.
    pub fn send_signal(&self, name: &str) {
        let pid = self.pid().to_string();
        // `kill(1)` by PID: the workspace forbids the unsafe libc call.
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(&pid)
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// Waits at most `limit` for the server to exit; SIGKILLs it and panics
    /// if it does not.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("the server is not running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("wait for the server") {
                self.child = None;
                self.end_run();
                return status;
            }
            if Instant::now() >= deadline {
                self.kill9();
                panic!(
                    "the server did not exit within {limit:?}; logs:\n{}",
                    self.logs().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            None => true,
            Some(child) => child.try_wait().expect("wait for the server").is_some(),
        }
    }

    /// How the process ended, if it has (without waiting).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("wait for the server"))
    }

    /// Starts the server again on the same config and spool (kill or
    /// terminate it first).
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart() needs the server stopped first"
        );
        self.launch();
    }

    /// Like [`Server::restart`], but without the file size limit (after a
    /// disk-full test, the disk has room again).
    pub fn restart_unlimited(&mut self) {
        self.builder.fsize_limit = None;
        self.restart();
    }

    fn end_run(&mut self) {
        self.addr = None;
        // The reader thread stops at EOF on its own; what it has is kept.
        let lines = self.logs.lines.lock().expect("log lock").clone();
        self.past_logs.extend(lines);
        self.logs = Arc::new(Logs::default());
    }

    fn launch(&mut self) {
        let bin = self
            .builder
            .binary
            .clone()
            .unwrap_or_else(|| sluice_bin().to_path_buf());
        let mut cmd = match self.builder.fsize_limit {
            Some(limit) => {
                // `exec` all the way down, so the PID we hold is the server's.
                let trap = if self.builder.ignore_sigxfsz {
                    "trap '' XFSZ; "
                } else {
                    ""
                };
                let mut cmd = Command::new("sh");
                cmd.arg("-c")
                    .arg(format!("{trap}exec prlimit --fsize=\"$0\" -- \"$@\""))
                    .arg(limit.to_string())
                    .arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        cmd.arg("serve");
        if !self.builder.default_config {
            cmd.arg("--config").arg(&self.config_path);
        }
        for key in &self.builder.env_removed {
            cmd.env_remove(key);
        }
        cmd.current_dir(
            self.builder
                .working_dir
                .as_deref()
                .unwrap_or(self.dir.path()),
        )
        .env("SLUICE_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(self.builder.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start sluice serve");
        let logs = Arc::new(Logs::default());
        spawn_log_reader(
            child.stderr.take().expect("piped stderr"),
            Arc::clone(&logs),
        );
        self.logs = logs;
        self.child = Some(child);

        let found = self
            .logs
            .wait_for(START_LIMIT, |l| l.contains("listening on "));
        let Some(line) = found else {
            let exited = self.has_exited();
            self.kill9();
            panic!(
                "the server did not log `listening on` within {START_LIMIT:?} (exited: {exited}); logs:\n{}",
                self.logs().join("\n")
            );
        };
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the address from {line:?}"));
        self.addr = Some(addr);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug, Default)]
struct Logs {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

impl Logs {
    fn wait_for(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut lines = self.lines.lock().expect("log lock");
        let mut seen = 0;
        loop {
            if let Some(l) = lines[seen..].iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            seen = lines.len();
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            lines = self
                .grew
                .wait_timeout(lines, deadline - now)
                .expect("log lock")
                .0;
        }
    }
}

fn spawn_log_reader(stderr: ChildStderr, logs: Arc<Logs>) {
    let echo = std::env::var_os("SLUICE_E2E_ECHO").is_some();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = strip_ansi(&String::from_utf8_lossy(&buf))
                        .trim_end()
                        .to_string();
                    if echo {
                        eprintln!("[sluice] {line}");
                    }
                    logs.lines.lock().expect("log lock").push(line);
                    logs.grew.notify_all();
                }
            }
        }
    });
}

/// Drops terminal colour sequences, in case the logger colours its output
/// despite NO_COLOR.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte(@..~)
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
