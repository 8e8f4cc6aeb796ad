//! Command::parse on arbitrary bytes never panics, and whatever it accepts
//! survives the trip through the wire form the delivery client writes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_smtp::Command;

fuzz_target!(|line: &[u8]| {
    let Ok(command) = Command::parse(line) else {
        return;
    };
    let mut wire = Vec::new();
    command.write_to(&mut wire);
    let text = wire
        .strip_suffix(b"\r\n")
        .expect("write_to ends the line with CRLF");
    assert!(
        !text.contains(&b'\r') && !text.contains(&b'\n'),
        "a command must never write a line ending inside the line: {:?}",
        String::from_utf8_lossy(&wire)
    );
    match Command::parse(text) {
        Ok(again) => assert_eq!(again, command, "{:?}", String::from_utf8_lossy(text)),
        Err(e) => panic!(
            "{command:?} wrote {:?}, which does not parse: {e:?}",
            String::from_utf8_lossy(text)
        ),
    }
});
