//! Just enough of RFC 5322 for `get_header`: the header section's fields,
//! unfolded.

/// The header fields as (name, value): the value without the colon, leading
/// and trailing white space, and with folding (CRLF before WSP) removed.
/// Stops at the first empty line; a line that is neither a field nor a
/// continuation (no colon) ends the header section too, as it would for a
/// mail reader.
pub(crate) fn parse_headers(message: &[u8]) -> Vec<(String, String)> {
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    for line in lines(message) {
        if line.is_empty() {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            match fields.last_mut() {
                Some((_, value)) => value.extend_from_slice(line),
                None => break,
            }
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            break;
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
            break;
        }
        fields.push((
            String::from_utf8_lossy(name).into_owned(),
            line[colon + 1..].to_vec(),
        ));
    }
    fields
        .into_iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(&value);
            (name, value.trim_matches([' ', '\t']).to_owned())
        })
        .collect()
}

/// Lines without their CRLF (or bare LF, which the front end never passes on,
/// but a test message from a file may have).
fn lines(message: &[u8]) -> impl Iterator<Item = &[u8]> {
    message.split_inclusive(|&b| b == b'\n').map(|line| {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        line.strip_suffix(b"\r").unwrap_or(line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: from client.example ([192.0.2.7])\r\n\tby mx.example.test (Sluice) with ESMTP id 0123ABCD\r\n\tfor <a@example.test>;\r\n\tMon, 1 Jan 2024 00:00:00 +0000\r\nSubject:  Hello\r\n world \r\nsubject: second\r\nX-Empty:\r\n\r\nBody: not a header\r\n";

    #[test]
    fn fields_are_unfolded_and_stop_at_the_body() {
        let h = parse_headers(MSG);
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Received", "Subject", "subject", "X-Empty"]);
        assert_eq!(h[1].1, "Hello world");
        assert_eq!(h[3].1, "");
    }
}
