//! Reading a secret from standard input: without echo on a terminal, as
//! it comes from a pipe.

use std::io::{self, BufRead, IsTerminal, Write};

use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};

/// One line from standard input, without its line end. On a terminal,
/// `prompt` goes to standard error first and the typed text is not shown.
pub fn read_secret(prompt: &str) -> io::Result<String> {
    let stdin = io::stdin();
    let mut line = String::new();
    if !stdin.is_terminal() {
        stdin.lock().read_line(&mut line)?;
        return Ok(trim(line));
    }
    eprint!("{prompt}");
    io::stderr().flush()?;
    let saved = tcgetattr(&stdin).map_err(io::Error::from)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).map_err(io::Error::from)?;
    let read = stdin.lock().read_line(&mut line);
    // Echo back on whatever happened to the read.
    let restored = tcsetattr(&stdin, SetArg::TCSANOW, &saved).map_err(io::Error::from);
    read?;
    restored?;
    Ok(trim(line))
}

fn trim(mut line: String) -> String {
    while line.ends_with(['\n', '\r']) {
        line.pop();
    }
    line
}
