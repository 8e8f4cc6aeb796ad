//! Which thread runs first when several want a core.
//!
//! A relayed message crosses threads several times on its way to the `250`
//! (an event loop, the spool writer, the event loop again, then the client's
//! next command), and on a machine whose cores are busy each crossing waits
//! for the woken thread to be run. Linux (6.12 and later) schedules normal
//! threads by EEVDF, where a thread may ask for a shorter time slice: its
//! deadline comes sooner, so it is run soon after it wakes, ahead of threads
//! that use their whole slice. It needs no privilege and takes no CPU from
//! anyone: it only changes who goes first. Older kernels ignore the request.

// Three calls with no wrapper in nix (sched_setattr, sched_getscheduler,
// getpriority); each `unsafe` block says why it is sound.
#![allow(unsafe_code)]

use std::io;

/// `struct sched_attr` of sched_setattr(2), as the kernel reads it
/// (`SCHED_ATTR_SIZE_VER1`: the first version plus utilisation clamps).
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// The shortest slice EEVDF grants (it clamps requests to 0.1–100 ms).
pub const SHORT_SLICE_NS: u64 = 100_000;

/// Asks for the shortest time slice for the calling thread, for threads that
/// run briefly and are waited on (the event loops, the spool writer). A
/// thread the operator put under another policy (real-time, batch, idle) is
/// left as it is, and so is its nice value.
pub fn prefer_latency() -> io::Result<()> {
    // SAFETY: no pointers; pid 0 is the calling thread.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy != libc::SCHED_OTHER {
        return if policy < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        };
    }
    // SAFETY: no pointers; on Linux PRIO_PROCESS with 0 is the calling
    // thread, which always exists, so -1 here is a nice value, not an error.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice,
        priority: 0,
        runtime: SHORT_SLICE_NS,
        deadline: 0,
        period: 0,
        util_min: 0,
        util_max: 0,
    };
    // SAFETY: `attr` is a live, initialised `struct sched_attr` whose `size`
    // says how many bytes the kernel may read, and the kernel only reads it;
    // pid 0 is the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0u32) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread's slice as the kernel reports it, in nanoseconds.
    fn own_slice() -> Option<u64> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        sched
            .lines()
            .find(|l| l.starts_with("se.slice"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn the_calling_thread_gets_the_short_slice_and_keeps_its_nice_value() {
        std::thread::spawn(|| {
            let before = own_slice();
            // A nice value the call must keep (raising it needs no privilege).
            // SAFETY: no pointers; the calling thread.
            let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 3) };
            assert_eq!(rc, 0, "setpriority: {}", io::Error::last_os_error());
            prefer_latency().expect("sched_setattr");
            // SAFETY: as above.
            assert_eq!(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }, 3);
            // Kernels without EEVDF's custom slices show no `se.slice`.
            if let Some(before) = before {
                assert_ne!(
                    before, SHORT_SLICE_NS,
                    "the default slice is already the short one"
                );
                assert_eq!(own_slice(), Some(SHORT_SLICE_NS));
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_batch_thread_is_left_alone() {
        std::thread::spawn(|| {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: `param` is live and only read.
            let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
            assert_eq!(rc, 0, "sched_setscheduler: {}", io::Error::last_os_error());
            let before = own_slice();
            prefer_latency().expect("a thread under another policy is not an error");
            // SAFETY: no pointers.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_BATCH);
            assert_eq!(own_slice(), before);
        })
        .join()
        .unwrap();
    }
}
