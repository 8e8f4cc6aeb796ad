//! CPU time of a process and all its descendants, from `/proc/<pid>/stat`.
//!
//! Sluice is one process; Postfix is a master with a changing crowd of
//! children (smtpd, cleanup, qmgr, smtp, …) that come and go. Summing
//! `utime + stime + cutime + cstime` over the live tree counts both: a
//! child that exited and was reaped moved its time into its parent's
//! `cutime`/`cstime`, and a live one still holds its own. The sum only
//! grows, so the difference of two readings is the CPU used in between.

use std::collections::HashMap;
use std::fs;
use std::io;

/// One line of `/proc/<pid>/stat`, the fields we need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub ppid: u32,
    /// utime + stime + cutime + cstime, in clock ticks.
    pub ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses
/// and may itself hold spaces and parentheses, so the fields after it are
/// counted from the last `)`.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let pid = line[..open].trim().parse().ok()?;
    let rest: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); field n is rest[n - 3].
    let field = |n: usize| rest.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let ppid = u32::try_from(field(4)?).ok()?;
    let ticks = field(14)? + field(15)? + field(16)? + field(17)?;
    Some(ProcStat { pid, ppid, ticks })
}

/// Sums the ticks of `root` and its descendants among `procs`.
pub fn tree_ticks(procs: &[ProcStat], root: u32) -> Option<u64> {
    let mut children: HashMap<u32, Vec<&ProcStat>> = HashMap::new();
    let mut by_pid = None;
    for p in procs {
        children.entry(p.ppid).or_default().push(p);
        if p.pid == root {
            by_pid = Some(p);
        }
    }
    let mut total = 0;
    let mut stack = vec![by_pid?];
    while let Some(p) = stack.pop() {
        total += p.ticks;
        if let Some(kids) = children.get(&p.pid) {
            stack.extend(kids.iter().filter(|k| k.pid != p.pid));
        }
    }
    Some(total)
}

/// The CPU ticks of `root` and everything below it, now.
pub fn process_tree_ticks(root: u32) -> io::Result<u64> {
    let mut procs = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // A process may exit between the listing and the read.
        if let Ok(line) = fs::read_to_string(entry.path().join("stat"))
            && let Some(p) = parse_stat(&line)
        {
            procs.push(p);
        }
    }
    tree_ticks(&procs, root)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no process {root}")))
}

/// `RssAnon` of a `/proc/<pid>/status` text, in KiB.
pub fn rss_anon_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    line["RssAnon:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Samples `pid`'s anonymous memory every `every` until the process has
/// exited (gone, or a zombie, whose status has no memory lines), calling
/// `peak` with each new largest value (KiB). One process reading `/proc`:
/// a shell loop would start a process per sample, and those would compete
/// with the server it measures.
pub fn watch_peak_anon(pid: u32, every: std::time::Duration, mut peak: impl FnMut(u64)) {
    let path = format!("/proc/{pid}/status");
    let mut max = 0;
    while let Ok(status) = fs::read_to_string(&path) {
        let Some(kib) = rss_anon_kib(&status) else {
            break;
        };
        if kib > max {
            max = kib;
            peak(max);
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_an_awkward_name() {
        let line = "4242 (smtpd) x) y) S 4200 4200 4200 0 -1 4194560 511 0 0 0 \
                    17 5 3 2 20 0 1 0 999 1000 100 0 0";
        let p = parse_stat(line).unwrap();
        assert_eq!((p.pid, p.ppid, p.ticks), (4242, 4200, 17 + 5 + 3 + 2));
    }

    #[test]
    fn refuses_truncated_lines() {
        assert_eq!(parse_stat("12 (x) S 1 2 3"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn sums_the_whole_tree_and_nothing_else() {
        let p = |pid, ppid, ticks| ProcStat { pid, ppid, ticks };
        let procs = [
            p(1, 0, 1000),
            p(10, 1, 7),  // master
            p(11, 10, 3), // smtpd
            p(12, 10, 4), // qmgr
            p(13, 11, 5), // grandchild
            p(20, 1, 99), // someone else
        ];
        assert_eq!(tree_ticks(&procs, 10), Some(7 + 3 + 4 + 5));
        assert_eq!(tree_ticks(&procs, 11), Some(8));
        assert_eq!(tree_ticks(&procs, 77), None);
    }

    #[test]
    fn sees_this_process_use_cpu() {
        let me = std::process::id();
        let before = process_tree_ticks(me).unwrap();
        // Spin until a tick is charged (10 ms at the usual 100 Hz), bounded.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        let mut after = before;
        while after == before && start.elapsed() < std::time::Duration::from_secs(10) {
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            after = process_tree_ticks(me).unwrap();
        }
        assert!(after > before, "no CPU time seen in 10 s of spinning");
    }

    #[test]
    fn rss_anon_is_read_from_the_status_text() {
        let status =
            "Name:\tsluice\nVmRSS:\t  20480 kB\nRssAnon:\t   12345 kB\nRssFile:\t 8135 kB\n";
        assert_eq!(rss_anon_kib(status), Some(12345));
        assert_eq!(rss_anon_kib("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn the_peak_of_a_live_process_is_seen_and_the_watch_ends_with_it() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap();
        let pid = child.id();
        // The watch runs beside, so that a watch that never ends fails the
        // test instead of hanging it; the child is reaped meanwhile (a
        // zombie has no memory lines, which ends the watch too).
        let (done, watched) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut peaks = Vec::new();
            watch_peak_anon(pid, std::time::Duration::from_millis(20), |kib| {
                peaks.push(kib)
            });
            let _ = done.send(peaks);
        });
        child.wait().unwrap();
        let peaks = watched
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the watch ends when the process does");
        assert!(!peaks.is_empty(), "a running process has anonymous memory");
        assert!(peaks.windows(2).all(|w| w[0] < w[1]), "{peaks:?}");
    }
}
