//! The compiled-code cache: a second load or a reload of an unchanged module
//! runs no compiler, a changed module runs its new code, and a cache that is
//! corrupt or cannot be used never stops a plugin from loading.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use sluice_plugin_host::{CodeCacheStats, HostEnv, PluginHost, PluginSpec};

fn env_cached(dir: &Path) -> HostEnv {
    let mut env = env();
    env.code_cache = Some(dir.to_path_buf());
    env
}

/// Cache entries: wasmtime names them by the base64 of their key, with no
/// extension, beside its `.stats` and `.wip-*` files.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(read) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in read {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_none() {
                found.push(path);
            }
        }
    }
    found
}

fn stats(hits: u64, compiled: u64, stored: u64) -> Option<CodeCacheStats> {
    Some(CodeCacheStats {
        hits,
        compiled,
        stored,
    })
}

/// Loads `specs` behind a real front end and returns the reply to
/// `RCPT TO:<rcpt>`, with the cache's stats for that load.
fn rcpt_reply(specs: Vec<PluginSpec>, env: HostEnv, rcpt: &str) -> (String, Server) {
    let s = Server::start(PluginHost::load(specs, env).unwrap());
    let reply = ask_rcpt(&s, rcpt);
    (reply, s)
}

fn ask_rcpt(s: &Server, rcpt: &str) -> String {
    let mut c = Client::connect(s.addr);
    assert!(c.command("EHLO client.test").starts_with("250 "));
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250 "));
    c.command(&format!("RCPT TO:<{rcpt}>"))
}

#[test]
fn a_second_load_and_a_reload_use_the_cached_code() {
    let plugins = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let relay = spec(
        plugins.path(),
        "relay",
        &relay_plugin("no@x.test", "5.7.1 Refused"),
    );

    let (reply, first) = rcpt_reply(vec![relay.clone()], env_cached(cache.path()), "no@x.test");
    assert_eq!(reply, "554 5.7.1 Refused");
    assert_eq!(first.host.code_cache_stats(), stats(0, 1, 1));
    assert_eq!(entries(cache.path()).len(), 1, "one module, one entry");
    drop(first);

    // A restart: a new host with nothing in memory.
    let (reply, second) = rcpt_reply(vec![relay.clone()], env_cached(cache.path()), "no@x.test");
    assert_eq!(reply, "554 5.7.1 Refused");
    assert_eq!(second.host.code_cache_stats(), stats(1, 0, 0));

    // SIGHUP: a reload builds a new engine, whose code comes from the cache too.
    second.host.reload(vec![relay]).unwrap();
    assert_eq!(second.host.code_cache_stats(), stats(2, 0, 0));
    assert_eq!(ask_rcpt(&second, "no@x.test"), "554 5.7.1 Refused");
    assert_eq!(entries(cache.path()).len(), 1);
}

#[test]
fn a_changed_module_is_compiled_again_and_runs_its_new_code() {
    let plugins = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    // Same size and, below, the same mtime: only the content tells them apart.
    let old = relay_plugin("no@x.test", "5.7.1 Old rule");
    let new = relay_plugin("no@x.test", "5.7.1 New rule");
    assert_eq!(old.len(), new.len());
    let relay = spec(plugins.path(), "relay", &old);
    let mtime = std::fs::metadata(&relay.path).unwrap().modified().unwrap();

    let (reply, s) = rcpt_reply(vec![relay.clone()], env_cached(cache.path()), "no@x.test");
    assert_eq!(reply, "554 5.7.1 Old rule");

    std::fs::write(&relay.path, &new).unwrap();
    let file = std::fs::File::options()
        .write(true)
        .open(&relay.path)
        .unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    s.host.reload(vec![relay.clone()]).unwrap();
    assert_eq!(s.host.code_cache_stats(), stats(0, 2, 2));
    assert_eq!(ask_rcpt(&s, "no@x.test"), "554 5.7.1 New rule");
    drop(s);

    // Both versions are kept: going back to the old one compiles nothing.
    assert_eq!(entries(cache.path()).len(), 2);
    std::fs::write(&relay.path, &old).unwrap();
    let (reply, s) = rcpt_reply(vec![relay], env_cached(cache.path()), "no@x.test");
    assert_eq!(reply, "554 5.7.1 Old rule");
    assert_eq!(s.host.code_cache_stats(), stats(1, 0, 0));
}

