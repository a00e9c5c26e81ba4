//! Text from outside the coordinator (a worker's failure reason, a device's name) made safe
//! to store and to show: no control characters (line breaks, terminal escapes) and no
//! bidirectional overrides, which could forge a line of an event log or hide text on a
//! terminal.

use std::borrow::Cow;

/// Whether `c` must not reach a log or a terminal as it is.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `text` holds nothing [`is_unsafe`].
pub fn is_printable(text: &str) -> bool {
    !text.chars().any(is_unsafe)
}

/// `text` with every unsafe character written as its escape (`\n`, `\u{1b}`), so nothing is
/// lost and nothing is interpreted.
pub fn printable(text: &str) -> Cow<'_, str> {
    if is_printable(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_escapes_and_overrides_are_written_out() {
        let forged = "oom\njob-5 succeeded: final proof assembled\x1b[2K\u{202e}txt";
        let shown = printable(forged);
        assert!(is_printable(&shown), "{shown}");
        assert_eq!(
            shown,
            "oom\\njob-5 succeeded: final proof assembled\\u{1b}[2K\\u{202e}txt"
        );
        assert!(matches!(
            printable("out of memory: 12 GiB"),
            Cow::Borrowed(_)
        ));
        assert_eq!(printable("naïve 证明"), "naïve 证明");
    }
}
