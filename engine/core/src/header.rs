//! RFC 5322 header writing: sanitising, folding and RFC 2047 encoded words.
//!
//! Everything here writes complete header fields terminated by CRLF. Values are sanitised by
//! the caller with [`sanitize`] (every control becomes a space), so no value can ever start a
//! new header line; the writer only ever emits CRLF followed by a space (folding).

use std::borrow::Cow;

use crate::error::{Error, Result};

/// Preferred maximum header line length, excluding CRLF (RFC 5322 §2.1.1).
pub const MAX_HEADER_LINE: usize = 78;
/// Maximum length of one RFC 2047 encoded word.
pub const MAX_ENCODED_WORD: usize = 75;
/// Maximum byte length accepted for an email address.
pub const MAX_ADDRESS_LEN: usize = 254;

const EW_PREFIX: &[u8] = b"=?utf-8?b?";
const EW_SUFFIX: &[u8] = b"?=";
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Characters that never reach a header raw: C0 controls except tab, DEL, C1 controls,
/// U+2028 and U+2029 (all of them are replaced by a space by [`sanitize`]).
#[inline]
pub fn is_header_control(c: char) -> bool {
    (c < ' ' && c != '\t')
        || ('\u{7f}'..='\u{9f}').contains(&c)
        || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Whether `text` holds an [`is_header_control`] character (bytewise: C1 controls are
/// `C2 80..=9F` in UTF-8, U+2028/U+2029 are `E2 80 A8/A9`).
fn has_header_control(text: &str) -> bool {
    let b = text.as_bytes();
    b.iter().enumerate().any(|(i, &c)| match c {
        0x7F => true,
        c if c < 0x20 => c != b'\t',
        0xC2 => b.get(i + 1).is_some_and(|n| (0x80..=0x9F).contains(n)),
        0xE2 => b.get(i + 1) == Some(&0x80) && matches!(b.get(i + 2), Some(0xA8 | 0xA9)),
        _ => false,
    })
}

/// Replace every [`is_header_control`] character by a space.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    if !has_header_control(text) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| if is_header_control(c) { ' ' } else { c })
            .collect(),
    )
}

/// Trim spaces and tabs at both ends.
#[inline]
pub fn trim_wsp(text: &str) -> &str {
    text.trim_matches([' ', '\t'])
}

/// Check an addr-spec strictly: `local@domain`, both non-empty, at most
/// [`MAX_ADDRESS_LEN`] bytes, exactly one `@`, and no whitespace, control characters or
/// RFC 5322 specials (`<>()[],;:\"`). Non-ASCII (SMTPUTF8) is allowed.
pub fn validate_address(what: &str, addr: &str) -> Result<()> {
    let fail = |why: &str| {
        Err(Error::Mime(format!(
            "invalid {what} address {addr:?}: {why}"
        )))
    };
    if addr.is_empty() {
        return fail("empty");
    }
    if addr.len() > MAX_ADDRESS_LEN {
        return fail("too long");
    }
    let forbidden_ascii = |b: u8| {
        matches!(
            b,
            0..=b' '
                | 0x7F
                | b'<'
                | b'>'
                | b'('
                | b')'
                | b'['
                | b']'
                | b','
                | b';'
                | b':'
                | b'\\'
                | b'"'
        )
    };
    // ASCII (the common case) bytewise; otherwise char by char, which names the culprit.
    let ascii_ok = addr.is_ascii() && !addr.bytes().any(forbidden_ascii);
    if let Some(c) = addr.chars().filter(|_| !ascii_ok).find(|&c| {
        c.is_whitespace()
            || c.is_control()
            || is_header_control(c)
            || matches!(
                c,
                '<' | '>' | '(' | ')' | '[' | ']' | ',' | ';' | ':' | '\\' | '"'
            )
    }) {
        return fail(&format!("forbidden character {c:?}"));
    }
    match addr.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(())
        }
        _ => fail("expected exactly one '@' between a local part and a domain"),
    }
}

/// Check a header field name: RFC 5322 ftext (printable ASCII except `:`), 1..=64 chars,
/// not starting with `.`.
pub fn validate_field_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| (0x21..0x7F).contains(&b) && b != b':');
    if ok {
        Ok(())
    } else {
        Err(Error::Mime(format!("invalid header name {name:?}")))
    }
}

/// Incremental writer of one header field that tracks the current line length.
pub(crate) struct HeaderWriter<'a> {
    out: &'a mut Vec<u8>,
    col: usize,
}

