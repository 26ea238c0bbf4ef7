//! Fuzzer-chosen templates, header values and recipient values through `MessageRenderer`.
//! Errors are fine; panics are not. Every rendered message is checked:
//! * CRLF line endings only (no bare CR or LF), and the message ends with CRLF;
//! * no line longer than 998 bytes;
//! * in the header block, every line is a continuation (leading SP/HTAB) or starts one of the
//!   expected fields, each exactly once: a value with CR/LF never creates a header;
//! * three boundary delimiters, each part has exactly its two fixed headers, and every body
//!   (quoted-printable) line is at most 76 bytes.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mailcore_engine::{MessageRenderer, MessageSpec, Recipient, Tracking};

#[derive(Arbitrary, Debug)]
struct Input {
    subject: String,
    preheader: String,
    html: String,
    text: Option<String>,
    from_name: Option<String>,
    reply_to: bool,
    extra_header: Option<String>,
    opens: bool,
    clicks: bool,
    /// `None`: a valid default.
    email: Option<String>,
    message_id: Option<String>,
    /// Values for every field, cycled (`email` is the recipient address).
    values: Vec<Option<String>>,
}

const EXTRA: &str = "X-Campaign";
const BASE: &str = "https://t.example.com/t";

fuzz_target!(|input: Input| {
    let headers_storage;
    let headers: &[(&str, &str)] = match &input.extra_header {
        Some(v) => {
            headers_storage = [(EXTRA, v.as_str())];
            &headers_storage
        }
        None => &[],
    };
    let spec = MessageSpec {
        subject: &input.subject,
        preheader: &input.preheader,
        html: &input.html,
        text: input.text.as_deref(),
        from_email: "news@example.com",
        from_name: input.from_name.as_deref(),
        reply_to: input.reply_to.then_some("help@example.com"),
        headers,
        tracking: Tracking {
            opens: input.opens,
            clicks: input.clicks,
            base: BASE,
        },
    };
    let Ok(renderer) = MessageRenderer::new(&spec) else {
        return;
    };
    let email = input.email.as_deref().unwrap_or("ann@example.com");
    let mut values: Vec<Option<&str>> = Vec::with_capacity(renderer.fields().len());
    values.push(Some(email));
    for i in 1..renderer.fields().len() {
        let v = if input.values.is_empty() {
            None
        } else {
            input.values[i % input.values.len()].as_deref()
        };
        values.push(v);
    }
    let message_id = input.message_id.as_deref().unwrap_or("m1.abc@example.com");
    let recipient = Recipient {
        values: &values,
        message_id,
        unsubscribe_url: "https://example.com/u/abc",
        tracking_token: Some("tok_123-X"),
    };
    let Ok(msg) = renderer.render(&recipient, "Mon, 30 Nov 2026 10:00:00 +0000") else {
        return;
    };
    check(&msg, input.reply_to, input.extra_header.is_some());
});

fn check(msg: &[u8], reply_to: bool, extra: bool) {
    let text = std::str::from_utf8(msg).expect("message is UTF-8");
    assert!(text.ends_with("\r\n"), "no final CRLF");
    let lines: Vec<&str> = text[..text.len() - 2].split("\r\n").collect();
    for line in &lines {
        assert!(!line.contains(['\r', '\n']), "bare CR or LF in {line:?}");
        assert!(line.len() <= 998, "line of {} bytes", line.len());
    }

    let mut expected: Vec<&str> = vec![
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "Content-Type",
    ];
    if reply_to {
        expected.push("Reply-To");
    }
    if extra {
        expected.push(EXTRA);
    }
    let blank = lines
        .iter()
        .position(|l| l.is_empty())
        .expect("no header/body separator");
    let mut seen: Vec<&str> = Vec::new();
    for (i, line) in lines[..blank].iter().enumerate() {
        if line.starts_with([' ', '\t']) {
            assert!(i > 0, "header block starts with a continuation");
            assert!(!line.trim().is_empty(), "whitespace-only header line");
            continue;
        }
        let name = line.split_once(':').map(|(n, _)| n);
        let name = name.unwrap_or_else(|| panic!("header line without ':' {line:?}"));
        assert!(expected.contains(&name), "unexpected header line {line:?}");
        assert!(!seen.contains(&name), "duplicate header {name:?}");
        seen.push(name);
    }
    assert_eq!(seen.len(), expected.len(), "headers {seen:?}");

    let head = &lines[..blank].join("\r\n");
    // From the Content-Type field itself: a display name may contain `boundary="` too.
    let content_type = head
        .find("\r\nContent-Type: multipart/alternative;")
        .map(|i| &head[i..])
        .expect("multipart Content-Type header");
    let boundary = content_type
        .split("boundary=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("boundary parameter");
    let delim = format!("--{boundary}");
    let close = format!("--{boundary}--");
    let body = &lines[blank + 1..];
    let delims: Vec<usize> = body
        .iter()
        .enumerate()
        .filter(|(_, l)| **l == delim || **l == close)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(delims.len(), 3, "boundary delimiters");
    assert_eq!(body[delims[2]], close);
    assert_eq!(
        *body.last().unwrap(),
        close,
        "content after the close delimiter"
    );
    let parts = [
        ("text/plain", delims[0], delims[1]),
        ("text/html", delims[1], delims[2]),
    ];
    for (ctype, start, end) in parts {
        let part = &body[start + 1..end];
        assert!(part.len() >= 3, "part too short");
        assert_eq!(
            part[0],
            format!("Content-Type: {ctype}; charset=utf-8"),
            "part header"
        );
        assert_eq!(part[1], "Content-Transfer-Encoding: quoted-printable");
        assert_eq!(part[2], "");
        for line in &part[3..] {
            assert!(
                line.len() <= 76,
                "QP line of {} bytes: {line:?}",
                line.len()
            );
            assert!(line.is_ascii(), "non-ASCII QP line {line:?}");
        }
    }
}
