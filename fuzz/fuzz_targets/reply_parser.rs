//! Reply::parse on arbitrary bytes (what a hostile next hop could send):
//! never a panic, a consistent `consumed`, and a parsed reply survives
//! format → parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_smtp::reply::{MAX_REPLY_LINE, Reply};

fuzz_target!(|input: &[u8]| {
    let Ok(Some((reply, consumed))) = Reply::parse(input) else {
        return;
    };
    assert!(consumed > 0 && consumed <= input.len());
    assert_eq!(input[consumed - 1], b'\n');
    // Any shorter prefix is incomplete, not a different reply or an error.
    for cut in [consumed - 1, consumed / 2] {
        assert_eq!(Reply::parse(&input[..cut]), Ok(None), "cut at {cut}");
    }

    let wire = reply.to_bytes();
    // Lossy UTF-8 can make a line longer (one bad octet becomes three), so
    // only replies whose lines still fit are expected to parse again.
    if wire
        .split(|&b| b == b'\n')
        .all(|l| l.len() < MAX_REPLY_LINE)
    {
        let (again, n) = Reply::parse(&wire)
            .expect("a formatted reply parses")
            .expect("a formatted reply is complete");
        assert_eq!(n, wire.len());
        assert_eq!(again, reply);
    }
});
