//! SMTP content framing (RFC 5321 §2.3.8 and §4.5.2), in one pass over the content.
//!
//! Every bare CR and every bare LF becomes CRLF, so that no `<CRLF>.<CRLF>` can be
//! smuggled through a message: the only one on the wire is the terminator added here.
//! For `DATA`, a line that starts with `.` gets one more, and `.<CRLF>` ends it. For
//! `BDAT`, the newlines alone are normalised. The Python reference these are tested
//! against (by hypothesis) lives in `tests/smtp`.

use memchr::{memchr2, memmem};

/// `content` with every bare CR and bare LF turned into CRLF, ending in CRLF unless it
/// is empty; `None` when it already is exactly that (the caller keeps its own copy).
pub fn normalize_newlines(content: &[u8]) -> Option<Vec<u8>> {
    if is_normalized(content) && (content.is_empty() || content.ends_with(b"\r\n")) {
        return None;
    }
    let mut out = Vec::with_capacity(content.len() + content.len() / 32 + 2);
    frame_into(content, false, &mut out);
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    Some(out)
}

/// A piece of a longer content with bare CR and LF turned into CRLF, nothing appended;
/// `None` when there is none.
pub fn normalize_piece(piece: &[u8]) -> Option<Vec<u8>> {
    if is_normalized(piece) {
        return None;
    }
    let mut out = Vec::with_capacity(piece.len() + piece.len() / 32 + 2);
    frame_into(piece, false, &mut out);
    Some(out)
}

/// What follows a 354 reply: `content` normalised as [`normalize_newlines`] does,
/// dot-stuffed, and terminated by `.<CRLF>`.
pub fn data_content(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 32 + 8);
    data_content_into(content, &mut out);
    out
}

/// The longest address a command line takes, in bytes (RFC 5321 §4.5.3.1.3 allows 256
/// for a path; some servers take more, so the client allows what a line can hold).
pub const MAX_ADDRESS: usize = 512;

/// Whether `address` can go in `RCPT TO:<…>`: not empty, no control character, `<` or
/// `>` (so no CR or LF can inject a command), ASCII unless `utf8` (SMTPUTF8), at most
/// [`MAX_ADDRESS`] bytes.
pub fn address_ok(address: &str, utf8: bool) -> bool {
    !address.is_empty()
        && address.len() <= MAX_ADDRESS
        && (utf8 || address.is_ascii())
        && !address
            .chars()
            .any(|c| c < ' ' || c == '\x7f' || c == '<' || c == '>')
}

/// One pipelined group of a transaction sent with DATA (RFC 2920 §3.1: DATA ends the
/// group), in one buffer: `body` (the previous transaction's content, after its 354) as
/// [`data_content`] frames it, `RSET` when `rset`, the `mail` command line as given, a
/// `RCPT TO` per recipient, then `DATA`. `None` when a recipient fails [`address_ok`]:
/// nothing of the group may go out then.
pub fn data_group<R: AsRef<str>>(
    body: Option<&[u8]>,
    rset: bool,
    mail: &[u8],
    rcpts: &[R],
    utf8: bool,
) -> Option<Vec<u8>> {
    if !rcpts.iter().all(|r| address_ok(r.as_ref(), utf8)) {
        return None;
    }
    let envelope = mail.len() + rcpts.iter().map(|r| r.as_ref().len() + 12).sum::<usize>() + 14;
    let body_len = body.map_or(0, |b| b.len() + b.len() / 32 + 8);
    let mut out = Vec::with_capacity(body_len + envelope);
    if let Some(body) = body {
        data_content_into(body, &mut out);
    }
    if rset {
        out.extend_from_slice(b"RSET\r\n");
    }
    out.extend_from_slice(mail);
    for rcpt in rcpts {
        out.extend_from_slice(b"RCPT TO:<");
        out.extend_from_slice(rcpt.as_ref().as_bytes());
        out.extend_from_slice(b">\r\n");
    }
    out.extend_from_slice(b"DATA\r\n");
    Some(out)
}

