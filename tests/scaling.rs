//! Three Sluice nodes behind a real HAProxy (`send-proxy-v2`, SMTP health
//! checks), sharing one redis-server, each with its own spool: the client's
//! real address reaches every node, a greylisting decision made on one node
//! holds on the others, a node killed with SIGKILL leaves the service up,
//! and what that node acknowledged is delivered once it is back.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_e2e::{Client, Server, Sink};
use sluice_testkit::RedisServer;

const LIMIT: Duration = Duration::from_secs(20);
/// The antispam plugin's greylisting delay: short, so the test can wait.
const DELAY_SECS: u64 = 2;
/// The client the world sees: untrusted, greylisted.
const STRANGER: &str = "127.0.0.7";
/// A client in the nodes' trusted networks: may relay.
const FRIEND: &str = "127.0.0.8";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A private HAProxy in the foreground (`-db`), stopped by its PID.
struct Haproxy {
    child: Child,
    front: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// `send_proxy`: HAProxy's server option, `send-proxy` (v1) or
    /// `send-proxy-v2`.
    fn start(nodes: &[u16], send_proxy: &str) -> Haproxy {
        let binary = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .expect("haproxy is missing: run tests/prereqs.sh");
        let dir = tempfile::tempdir().unwrap();
        let front = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut config = format!(
            "global\n    maxconn 200\n\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n\
             \x20   timeout server 30s\n    retries 3\n    option redispatch 1\n\n\
             frontend smtp\n    bind {front}\n    default_backend nodes\n\n\
             backend nodes\n    balance roundrobin\n    option smtpchk EHLO haproxy.test\n"
        );
        for (i, port) in nodes.iter().enumerate() {
            config += &format!(
                "    server node{i} 127.0.0.1:{port} {send_proxy} check check-send-proxy \
                 inter 300ms fall 1 rise 2\n"
            );
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let check = Command::new(&binary)
            .args(["-c", "-q", "-f"])
            .arg(&path)
            .output()
            .expect("run haproxy -c");
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(&binary)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        Haproxy {
            child,
            front,
            _dir: dir,
        }
    }

    /// Waits until every node passes its health check: the frontend then
    /// greets through each of them in turn.
    fn wait_ready(&self, nodes: usize) {
        let deadline = Instant::now() + LIMIT;
        let mut greeted = 0;
        while greeted < nodes * 2 {
            assert!(Instant::now() < deadline, "HAProxy never served");
            match Client::connect_raw(self.front) {
                Ok(mut c) => match c.try_read_reply() {
                    Ok(r) if r.raw.starts_with("220") => greeted += 1,
                    _ => greeted = 0,
                },
                Err(_) => greeted = 0,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // Child::kill: SIGKILL to this PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn antispam() -> String {
    let path = format!(
        "{}/../plugins/dist/antispam.wasm",
        env!("CARGO_MANIFEST_DIR")
    );
    assert!(
        Path::new(&path).is_file(),
        "{path} is missing: run plugins/build.sh first (tests/run does)"
    );
    path
}

fn node(port: u16, redis: &RedisServer, sink: &Sink) -> Server {
    Server::builder()
        .config(&format!(
            "[[listen]]\naddr = \"127.0.0.1:{port}\"\nproxy_protocol = true\n\
             proxy_trusted = [\"127.0.0.1/32\"]\n\n\
             [relay]\ntrusted_networks = [\"{FRIEND}/32\"]\n\n\
             [kv]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"cluster:\"\n\n\
             [[plugin]]\nname = \"antispam\"\npath = \"{}\"\n\
             [plugin.config]\ngreylist = true\ngreylist_delay_secs = {DELAY_SECS}\n\
             check_sender_domain = false\n\n\
             [delivery]\nsmarthost = \"{}\"\n",
            redis.url(),
            antispam(),
            sink.addr()
        ))
        .start()
}

/// One message through the frontend from `client`; the reply to the end of
/// its data (or the refusal before it).
fn send(front: SocketAddr, client: &str, to: &str, message_id: &str) -> String {
    let mut c = Client::connect_from(client.parse::<IpAddr>().unwrap(), front);
    c.command_expect("EHLO client.example", "250");
    let content = format!(
        "From: <sender@example.org>\r\nTo: <{to}>\r\nMessage-ID: <{message_id}>\r\n\
         Subject: through the balancer\r\n\r\nHello.\r\n"
    );
    let reply = c
        .try_transaction("sender@example.org", &[to], content.as_bytes())
        .expect("a reply");
    let _ = c.command("QUIT");
    reply.raw
}

/// The node whose log names `needle`.
fn which(nodes: &[Server], needle: &str) -> Option<usize> {
    nodes
        .iter()
        .position(|n| n.logs().iter().any(|l| l.contains(needle)))
}

fn queue_id(reply: &str) -> String {
    reply
        .split("queued as ")
        .nth(1)
        .unwrap_or_else(|| panic!("no queue id in {reply:?}"))
        .trim()
        .to_owned()
}

#[test]
fn three_nodes_behind_haproxy_share_state_and_survive_a_killed_node() {
    let redis = RedisServer::start();
    let sink = Sink::builder().gate_closed().start();
    let ports = [free_port(), free_port(), free_port()];
    let mut nodes: Vec<Server> = ports.iter().map(|&p| node(p, &redis, &sink)).collect();
    let haproxy = Haproxy::start(&ports, "send-proxy-v2");
    haproxy.wait_ready(nodes.len());
    let front = haproxy.front;

    // Greylisting: refused on one node, passed on another once the delay
    // is over. A node with state of its own would greylist the retry anew.
    let first = send(front, STRANGER, "alice@example.test", "grey-1@example.org");
    assert!(first.starts_with("451 4.7.1 Greylisted"), "{first}");
    let greylisted_on = wait_for_node(&nodes, "Greylisted");
    std::thread::sleep(Duration::from_secs(DELAY_SECS) + Duration::from_millis(300));
    let mut passed_on = Vec::new();
    for n in 0..2 {
        let retry = send(
            front,
            STRANGER,
            "alice@example.test",
            &format!("grey-retry-{n}@example.org"),
        );
        assert!(retry.starts_with("250 2.0.0"), "retry {n}: {retry}");
        passed_on.push(wait_for_node(&nodes, &queue_id(&retry)));
    }
    assert!(
        passed_on.iter().any(|&n| n != greylisted_on),
        "every retry went back to the node that greylisted (node {greylisted_on}): \
         round robin should have moved on"
    );

    // The real address reached the nodes: the stored mail names the client,
    // not the balancer.
    let delivered = sluice_e2e::wait_for(LIMIT, || {
        let all: Vec<_> = nodes
            .iter()
            .flat_map(|n| n.all_maildir_messages())
            .collect();
        (all.len() == 2).then_some(all)
    })
    .expect("the two retries delivered locally");
    for m in &delivered {
        let text = m.text();
        assert!(text.contains(&format!("[{STRANGER}]")), "{text}");
    }

    // Relay through the friend: each node takes one; the sink's gate is
    // closed, so all three stay queued.
    let mut accepted = Vec::new();
    for n in 0..3 {
        let id = format!("relay-{n}@example.org");
        let reply = send(front, FRIEND, "someone@elsewhere.example", &id);
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
        let node = wait_for_node(&nodes, &queue_id(&reply));
        accepted.push((id, node));
    }
    // Kill the node that took the first one.
    let (victim_message, victim) = accepted[0].clone();
    nodes[victim].kill9();

    // The service stays up: every new message is taken by a live node.
    for n in 0..4 {
        let id = format!("after-kill-{n}@example.org");
        let reply = send(front, FRIEND, "someone@elsewhere.example", &id);
        assert!(
            reply.starts_with("250 2.0.0"),
            "with node {victim} down: {reply}"
        );
        accepted.push((id, usize::MAX));
    }

    // Back up, on its own spool: what it acknowledged goes out.
    nodes[victim].restart();
    sink.open_gate();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: Vec<String> = sink
            .accepted()
            .iter()
            .map(|t| String::from_utf8_lossy(&t.data).into_owned())
            .collect();
        let missing: Vec<&String> = accepted
            .iter()
            .map(|(id, _)| id)
            .filter(|id| !got.iter().any(|d| d.contains(&format!("<{id}>"))))
            .collect();
        if missing.is_empty() {
            let victims: Vec<&String> = got
                .iter()
                .filter(|d| d.contains(&format!("<{victim_message}>")))
                .collect();
            assert!(
                victims[0].contains(&format!("[{FRIEND}]")),
                "{}",
                victims[0]
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered: {missing:?} (node {victim} was killed)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(haproxy);
}

fn wait_for_node(nodes: &[Server], needle: &str) -> usize {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(n) = which(nodes, needle) {
            return n;
        }
        assert!(Instant::now() < deadline, "no node logged {needle:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn haproxy_with_proxy_protocol_v1_gives_the_real_client_too() {
    let redis = RedisServer::start();
    let sink = Sink::start();
    let port = free_port();
    let node = node(port, &redis, &sink);
    let haproxy = Haproxy::start(&[port], "send-proxy");
    haproxy.wait_ready(1);
    let reply = send(
        haproxy.front,
        FRIEND,
        "someone@elsewhere.example",
        "v1@example.org",
    );
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let delivered = sluice_e2e::wait_for(LIMIT, || sink.accepted().into_iter().next())
        .expect("relayed to the sink");
    let text = String::from_utf8_lossy(&delivered.data).into_owned();
    assert!(text.contains(&format!("[{FRIEND}]")), "{text}");
    assert!(!text.contains("[127.0.0.1]"), "{text}");
    drop(haproxy);
    drop(node);
}