impl<'a> HeaderWriter<'a> {
    /// Start the field: writes `Name:`.
    pub(crate) fn new(out: &'a mut Vec<u8>, name: &str) -> Self {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        HeaderWriter {
            out,
            col: name.len() + 1,
        }
    }

    #[inline]
    fn raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
        self.col += bytes.len();
    }

    /// Fold: the next write must begin with a space or tab.
    #[inline]
    fn fold(&mut self) {
        self.out.extend_from_slice(b"\r\n");
        self.col = 0;
    }

    /// Terminate the field with CRLF.
    pub(crate) fn finish(self) {
        self.out.extend_from_slice(b"\r\n");
    }

    /// Write `text` as RFC 2047 `B` encoded words (UTF-8), one per line, each ≤ 75 chars and
    /// split on character boundaries (before whitespace when there is some in the window);
    /// every word is preceded by a space.
    fn encoded_words(&mut self, text: &str) {
        let mut rest = text;
        let mut fold_first = false;
        while !rest.is_empty() {
            if fold_first {
                self.fold();
            }
            // Room for " " + word on this line.
            let room = MAX_HEADER_LINE
                .saturating_sub(self.col + 1)
                .min(MAX_ENCODED_WORD);
            let max_bytes = room.saturating_sub(EW_PREFIX.len() + EW_SUFFIX.len()) / 4 * 3;
            let mut take = floor_char_boundary(rest, max_bytes);
            if take < rest.len() && !matches!(rest.as_bytes()[take], b' ' | b'\t') {
                // Prefer ending the word before whitespace: decoders that (wrongly) keep
                // the folding space between encoded words then only double a space.
                if let Some(p) = rest[..take].rfind([' ', '\t']).filter(|&p| p > 0) {
                    take = p;
                }
            }
            if take == 0 {
                // Only possible on the first line when the field name is long.
                debug_assert!(self.col > 0);
                fold_first = true;
                continue;
            }
            self.raw(b" ");
            self.raw(EW_PREFIX);
            let before = self.out.len();
            base64_into(self.out, &rest.as_bytes()[..take]);
            self.col += self.out.len() - before;
            self.raw(EW_SUFFIX);
            rest = &rest[take..];
            fold_first = true;
        }
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Standard base64 with padding.
pub(crate) fn base64_into(out: &mut Vec<u8>, input: &[u8]) {
    let mut chunks = input.chunks_exact(3);
    for c in &mut chunks {
        let n = u32::from(c[0]) << 16 | u32::from(c[1]) << 8 | u32::from(c[2]);
        out.extend_from_slice(&[
            B64[(n >> 18) as usize & 63],
            B64[(n >> 12) as usize & 63],
            B64[(n >> 6) as usize & 63],
            B64[n as usize & 63],
        ]);
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend_from_slice(&[
                B64[(n >> 18) as usize & 63],
                B64[(n >> 12) as usize & 63],
                b'=',
                b'=',
            ]);
        }
        [a, b] => {
            let n = u32::from(a) << 16 | u32::from(b) << 8;
            out.extend_from_slice(&[
                B64[(n >> 18) as usize & 63],
                B64[(n >> 12) as usize & 63],
                B64[(n >> 6) as usize & 63],
                b'=',
            ]);
        }
        _ => {}
    }
}

/// Split a value into folding tokens: each is a run of spaces/tabs followed by a run of
/// other characters (the first token of a trimmed value has no leading whitespace).
fn wsp_tokens(value: &str) -> impl Iterator<Item = &str> {
    let b = value.as_bytes();
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= b.len() {
            return None;
        }
        let start = pos;
        while pos < b.len() && (b[pos] == b' ' || b[pos] == b'\t') {
            pos += 1;
        }
        while pos < b.len() && b[pos] != b' ' && b[pos] != b'\t' {
            pos += 1;
        }
        Some(&value[start..pos])
    })
}

/// Write an unstructured field (`Subject`, extra headers). `value` must already be
/// sanitised and trimmed. ASCII values are folded before existing whitespace (lines ≤ 78);
/// non-ASCII values, values containing `=?`, and values with a token too long to fold are
/// written as encoded words.
pub fn write_unstructured(out: &mut Vec<u8>, name: &str, value: &str) {
    debug_assert!(!value.chars().any(is_header_control));
    let mut w = HeaderWriter::new(out, name);
    if value.is_empty() {
        return w.finish();
    }
    let first_room = MAX_HEADER_LINE.saturating_sub(w.col + 1);
    let plain = value.is_ascii()
        && !value.contains("=?")
        && wsp_tokens(value)
            .enumerate()
            .all(|(k, tok)| tok.len() <= if k == 0 { first_room } else { MAX_HEADER_LINE });
    if !plain {
        w.encoded_words(value);
        return w.finish();
    }
    for (k, tok) in wsp_tokens(value).enumerate() {
        if k == 0 {
            w.raw(b" ");
        } else if w.col + tok.len() > MAX_HEADER_LINE {
            w.fold();
        }
        w.raw(tok.as_bytes());
    }
    w.finish()
}