fn data_content_into(content: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    if content.first() != Some(&b'.')
        && memmem::find(content, b"\n.").is_none()
        && is_normalized(content)
    {
        // The usual case (a rendered message): nothing to stuff or mend, one copy. Two
        // vectorised scans instead of a step per line.
        out.extend_from_slice(content);
    } else {
        frame_into(content, true, out);
    }
    if out.len() > start && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

/// Whether every CR in `content` is followed by LF and every LF preceded by CR.
///
/// Counted rather than searched: every CRLF pair holds one CR and one LF, so the content
/// is normalised exactly when it has as many CRs and as many LFs as pairs. The counting
/// loop vectorises (u8 lanes, summed per block of 255 so none overflows); a search for
/// each newline took a step per line, about four times longer on a rendered message.
pub fn is_normalized(content: &[u8]) -> bool {
    let Some((&last, _)) = content.split_last() else {
        return true;
    };
    let (mut cr, mut lf, mut pairs) = (
        u64::from(last == b'\r'),
        u64::from(content[0] == b'\n'),
        0u64,
    );
    let (heads, tails) = (&content[..content.len() - 1], &content[1..]);
    for (head, tail) in heads.chunks(255).zip(tails.chunks(255)) {
        let (mut block_cr, mut block_lf, mut block_pairs) = (0u8, 0u8, 0u8);
        for (&a, &b) in head.iter().zip(tail) {
            let (is_cr, is_lf) = (u8::from(a == b'\r'), u8::from(b == b'\n'));
            block_cr += is_cr;
            block_lf += is_lf;
            block_pairs += is_cr & is_lf;
        }
        cr += u64::from(block_cr);
        lf += u64::from(block_lf);
        pairs += u64::from(block_pairs);
    }
    cr == pairs && lf == pairs
}

fn frame_into(content: &[u8], stuff: bool, out: &mut Vec<u8>) {
    let mut rest = content;
    if stuff && rest.first() == Some(&b'.') {
        out.push(b'.');
    }
    while let Some(i) = memchr2(b'\r', b'\n', rest) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(b"\r\n");
        let crlf = rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n');
        rest = &rest[i + if crlf { 2 } else { 1 }..];
        if stuff && rest.first() == Some(&b'.') {
            out.push(b'.');
        }
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules spelled out the slow way: split into lines at CRLF, CR or LF.
    fn reference(content: &[u8], stuff: bool) -> Vec<u8> {
        let mut lines: Vec<Vec<u8>> = vec![Vec::new()];
        let mut i = 0;
        while i < content.len() {
            match content[i] {
                b'\r' if content.get(i + 1) == Some(&b'\n') => {
                    lines.push(Vec::new());
                    i += 2;
                    continue;
                }
                b'\r' | b'\n' => lines.push(Vec::new()),
                b => lines.last_mut().unwrap().push(b),
            }
            i += 1;
        }
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop(); // the content ended in a newline (or was empty)
        }
        let mut out = Vec::new();
        for line in lines {
            if stuff && line.first() == Some(&b'.') {
                out.push(b'.');
            }
            out.extend_from_slice(&line);
            out.extend_from_slice(b"\r\n");
        }
        if stuff {
            out.extend_from_slice(b".\r\n");
        }
        out
    }

    #[test]
    fn every_short_content_over_a_small_alphabet() {
        // All strings up to length 7 over {a, ., \r, \n}: 21,845 of them.
        let alphabet = [b'a', b'.', b'\r', b'\n'];
        let mut count = 0;
        for len in 0..=7u32 {
            for n in 0..4usize.pow(len) {
                let content: Vec<u8> = (0..len).map(|k| alphabet[(n >> (2 * k)) & 3]).collect();
                assert_agrees_with_reference(&content);
                count += 1;
            }
        }
        assert_eq!(count, 21_845);
    }

    #[test]
    fn long_contents_agree_with_the_reference() {
        // Longer than the counting blocks (255), newlines and dots at every offset, clean
        // or not: a fixed pseudo-random sequence (no dependency, same cases every run).
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        for case in 0..3_000 {
            let len = (next() % 1_200) as usize;
            let clean = case % 2 == 0; // half of them CRLF-only, as a renderer writes
            let mut content = Vec::with_capacity(len + 2);
            while content.len() < len {
                match next() % 40 {
                    0 if clean => content.extend_from_slice(b"\r\n"),
                    0 => content.push(b'\r'),
                    1 if clean => content.extend_from_slice(b"\r\n"),
                    1 => content.push(b'\n'),
                    2 => content.push(b'.'),
                    _ => content.push(b'a'),
                }
            }
            assert_agrees_with_reference(&content);
        }
    }

    /// Every framing function against the reference: normalised, stuffed, and whether
    /// the content already was normal.
    fn assert_agrees_with_reference(content: &[u8]) {
        let normal = reference(content, false);
        let got = normalize_newlines(content).unwrap_or_else(|| content.to_vec());
        assert_eq!(got, normal, "{content:?}");
        assert_eq!(
            data_content(content),
            reference(content, true),
            "{content:?}"
        );
        assert_eq!(
            is_normalized(content),
            normal == content || normal == [content, b"\r\n"].concat(),
            "{content:?}"
        );
    }

    #[test]
    fn a_clean_content_is_not_copied() {
        assert_eq!(normalize_newlines(b"a\r\n.b\r\n"), None);
        assert_eq!(normalize_newlines(b""), None);
        assert_eq!(normalize_newlines(b"a"), Some(b"a\r\n".to_vec()));
        assert_eq!(normalize_piece(b"a\r\nb"), None);
        assert_eq!(normalize_piece(b"a\rb\n"), Some(b"a\r\nb\r\n".to_vec()));
        assert_eq!(data_content(b""), b".\r\n");
        assert_eq!(data_content(b".a\n.\n"), b"..a\r\n..\r\n.\r\n");
    }

    #[test]
    fn a_data_group_is_its_pieces_in_one_buffer() {
        let mail = b"MAIL FROM:<s@b.test>\r\n";
        assert_eq!(
            data_group(None, false, mail, &["r@b.test"], false).unwrap(),
            b"MAIL FROM:<s@b.test>\r\nRCPT TO:<r@b.test>\r\nDATA\r\n"
        );
        for body in [&b""[..], b"Hi\n.dot", b"clean\r\n", b".\r\n"] {
            let got = data_group(Some(body), true, mail, &["r@b.test", "q@b.test"], false);
            let want = [
                &data_content(body)[..],
                b"RSET\r\n",
                mail,
                b"RCPT TO:<r@b.test>\r\nRCPT TO:<q@b.test>\r\nDATA\r\n",
            ]
            .concat();
            assert_eq!(got.unwrap(), want, "{body:?}");
        }
        // One recipient that cannot go on a command line and nothing is framed.
        let bad = [
            "",
            "a\r\nDATA@b.test",
            "<x>@b.test",
            "a\x7f@b.test",
            "\u{fc}@b.test",
        ];
        for rcpt in bad {
            assert_eq!(
                data_group(Some(b"x"), false, mail, &["r@b.test", rcpt], false),
                None,
                "{rcpt:?}"
            );
        }
        assert!(data_group(None, false, mail, &["\u{fc}@b.test"], true).is_some());
        let long = "a".repeat(MAX_ADDRESS - 7) + "@b.test";
        assert!(address_ok(&long, false));
        assert!(!address_ok(&(long + "x"), false));
    }
}