/// Makes a bad entry from a good one.
type Corruption = fn(&[u8]) -> Vec<u8>;

#[test]
fn a_corrupt_entry_is_compiled_again_and_replaced() {
    let plugins = tempfile::tempdir().unwrap();
    let relay = spec(
        plugins.path(),
        "relay",
        &relay_plugin("no@x.test", "5.7.1 Refused"),
    );
    let corruptions: [(&str, Corruption); 3] = [
        ("garbage", |_| b"not compiled code".repeat(64)),
        ("truncated", |good| good[..good.len() / 2].to_vec()),
        ("empty", |_| Vec::new()),
    ];
    for (how, corrupt) in corruptions {
        let cache = tempfile::tempdir().unwrap();
        drop(PluginHost::load(vec![relay.clone()], env_cached(cache.path())).unwrap());
        let [entry] = entries(cache.path()).try_into().unwrap();
        let good = std::fs::read(&entry).unwrap();
        std::fs::write(&entry, corrupt(&good)).unwrap();

        let (reply, s) = rcpt_reply(vec![relay.clone()], env_cached(cache.path()), "no@x.test");
        assert_eq!(reply, "554 5.7.1 Refused", "{how}");
        assert_eq!(s.host.code_cache_stats(), stats(0, 1, 1), "{how}");
        drop(s);
        assert_ne!(std::fs::read(&entry).unwrap(), corrupt(&good), "{how}");
        let again = PluginHost::load(vec![relay.clone()], env_cached(cache.path())).unwrap();
        assert_eq!(again.code_cache_stats(), stats(1, 0, 0), "{how}");
    }
}

#[test]
fn a_cache_that_cannot_be_used_never_stops_a_load() {
    let plugins = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let relay = spec(
        plugins.path(),
        "relay",
        &relay_plugin("no@x.test", "5.7.1 Refused"),
    );

    // The directory cannot be made: a file is in the way.
    let blocked = cache.path().join("file");
    std::fs::write(&blocked, "in the way").unwrap();
    let (reply, s) = rcpt_reply(vec![relay.clone()], env_cached(&blocked), "no@x.test");
    assert_eq!(reply, "554 5.7.1 Refused");
    assert_eq!(s.host.code_cache_stats(), None);
    drop(s);

    // The directory is there, but nothing can be written below it (a file
    // stands where wasmtime keeps its entries; file modes would not stop
    // root, which the tests may run as).
    let unwritable = cache.path().join("unwritable");
    std::fs::create_dir(&unwritable).unwrap();
    std::fs::write(unwritable.join("modules"), "in the way").unwrap();
    for _ in 0..2 {
        let (reply, s) = rcpt_reply(vec![relay.clone()], env_cached(&unwritable), "no@x.test");
        assert_eq!(reply, "554 5.7.1 Refused");
        assert_eq!(s.host.code_cache_stats(), stats(0, 1, 0));
    }
    assert_eq!(entries(&unwritable), [unwritable.join("modules")]);
}

#[test]
fn the_cache_directory_is_private() {
    let plugins = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let relay = spec(
        plugins.path(),
        "relay",
        &relay_plugin("no@x.test", "5.7.1 Refused"),
    );

    let made = cache.path().join("spool/plugin-cache");
    let host = PluginHost::load(vec![relay.clone()], env_cached(&made)).unwrap();
    assert_eq!(host.code_cache_stats(), stats(0, 1, 1));
    let mode = std::fs::metadata(&made).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    drop(host);

    // Code others could write would be code others could run in the server.
    let shared = cache.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let host = PluginHost::load(vec![relay], env_cached(&shared)).unwrap();
    assert_eq!(host.code_cache_stats(), None);
    assert_eq!(host.plugin_names(), ["relay"]);
    assert!(std::fs::read_dir(&shared).unwrap().next().is_none());
}
