//! Waiting for work on a channel without spinning.
//!
//! crossbeam's `Receiver::recv` (and iterating a receiver) spins, then calls
//! `sched_yield` a few times before it parks: cheap on bare metal, but each
//! yield is a system call, and in a sandbox such as gVisor a dear one. The
//! per-message budget (docs/benchmarks.md) counted 8 yields per relayed
//! message on the way in, from the filter workers and the spool writer
//! waiting for their next job. [`Select::select`] tries once, registers and
//! parks; the sender's wake is one futex call. (The delivery threads wait
//! this way for the same reason.)

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Select};

/// The messages of `queue`, each waited for by parking at once; ends when
/// every sender is gone. Several threads may share the receiver: `select`
/// claims a message for the one it returns to.
pub fn parked<T>(queue: &Receiver<T>) -> impl Iterator<Item = T> + '_ {
    let mut wait = Select::new_biased();
    wait.recv(queue);
    std::iter::from_fn(move || wait.select().recv(queue).ok())
}

/// One message of `queue`, waited for by parking at once, for at most
/// `timeout` (`Receiver::recv_timeout` spins and yields first, as `recv`
/// does).
pub fn parked_timeout<T>(queue: &Receiver<T>, timeout: Duration) -> Result<T, RecvTimeoutError> {
    let mut wait = Select::new_biased();
    wait.recv(queue);
    match wait.select_timeout(timeout) {
        Ok(ready) => ready
            .recv(queue)
            .map_err(|_| RecvTimeoutError::Disconnected),
        Err(_) => Err(RecvTimeoutError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_wait_gets_the_message_or_says_why_not() {
        let (tx, rx) = crossbeam_channel::unbounded::<u32>();
        let timeout = Duration::from_millis(20);
        assert_eq!(parked_timeout(&rx, timeout), Err(RecvTimeoutError::Timeout));
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            tx.send(7).unwrap();
        });
        assert_eq!(parked_timeout(&rx, Duration::from_secs(10)), Ok(7));
        sender.join().unwrap();
        assert_eq!(
            parked_timeout(&rx, timeout),
            Err(RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn every_message_reaches_exactly_one_of_several_waiting_threads() {
        let (tx, rx) = crossbeam_channel::unbounded::<u32>();
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || parked(&rx).collect::<Vec<u32>>())
            })
            .collect();
        for i in 0..1000 {
            tx.send(i).unwrap();
        }
        drop(tx);
        let mut got: Vec<u32> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    }
}