/// Whether a display name can be written as a quoted-string: printable ASCII without `=?`.
fn quotable(name: &str) -> bool {
    name.bytes().all(|b| (0x20..0x7F).contains(&b)) && !name.contains("=?")
}

fn quoted_len(name: &str) -> usize {
    name.len() + 2 + name.bytes().filter(|&b| b == b'"' || b == b'\\').count()
}

/// Write an address field: `Name: "Display" <addr>` or `Name: addr` when `display` is
/// empty. `display` must be sanitised and trimmed, `addr` validated. A display name is a
/// quoted-string when it is printable ASCII and fits on the first line, else encoded words.
pub fn write_address(out: &mut Vec<u8>, name: &str, display: &str, addr: &str) {
    debug_assert!(!display.chars().any(is_header_control));
    let mut w = HeaderWriter::new(out, name);
    if display.is_empty() {
        w.raw(b" ");
        w.raw(addr.as_bytes());
        return w.finish();
    }
    if quotable(display) && w.col + 1 + quoted_len(display) <= MAX_HEADER_LINE {
        w.raw(b" \"");
        for b in display.bytes() {
            if b == b'"' || b == b'\\' {
                w.raw(&[b'\\', b]);
            } else {
                w.raw(&[b]);
            }
        }
        w.raw(b"\"");
    } else {
        w.encoded_words(display);
    }
    if w.col + addr.len() + 3 > MAX_HEADER_LINE {
        w.fold();
    }
    w.raw(b" <");
    w.raw(addr.as_bytes());
    w.raw(b">");
    w.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn bytewise_control_check_matches_chars() {
        for c in (0..0x3000u32).filter_map(char::from_u32) {
            for s in [format!("{c}"), format!("a{c}b"), format!("é{c}")] {
                assert_eq!(
                    has_header_control(&s),
                    s.chars().any(is_header_control),
                    "{c:?}"
                );
            }
        }
    }

    /// Minimal RFC 2047 `B` decoder + unfolding for tests: returns the unfolded value.
    pub(crate) fn decode_unstructured(field: &[u8]) -> String {
        let text = std::str::from_utf8(field).unwrap();
        let text = text.strip_suffix("\r\n").unwrap();
        let (_, value) = text.split_once(':').unwrap();
        let unfolded = value.replace("\r\n", "");
        let unfolded = unfolded.strip_prefix(' ').unwrap_or(&unfolded);
        if !unfolded.starts_with("=?utf-8?b?") {
            return unfolded.to_owned();
        }
        let mut bytes = Vec::new();
        for word in unfolded.split(' ') {
            let b64 = word
                .strip_prefix("=?utf-8?b?")
                .and_then(|w| w.strip_suffix("?="))
                .unwrap();
            bytes.extend(b64_decode(b64));
        }
        String::from_utf8(bytes).unwrap()
    }

    fn b64_decode(s: &str) -> Vec<u8> {
        let vals: Vec<u32> = s
            .bytes()
            .filter(|&b| b != b'=')
            .map(|b| B64.iter().position(|&x| x == b).unwrap() as u32)
            .collect();
        let mut out = Vec::new();
        for c in vals.chunks(4) {
            let n = c
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, v)| n | v << (18 - 6 * i));
            out.extend(&n.to_be_bytes()[1..c.len()]);
        }
        out
    }

    pub(crate) fn assert_lines_ok(field: &[u8]) {
        let text = std::str::from_utf8(field).unwrap();
        assert!(text.ends_with("\r\n"));
        for (i, line) in text[..text.len() - 2].split("\r\n").enumerate() {
            assert!(!line.contains(['\r', '\n']), "{text:?}");
            assert!(line.len() <= MAX_HEADER_LINE, "line too long in {text:?}");
            if i > 0 {
                assert!(line.starts_with([' ', '\t']), "{text:?}");
                assert!(line.trim() != "", "whitespace-only line in {text:?}");
            }
        }
    }

    fn unstructured(name: &str, value: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write_unstructured(&mut out, name, value);
        assert_lines_ok(&out);
        assert_eq!(
            decode_unstructured(&out),
            value,
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        out
    }

    #[test]
    fn sanitize_replaces_controls() {
        assert!(matches!(sanitize("plain\ttab é"), Cow::Borrowed(_)));
        assert_eq!(sanitize("a\r\nb\0c\x7f\u{85}\u{2028}d"), "a  b c   d");
    }

    #[test]
    fn base64() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            let mut out = Vec::new();
            base64_into(&mut out, input.as_bytes());
            assert_eq!(out, want.as_bytes());
        }
    }

    #[test]
    fn ascii_subject_is_folded_at_whitespace() {
        assert_eq!(unstructured("Subject", "Hello"), b"Subject: Hello\r\n");
        assert_eq!(unstructured("Subject", ""), b"Subject:\r\n");
        let long = "word ".repeat(40);
        let long = long.trim_end();
        let out = unstructured("Subject", long);
        assert!(out.windows(3).filter(|w| w == b"\r\n ").count() >= 2);
        assert!(!out.starts_with(b"Subject: =?"));
        unstructured("Subject", "a  \t b   c");
        unstructured("Subject", &format!("x{}y", " ".repeat(60)));
    }

    #[test]
    fn non_ascii_and_unfoldable_use_encoded_words() {
        for value in [
            "Grüße aus Köln",
            "=?utf-8?q?fake?=",
            &"x".repeat(200),
            &"😀".repeat(50),
            &format!("a{}b", " ".repeat(100)),
            "ascii then ✓",
        ] {
            let out = unstructured("Subject", value);
            assert!(out.starts_with(b"Subject: =?utf-8?b?"), "{value}");
            let text = std::str::from_utf8(&out).unwrap();
            for word in text.split_whitespace().skip(1) {
                assert!(word.len() <= MAX_ENCODED_WORD);
            }
        }
        // long field names still work
        unstructured(&"X".repeat(64), "é");
        unstructured(&"X".repeat(64), "plain value");
    }

    #[test]
    fn encoded_words_split_before_whitespace() {
        let out = unstructured("Subject", "Grüße aus Köln ".repeat(10).trim_end());
        let text = String::from_utf8(out).unwrap();
        for word in text.split("\r\n").skip(1).filter(|w| !w.is_empty()) {
            let b64 = word.trim_start().strip_prefix("=?utf-8?b?").unwrap();
            // every continuation word starts with the space of the original text
            assert!(b64.starts_with("I"), "{word}");
        }
    }

    #[test]
    fn injection_is_impossible_after_sanitize() {
        let evil = "hi\r\nBcc: victim@x.io\r\n\r\nbody";
        let clean = sanitize(evil);
        let out = unstructured("Subject", trim_wsp(&clean));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    }

    #[test]
    fn addresses() {
        let w = |display: &str, addr: &str| {
            let mut out = Vec::new();
            write_address(&mut out, "From", display, addr);
            assert_lines_ok(&out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(w("", "a@b.c"), "From: a@b.c\r\n");
        assert_eq!(
            w("Sarah at Acme", "s@acme.com"),
            "From: \"Sarah at Acme\" <s@acme.com>\r\n"
        );
        assert_eq!(
            w(r#"a "q" \ b"#, "s@x"),
            "From: \"a \\\"q\\\" \\\\ b\" <s@x>\r\n"
        );
        assert_eq!(w("Zoë", "z@x"), "From: =?utf-8?b?Wm/Dqw==?= <z@x>\r\n");
        let long = w(&"Name ".repeat(30), "someone@example.com");
        assert!(long.contains("=?utf-8?b?"));
        assert!(long.ends_with(" <someone@example.com>\r\n"));
        assert!(w("=?utf-8?b?QQ==?=", "a@b").starts_with("From: =?utf-8?b?PT91"));
        assert_eq!(w("", "zoë@exämple.com"), "From: zoë@exämple.com\r\n");
    }

    #[test]
    fn address_validation() {
        for ok in ["a@b", "first.last+tag@sub.example.com", "zoë@exämple.com"] {
            assert!(validate_address("to", ok).is_ok(), "{ok}");
        }
        let long = format!("{}@x.io", "a".repeat(250));
        for bad in [
            "",
            "a",
            "@b",
            "a@",
            "a@b@c",
            "a b@c",
            "a@b\r\nBcc: x@y",
            "<a@b>",
            "a@b>",
            "a\t@b",
            "\"a\"@b",
            "a,b@c",
            "a@b\u{2028}",
            "a@b\u{a0}",
            &long,
        ] {
            let err = validate_address("to", bad).unwrap_err();
            assert!(matches!(err, Error::Mime(_)), "{bad:?}");
        }
    }

    #[test]
    fn field_names() {
        for ok in ["X-Mailcore-Campaign", "List-Id", "x!#$%&'*+-/=?^_`{|}~"] {
            assert!(validate_field_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "X:Y", "X Y", "X\r\nY", "Ä", ".X", &"X".repeat(65)] {
            assert!(validate_field_name(bad).is_err(), "{bad:?}");
        }
    }
}
