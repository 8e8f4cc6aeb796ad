//! A real mail store for the delivery tests: a private Dovecot (the Debian
//! packages `dovecot-core`, `dovecot-lmtpd`, `dovecot-imapd`) with LMTP on a
//! unix socket and on a loopback port, and IMAP on another loopback port.
//!
//! Everything it uses lives in one temp directory: its config, base_dir (the
//! sockets and PID file), log, users file and the Maildirs, one per user at
//! `<mail_root>/<user>`, the layout Sluice's own `[local] maildir_root`
//! writes. So the same directory can be served by Dovecot after Sluice wrote
//! it, or filled by Dovecot through LMTP. Nothing of the system Dovecot is
//! read or touched.
//!
//! Dovecot runs its mail processes under one non-root uid. As root (CI), that
//! is the system user `mail`; as anyone else, the user running the tests,
//! with Dovecot's internal and login users set to it too.
//!
//! The master runs in the foreground (`-F`) as our child; it is stopped by
//! its PID (SIGTERM, so it stops its own children, then SIGKILL if it does
//! not exit in time) when the [`Dovecot`] is dropped.

mod imap;

pub use imap::{Fetched, Imap, MailboxStatus, Untagged};

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every user's password (plaintext auth is allowed on loopback here).
pub const PASSWORD: &str = "secret";

/// How long one Dovecot may take to answer on all its listeners.
const START_LIMIT: Duration = Duration::from_secs(20);
/// Starts tried before giving up: each may lose a port to another process
/// between our picking it and Dovecot binding it.
const START_ATTEMPTS: usize = 5;
/// How long the master may take to stop its children and exit on SIGTERM
/// (about 3 s in the sandbox) before it gets SIGKILL.
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// How long a probe waits for a greeting.
const PROBE_WAIT: Duration = Duration::from_secs(2);

const INSTALL: &str = "Dovecot is needed by the mail store tests: run tests/prereqs.sh, \
                       or install the Debian packages dovecot-core, dovecot-lmtpd and dovecot-imapd";

/// Who Dovecot knows, before it starts.
#[derive(Debug, Clone, Default)]
pub struct DovecotBuilder {
    users: Vec<(String, bool)>,
}

impl DovecotBuilder {
    /// A mailbox `name` (the local part; any domain maps to it).
    pub fn user(mut self, name: &str) -> Self {
        self.users.push((name.to_string(), false));
        self
    }

    /// A mailbox `name` whose quota is one byte: LMTP accepts it at RCPT and
    /// fails it after the data with `552 5.2.2` (Dovecot does not check quota
    /// at RCPT unless `lmtp_rcpt_check_quota` is set).
    pub fn full_user(mut self, name: &str) -> Self {
        self.users.push((name.to_string(), true));
        self
    }

    pub fn start(self) -> Dovecot {
        let binary = dovecot_binary();
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            match Dovecot::try_start(&binary, &self.users) {
                Ok(dovecot) => return dovecot,
                Err(error) => last_error = error,
            }
        }
        panic!("dovecot would not start in {START_ATTEMPTS} attempts: {last_error}");
    }
}

/// A running private Dovecot; stopped by PID when dropped.
#[derive(Debug)]
pub struct Dovecot {
    child: Option<Child>,
    dir: tempfile::TempDir,
    lmtp_addr: SocketAddr,
    imap_addr: SocketAddr,
    mail_owner: Option<(u32, u32)>,
}

impl Dovecot {
    pub fn builder() -> DovecotBuilder {
        DovecotBuilder::default()
    }

    /// The unix socket of its LMTP service.
    pub fn lmtp_socket(&self) -> PathBuf {
        self.dir.path().join("lmtp")
    }

    /// `[delivery] lmtp` for the unix socket: `unix:/…/lmtp`.
    pub fn lmtp_unix_target(&self) -> String {
        format!("unix:{}", self.lmtp_socket().display())
    }

    /// Its LMTP service on 127.0.0.1.
    /// The auth-client socket (what Postfix's `smtpd_sasl_path` names):
    /// every user's password is [`PASSWORD`].
    pub fn auth_socket(&self) -> PathBuf {
        self.dir.path().join("auth-client")
    }

    pub fn lmtp_addr(&self) -> SocketAddr {
        self.lmtp_addr
    }

    /// Its IMAP service on 127.0.0.1 (no TLS).
    pub fn imap_addr(&self) -> SocketAddr {
        self.imap_addr
    }

    /// The directory that holds every user's Maildir (`<root>/<user>`): what
    /// Sluice's `[local] maildir_root` is set to when Dovecot is to serve
    /// what Sluice wrote.
    pub fn mail_root(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    pub fn maildir(&self, user: &str) -> PathBuf {
        self.mail_root().join(user)
    }

    /// A logged-in IMAP session of `user`.
    pub fn imap(&self, user: &str) -> Imap {
        Imap::login(self.imap_addr, user, PASSWORD)
    }

    /// Dovecot's log so far (its lines name every delivery and refusal).
    pub fn log(&self) -> String {
        let mut log =
            std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default();
        log.push_str(&std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default());
        log
    }

    /// Gives what another uid wrote under `path` (Sluice running as root
    /// writes 0600 files and 0700 directories) to Dovecot's mail user, as a
    /// deployment that runs both as one mail uid has it. Nothing to do when
    /// the tests do not run as root: both already run as the same user.
    pub fn hand_over(&self, path: &Path) {
        let Some((uid, gid)) = self.mail_owner else {
            return;
        };
        chown_tree(path, uid, gid);
    }

    /// One start on fresh ports; `Err` if the master exited (most likely a
    /// port was taken meanwhile), a panic if it runs but never answers.
    fn try_start(binary: &Path, users: &[(String, bool)]) -> Result<Dovecot, String> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-dovecot-")
            .tempdir()
            .expect("a temp dir for dovecot");
        let identity = Identity::current();
        let lmtp_addr = free_port();
        let imap_addr = free_port();
        let mail_root = dir.path().join("mail");
        std::fs::create_dir(&mail_root).expect("create the mail root");
        if let Some((uid, gid)) = identity.mail_owner {
            // Root's temp dir is 0700: the mail uid must get through it to
            // its Maildirs.
            set_mode(dir.path(), 0o755);
            std::os::unix::fs::chown(&mail_root, Some(uid), Some(gid))
                .expect("give the mail root to the mail user");
        }
        std::fs::write(dir.path().join("users"), users_file(users)).expect("write the users");
        let config_path = dir.path().join("dovecot.conf");
        let config = config(dir.path(), &identity, lmtp_addr, imap_addr);
        std::fs::write(&config_path, config).expect("write dovecot.conf");
        let stderr = std::fs::File::create(dir.path().join("stderr")).expect("dovecot's stderr");
        let child = Command::new(binary)
            .arg("-F")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} ({e}): {INSTALL}", binary.display()));
        let mut dovecot = Dovecot {
            child: Some(child),
            dir,
            lmtp_addr,
            imap_addr,
            mail_owner: identity.mail_owner,
        };
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if dovecot.answers() {
                return Ok(dovecot);
            }
            let child = dovecot.child.as_mut().expect("the master is running");
            if let Ok(Some(status)) = child.try_wait() {
                dovecot.child = None;
                return Err(format!("dovecot exited with {status}: {}", dovecot.log()));
            }
            if Instant::now() > deadline {
                // Drop stops it on the way out of the panic.
                panic!(
                    "dovecot did not answer on LMTP and IMAP within {START_LIMIT:?}; log:\n{}",
                    dovecot.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether every listener greets: LMTP on both sockets, IMAP.
    fn answers(&self) -> bool {
        unix_greets(&self.lmtp_socket(), b"220 ")
            && tcp_greets(self.lmtp_addr, b"220 ")
            && tcp_greets(self.imap_addr, b"* OK ")
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM by PID (kill(1): the workspace forbids the unsafe libc
        // call): the master then stops every process it started.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + STOP_LIMIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Who Dovecot's processes run as.
struct Identity {
    /// `Some` when running as root: the (uid, gid) of the system user `mail`,
    /// which owns the Maildirs. `None`: everything runs as the current user.
    mail_owner: Option<(u32, u32)>,
    /// The mail uid and gid as numbers, for `mail_uid`, `first_valid_uid`.
    uid: u32,
    gid: u32,
    /// For a non-root run: the current user and group by name, for
    /// `default_internal_user` and `default_login_user`.
    unprivileged: Option<(String, String)>,
}

impl Identity {
    fn current() -> Identity {
        // The owner of /proc/self is the effective uid: no libc call needed.
        let meta = std::fs::metadata("/proc/self").expect("stat /proc/self");
        let (uid, gid) = (meta.uid(), meta.gid());
        if uid == 0 {
            let (uid, gid) = passwd_by_name("mail")
                .expect("the system user `mail` (Debian's base-passwd has it)");
            return Identity {
                mail_owner: Some((uid, gid)),
                uid,
                gid,
                unprivileged: None,
            };
        }
        let user = name_by_id("/etc/passwd", uid)
            .unwrap_or_else(|| panic!("uid {uid} has no name in /etc/passwd, which dovecot needs"));
        let group = name_by_id("/etc/group", gid)
            .unwrap_or_else(|| panic!("gid {gid} has no name in /etc/group, which dovecot needs"));
        Identity {
            mail_owner: None,
            uid,
            gid,
            unprivileged: Some((user, group)),
        }
    }
}

/// `passwd-file` lines: `user:{PLAIN}password:uid:gid:gecos:home:shell:extra`.
/// uid, gid and home come from the config, the quota from the extra field.
fn users_file(users: &[(String, bool)]) -> String {
    let mut text = String::new();
    for (name, full) in users {
        let extra = if *full {
            "userdb_quota_rule=*:bytes=1"
        } else {
            ""
        };
        writeln!(text, "{name}:{{PLAIN}}{PASSWORD}::::::{extra}").expect("write to a String");
    }
    text
}

fn config(dir: &Path, id: &Identity, lmtp: SocketAddr, imap: SocketAddr) -> String {
    let d = dir.display();
    let (uid, gid) = (id.uid, id.gid);
    // Without root, Dovecot can neither switch users nor chroot: every
    // process runs as the current user.
    let (unprivileged, chroot) = match &id.unprivileged {
        None => (String::new(), ""),
        Some((user, group)) => (
            format!(
                "default_internal_user = {user}\ndefault_internal_group = {group}\n\
                 default_login_user = {user}\n\
                 service anvil {{\n  chroot =\n}}\n\
                 service auth-worker {{\n  user = {user}\n}}\n"
            ),
            "  chroot =\n",
        ),
    };
    format!(
        r#"# A private instance for Sluice's tests: nothing here is shared with a
# system Dovecot (own base_dir, state_dir, log, users and ports).
base_dir = {d}/run
state_dir = {d}/state
instance_name = sluice-test-{imap_port}
log_path = {d}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# LMTP looks users up by the whole address; the users file has local parts.
auth_username_format = %Ln
mail_location = maildir:{d}/mail/%n
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_plugins = quota
plugin {{
  quota = maildir:User quota
}}
passdb {{
  driver = passwd-file
  args = {d}/users
}}
userdb {{
  driver = passwd-file
  args = {d}/users
  default_fields = home={d}/mail/%n
}}
service auth {{
  unix_listener {d}/auth-client {{
    mode = 0666
  }}
}}
service lmtp {{
  unix_listener {d}/lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
service imap-login {{
{chroot}  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
{unprivileged}"#,
        lmtp_port = lmtp.port(),
        imap_port = imap.port(),
    )
}

/// /usr/sbin first: it is not on every user's PATH. The LMTP and IMAP
/// services are separate packages: without them the master starts but
/// cannot serve, so their absence is said here rather than as a timeout.
fn dovecot_binary() -> PathBuf {
    let sbin = Path::new("/usr/sbin/dovecot");
    let binary = if sbin.is_file() {
        sbin.to_path_buf()
    } else {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("dovecot"))
            .find(|path| path.is_file())
            .unwrap_or_else(|| panic!("dovecot is not in /usr/sbin nor on PATH. {INSTALL}"))
    };
    if binary == sbin {
        for service in ["lmtp", "imap", "imap-login"] {
            let path = Path::new("/usr/lib/dovecot").join(service);
            assert!(path.is_file(), "{} is missing. {INSTALL}", path.display());
        }
    }
    binary
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free TCP port")
}

fn tcp_greets(addr: SocketAddr, prefix: &[u8]) -> bool {
    TcpStream::connect_timeout(&addr, PROBE_WAIT).is_ok_and(|s| {
        s.set_read_timeout(Some(PROBE_WAIT)).is_ok() && first_line(s).starts_with(prefix)
    })
}

fn unix_greets(path: &Path, prefix: &[u8]) -> bool {
    UnixStream::connect(path).is_ok_and(|s| {
        s.set_read_timeout(Some(PROBE_WAIT)).is_ok() && first_line(s).starts_with(prefix)
    })
}

/// The first line the peer sends (empty on an error or timeout).
fn first_line(stream: impl Read) -> Vec<u8> {
    let mut line = Vec::new();
    let _ = BufReader::new(stream).read_until(b'\n', &mut line);
    line
}

/// (uid, gid) of the user `name` in /etc/passwd.
fn passwd_by_name(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 || fields[0] != name {
            return None;
        }
        Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
    })
}

/// The name of id `id` in /etc/passwd or /etc/group (the third field).
fn name_by_id(file: &str, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 3 && fields[2].parse() == Ok(id)).then(|| fields[0].to_string())
    })
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// `chown -R uid:gid path`, without following symlinks.
fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    let meta =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    if meta.is_dir() {
        let entries =
            std::fs::read_dir(path).unwrap_or_else(|e| panic!("list {}: {e}", path.display()));
        for entry in entries {
            chown_tree(&entry.expect("a directory entry").path(), uid, gid);
        }
    }
}
