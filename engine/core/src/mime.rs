//! Per-recipient MIME message rendering (`multipart/alternative`, quoted-printable parts).
//!
//! [`MessageRenderer::new`] compiles the subject, preheader, HTML and (optional) text
//! templates and precomputes every header that does not depend on the recipient. Rendering
//! writes one complete RFC 5322 message (CRLF line endings, not dot-stuffed) into a single
//! preallocated buffer:
//!
//! ```text
//! From, To, [Reply-To], Subject, Date, Message-ID, MIME-Version, List-Unsubscribe,
//! List-Unsubscribe-Post, <extra headers>, Content-Type: multipart/alternative
//! --=_mc_<hash>  text/plain; charset=utf-8, quoted-printable
//! --=_mc_<hash>  text/html; charset=utf-8, quoted-printable
//! --=_mc_<hash>--
//! ```
//!
//! With [`Tracking`] on, the HTML part is instrumented once in [`MessageRenderer::new`] (see
//! [`crate::tracking`]) and each [`Recipient`] supplies its tracking token. A text part
//! derived from the HTML then shows the tracked URLs (`T (TRACKED_URL)`); a given `text`
//! template is never rewritten.
//!
//! Header safety: every value written into a header is either validated (addresses,
//! message id, URL, date, extra header names) or sanitised with [`header::sanitize`], so
//! nothing from a value can start a new header line. The boundary starts with `=_`, which
//! quoted-printable output can never contain.

use std::fmt::Write as _;

use crate::dkim::DkimSigner;
use crate::error::{Error, Result};
use crate::header::{self, sanitize, trim_wsp, validate_address, validate_field_name};
use crate::parallel;
use crate::qp;
use crate::template::Template;
use crate::text;
use crate::tracking::{self, Tracking};

/// Batches of at least this many messages are split across threads.
pub const PARALLEL_THRESHOLD: usize = 256;

/// Maximum length of a message id or unsubscribe URL (keeps header lines < 998 octets).
const MAX_TOKEN_LEN: usize = 900;
/// Room reserved for the `DKIM-Signature` field when signing.
const DKIM_FIELD_RESERVE: usize = 1024;
/// Maximum length of the date header value.
const MAX_DATE_LEN: usize = 200;

/// Header names the renderer writes itself (extra headers may not repeat them).
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "content-type",
    "content-transfer-encoding",
];

const PREHEADER_OPEN: &str =
    "<div style=\"display:none;max-height:0;overflow:hidden;mso-hide:all\" aria-hidden=\"true\">";
const PREHEADER_CLOSE: &str = "</div>";
const TEXT_PART_HEADERS: &[u8] =
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n";
const HTML_PART_HEADERS: &[u8] =
    b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n";
const BOUNDARY_PREFIX: &[u8] = b"=_mc_";
const BOUNDARY_LEN: usize = 5 + 32;

/// Positions of the always-present fields in [`MessageRenderer::fields`].
const EMAIL: usize = 0;
const FIRST_NAME: usize = 1;
const LAST_NAME: usize = 2;

/// The fixed (per-campaign) inputs of a [`MessageRenderer`].
#[derive(Debug, Clone, Copy)]
pub struct MessageSpec<'a> {
    /// Subject template (rendered without HTML escaping).
    pub subject: &'a str,
    /// Preheader template (rendered with HTML escaping, hidden preview block).
    pub preheader: &'a str,
    /// HTML body template.
    pub html: &'a str,
    /// Plain-text template; `None` derives the text from the rendered HTML.
    pub text: Option<&'a str>,
    /// Sender address.
    pub from_email: &'a str,
    /// Sender display name.
    pub from_name: Option<&'a str>,
    /// Reply-To address.
    pub reply_to: Option<&'a str>,
    /// Extra fixed headers (name, value).
    pub headers: &'a [(&'a str, &'a str)],
    /// Open and click tracking (off by default).
    pub tracking: Tracking<'a>,
}

/// One recipient of a render call.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    /// Values positionally matching [`MessageRenderer::fields`] (`None`/empty = missing).
    pub values: &'a [Option<&'a str>],
    /// Message id without angle brackets.
    pub message_id: &'a str,
    /// Absolute http(s) unsubscribe URL.
    pub unsubscribe_url: &'a str,
    /// Tracking token (`[A-Za-z0-9_-]+`); required when the renderer tracks opens or clicks.
    pub tracking_token: Option<&'a str>,
}

#[derive(Debug, Clone)]
struct Part {
    template: Template,
    /// `index[i]`: position in [`MessageRenderer::fields`] of the template's field `i`.
    index: Vec<usize>,
}

impl Part {
    fn compile(name: &str, source: &str, fields: &mut Vec<String>) -> Result<Part> {
        let template = Template::compile(source).map_err(|e| match e {
            Error::Template {
                message,
                field,
                offset,
            } => Error::Template {
                message: format!("{name}: {message}"),
                field,
                offset,
            },
            other => other,
        })?;
        let index = template
            .field_paths()
            .iter()
            .map(|path| match fields.iter().position(|f| f == path) {
                Some(i) => i,
                None => {
                    fields.push(path.clone());
                    fields.len() - 1
                }
            })
            .collect();
        Ok(Part { template, index })
    }

    fn render_into(&self, out: &mut String, values: &[Option<&str>], html: bool, token: &str) {
        self.template
            .render_into_indexed_with_token(out, values, &self.index, html, token);
    }
}

/// Compiled campaign message: renders one complete MIME message per recipient.
#[derive(Debug, Clone)]
pub struct MessageRenderer {
    subject: Part,
    preheader: Part,
    html: Part,
    text: Option<Part>,
    fields: Vec<String>,
    /// Whether messages carry a tracking token (open or click tracking is on).
    tracked: bool,
    /// Link table of click tracking: tracked URLs in order of first appearance.
    links: Vec<String>,
    /// The `From:` field.
    from_line: Vec<u8>,
    /// The `Reply-To:` field (empty without a reply-to address).
    reply_to_line: Vec<u8>,
    /// `List-Unsubscribe-Post`, extra headers and the start of the `Content-Type` field.
    tail_block: Vec<u8>,
    /// Capacity estimate of the recipient-independent part of a message.
    base_capacity: usize,
    /// DKIM signer (`None`: messages are not signed).
    dkim: Option<DkimSigner>,
}

/// Reusable per-thread buffers.
#[derive(Default)]
struct Scratch {
    subject: String,
    preheader: String,
    html: String,
    text: String,
    name: String,
}

impl MessageRenderer {
    /// Compile the templates and precompute the fixed headers.
    pub fn new(spec: &MessageSpec<'_>) -> Result<Self> {
        let mut fields: Vec<String> = ["email", "firstName", "lastName"]
            .map(String::from)
            .to_vec();
        let subject = Part::compile("subject", spec.subject, &mut fields)?;
        let preheader = Part::compile("preheader", spec.preheader, &mut fields)?;
        spec.tracking.validate()?;
        let mut html = Part::compile("html", spec.html, &mut fields)?;
        let (instrumented, links) = tracking::instrument(&html.template, &spec.tracking);
        html.template = instrumented;
        let text = spec
            .text
            .map(|t| Part::compile("text", t, &mut fields))
            .transpose()?;

        let mut from_line = Vec::with_capacity(128);
        validate_address("from", spec.from_email)?;
        let from_name = sanitize(spec.from_name.unwrap_or(""));
        header::write_address(
            &mut from_line,
            "From",
            trim_wsp(&from_name),
            spec.from_email,
        );
        let mut reply_to_line = Vec::new();
        if let Some(reply_to) = spec.reply_to {
            validate_address("reply-to", reply_to)?;
            reply_to_line.extend_from_slice(b"Reply-To: <");
            reply_to_line.extend_from_slice(reply_to.as_bytes());
            reply_to_line.extend_from_slice(b">\r\n");
        }

        let mut tail_block = Vec::with_capacity(256);
        tail_block.extend_from_slice(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
        for &(name, value) in spec.headers {
            validate_field_name(name)?;
            if RESERVED_HEADERS
                .iter()
                .any(|r| r.eq_ignore_ascii_case(name))
            {
                return Err(Error::Mime(format!(
                    "header {name:?} is set by the renderer and cannot be overridden"
                )));
            }
            if value.contains(['\r', '\n']) {
                return Err(Error::Mime(format!(
                    "value of header {name:?} contains CR or LF"
                )));
            }
            header::write_unstructured(&mut tail_block, name, trim_wsp(&sanitize(value)));
        }
        tail_block.extend_from_slice(b"Content-Type: multipart/alternative;\r\n boundary=\"");

        let literals = subject.template.literal_len()
            + preheader.template.literal_len()
            + PREHEADER_OPEN.len()
            + PREHEADER_CLOSE.len();
        let base_capacity = from_line.len()
            + reply_to_line.len()
            + tail_block.len()
            + TEXT_PART_HEADERS.len()
            + HTML_PART_HEADERS.len()
            + 4 * BOUNDARY_LEN
            + 2 * literals
            + 256;
        Ok(MessageRenderer {
            subject,
            preheader,
            html,
            text,
            fields,
            tracked: spec.tracking.enabled(),
            links,
            from_line,
            reply_to_line,
            tail_block,
            base_capacity,
            dkim: None,
        })
    }

    /// Field paths a [`Recipient::values`] slice must supply, positionally: `email`,
    /// `firstName`, `lastName`, then every other path the templates reference.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// The link table: distinct tracked link URLs in order of first appearance (a link's
    /// position is its id in `{base}/c/{token}/{id}`); empty without click tracking.
    pub fn links(&self) -> &[String] {
        &self.links
    }

    /// Whether messages need a [`Recipient::tracking_token`].
    pub fn is_tracked(&self) -> bool {
        self.tracked
    }

    /// Sign every rendered message with `signer` (DKIM, see [`crate::dkim`]).
    pub fn with_dkim(mut self, signer: DkimSigner) -> Self {
        self.dkim = Some(signer);
        self
    }

    /// The DKIM signer, if messages are signed.
    pub fn dkim(&self) -> Option<&DkimSigner> {
        self.dkim.as_ref()
    }

    /// Render one message (unsigned renderer; see [`MessageRenderer::render_at`]).
    pub fn render(&self, recipient: &Recipient<'_>, date: &str) -> Result<Vec<u8>> {
        self.render_at(recipient, date, None)
    }

    /// Render one message; `dkim_timestamp` (UNIX seconds, the `t=` tag) is required when the
    /// renderer signs (see [`MessageRenderer::with_dkim`]) and ignored otherwise.
    pub fn render_at(
        &self,
        recipient: &Recipient<'_>,
        date: &str,
        dkim_timestamp: Option<u64>,
    ) -> Result<Vec<u8>> {
        let date_line = date_line(date)?;
        self.render_one(
            recipient,
            &date_line,
            dkim_timestamp,
            &mut Scratch::default(),
        )
    }

    /// Render every recipient (same `date`); batches of at least [`PARALLEL_THRESHOLD`]
    /// messages are split across the available cores. On error, the error of the first
    /// failing recipient (in order) is returned. Unsigned renderer; see
    /// [`MessageRenderer::render_batch_at`].
    pub fn render_batch(&self, recipients: &[Recipient<'_>], date: &str) -> Result<Vec<Vec<u8>>> {
        self.render_batch_at(recipients, date, None)
    }

    /// [`MessageRenderer::render_batch`] with the DKIM timestamp (see
    /// [`MessageRenderer::render_at`]).
    pub fn render_batch_at(
        &self,
        recipients: &[Recipient<'_>],
        date: &str,
        dkim_timestamp: Option<u64>,
    ) -> Result<Vec<Vec<u8>>> {
        let threads = if recipients.len() >= PARALLEL_THRESHOLD {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            1
        };
        self.render_batch_with_threads_at(recipients, date, dkim_timestamp, threads)
    }

    /// [`MessageRenderer::render_batch`] with an explicit thread count (≥ 1).
    pub fn render_batch_with_threads(
        &self,
        recipients: &[Recipient<'_>],
        date: &str,
        threads: usize,
    ) -> Result<Vec<Vec<u8>>> {
        self.render_batch_with_threads_at(recipients, date, None, threads)
    }

    /// [`MessageRenderer::render_batch_at`] with an explicit thread count (≥ 1).
    pub fn render_batch_with_threads_at(
        &self,
        recipients: &[Recipient<'_>],
        date: &str,
        dkim_timestamp: Option<u64>,
        threads: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let date_line = date_line(date)?;
        if self.dkim.is_some() && dkim_timestamp.is_none() {
            return Err(missing_timestamp());
        }
        parallel::map_chunks(recipients, threads, |chunk| {
            let mut scratch = Scratch::default();
            chunk
                .iter()
                .map(|r| self.render_one(r, &date_line, dkim_timestamp, &mut scratch))
                .collect()
        })
    }

    fn render_one(
        &self,
        r: &Recipient<'_>,
        date_line: &[u8],
        dkim_timestamp: Option<u64>,
        s: &mut Scratch,
    ) -> Result<Vec<u8>> {
        let values = r.values;
        let value = |i: usize| values.get(i).copied().flatten().unwrap_or("");
        let email = value(EMAIL);
        if email.is_empty() {
            return Err(Error::Mime(
                "recipient has no email (values['email'] is missing or empty)".into(),
            ));
        }
        validate_address("recipient", email)?;
        validate_token("message id", r.message_id, |c| c != '<' && c != '>')?;
        validate_url(r.unsubscribe_url)?;
        let token = match r.tracking_token {
            Some(token) => {
                tracking::validate_token(token)?;
                token
            }
            None if self.tracked => {
                return Err(Error::Mime(
                    "a tracking token is required when open or click tracking is on".into(),
                ))
            }
            None => "",
        };

        s.subject.clear();
        s.preheader.clear();
        s.html.clear();
        s.text.clear();
        s.name.clear();
        self.subject.render_into(&mut s.subject, values, false, "");
        self.preheader
            .render_into(&mut s.preheader, values, true, "");
        self.html.render_into(&mut s.html, values, true, token);
        match &self.text {
            Some(part) => part.render_into(&mut s.text, values, false, ""),
            None => text::html_to_text_into(&mut s.text, &s.html),
        }
        if !s.preheader.trim().is_empty() {
            let at = text::body_open_end(&s.html).unwrap_or(0);
            let block_len = PREHEADER_OPEN.len() + s.preheader.len() + PREHEADER_CLOSE.len();
            s.html.reserve(block_len);
            s.html.insert_str(at, PREHEADER_CLOSE);
            s.html.insert_str(at, &s.preheader);
            s.html.insert_str(at, PREHEADER_OPEN);
        }
        for part in [value(FIRST_NAME), value(LAST_NAME)] {
            let part = sanitize(part);
            let part = trim_wsp(&part);
            if !part.is_empty() {
                if !s.name.is_empty() {
                    s.name.push(' ');
                }
                s.name.push_str(part);
            }
        }
        let subject = sanitize(&s.subject);
        let subject = trim_wsp(&subject);

        let capacity = self.base_capacity
            + if self.dkim.is_some() {
                DKIM_FIELD_RESERVE
            } else {
                0
            }
            + date_line.len()
            + 2 * (s.name.len() + subject.len())
            + email.len()
            + r.message_id.len()
            + r.unsubscribe_url.len()
            + qp::estimate_len(s.text.len())
            + qp::estimate_len(s.html.len());
        let mut out = Vec::with_capacity(capacity);
        out.extend_from_slice(&self.from_line);
        header::write_address(&mut out, "To", &s.name, email);
        out.extend_from_slice(&self.reply_to_line);
        header::write_unstructured(&mut out, "Subject", subject);
        out.extend_from_slice(date_line);
        out.extend_from_slice(b"Message-ID: <");
        out.extend_from_slice(r.message_id.as_bytes());
        out.extend_from_slice(b">\r\nMIME-Version: 1.0\r\nList-Unsubscribe: <");
        out.extend_from_slice(r.unsubscribe_url.as_bytes());
        out.extend_from_slice(b">\r\n");
        out.extend_from_slice(&self.tail_block);
        let boundary = boundary(r.message_id);
        out.extend_from_slice(&boundary);
        out.extend_from_slice(b"\"\r\n\r\n--");
        out.extend_from_slice(&boundary);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(TEXT_PART_HEADERS);
        qp::encode_into(&mut out, s.text.as_bytes());
        out.extend_from_slice(b"\r\n--");
        out.extend_from_slice(&boundary);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(HTML_PART_HEADERS);
        qp::encode_into(&mut out, s.html.as_bytes());
        out.extend_from_slice(b"\r\n--");
        out.extend_from_slice(&boundary);
        out.extend_from_slice(b"--\r\n");
        if let Some(signer) = &self.dkim {
            let timestamp = dkim_timestamp.ok_or_else(missing_timestamp)?;
            let field = signer.signature_field(&out, timestamp)?;
            out.splice(0..0, field);
        }
        Ok(out)
    }
}

fn missing_timestamp() -> Error {
    Error::Dkim("a DKIM timestamp is required: the renderer signs with DKIM".into())
}

/// `Date: <date>` CRLF, validated: printable ASCII (spaces and tabs allowed), non-empty.
fn date_line(date: &str) -> Result<Vec<u8>> {
    let date = trim_wsp(date);
    let ok = !date.is_empty()
        && date.len() <= MAX_DATE_LEN
        && date
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7F).contains(&b));
    if !ok {
        return Err(Error::Mime(format!("invalid date {date:?}")));
    }
    let mut line = Vec::with_capacity(date.len() + 8);
    line.extend_from_slice(b"Date: ");
    line.extend_from_slice(date.as_bytes());
    line.extend_from_slice(b"\r\n");
    Ok(line)
}

/// A header token: non-empty, ≤ [`MAX_TOKEN_LEN`] bytes, no whitespace or control
/// characters (non-ASCII is allowed, RFC 6532), and every char accepted by `extra`.
fn validate_token(what: &str, token: &str, extra: impl Fn(char) -> bool) -> Result<()> {
    let ok = !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token.chars().all(|c| {
            !c.is_whitespace() && !c.is_control() && !header::is_header_control(c) && extra(c)
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Mime(format!("invalid {what} {token:?}")))
    }
}

fn validate_url(url: &str) -> Result<()> {
    validate_token("unsubscribe URL", url, |c| !matches!(c, '<' | '>' | '"'))?;
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        Ok(())
    } else {
        Err(Error::Mime(format!(
            "invalid unsubscribe URL {url:?}: expected an absolute http(s) URL"
        )))
    }
}

/// `=_mc_` + 32 hex digits of the 128-bit FNV-1a hash of the message id.
fn boundary(message_id: &str) -> [u8; BOUNDARY_LEN] {
    const OFFSET: u128 = 0x6C62_272E_07BB_0142_62B8_2175_6295_C58D;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013B;
    let hash = message_id
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u128::from(b)).wrapping_mul(PRIME));
    let mut hex = String::with_capacity(32);
    let _ = write!(hex, "{hash:032x}");
    let mut out = [0u8; BOUNDARY_LEN];
    out[..BOUNDARY_PREFIX.len()].copy_from_slice(BOUNDARY_PREFIX);
    out[BOUNDARY_PREFIX.len()..].copy_from_slice(hex.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::tests::{assert_lines_ok, decode_unstructured};
    use crate::qp::tests::decode as qp_decode;

    const DATE: &str = "Tue, 07 Jan 2025 10:00:00 +0000";
    const HTML: &str = "<html><head><title>x</title></head><body class=\"m\">\
        <h1>Hi {{ firstName | default: \"there\" }}</h1>\
        <p>Plan: {{ customFields.plan }}</p>\
        <p><a href=\"https://acme.com/p?id={{ customFields.plan }}\">Open</a></p></body></html>";

    fn spec<'a>() -> MessageSpec<'a> {
        MessageSpec {
            subject: "Hello {{ firstName }}, about {{ customFields.plan }}",
            preheader: "Preview for {{ email }}",
            html: HTML,
            text: None,
            from_email: "sarah@acme.com",
            from_name: Some("Sarah at Acme"),
            reply_to: Some("help@acme.com"),
            headers: &[("X-Mailcore-Campaign", "cmp_x")],
            tracking: Tracking::default(),
        }
    }

    fn values<'a>(r: &'a MessageRenderer, pairs: &[(&str, &'a str)]) -> Vec<Option<&'a str>> {
        r.fields()
            .iter()
            .map(|f| pairs.iter().find(|(k, _)| k == f).map(|&(_, v)| v))
            .collect()
    }

    fn render(r: &MessageRenderer, pairs: &[(&str, &str)], id: &str) -> Result<Vec<u8>> {
        let vals = values(r, pairs);
        r.render(
            &Recipient {
                values: &vals,
                message_id: id,
                unsubscribe_url: "https://acme.com/u/tok",
                tracking_token: None,
            },
            DATE,
        )
    }

    struct Parsed {
        headers: Vec<(String, Vec<u8>)>,
        boundary: String,
        text: String,
        html: String,
    }

    /// Parse a rendered message strictly (CRLF only, known structure).
    fn parse(msg: &[u8]) -> Parsed {
        let s = std::str::from_utf8(msg).unwrap();
        assert!(s.ends_with("\r\n"));
        for line in s[..s.len() - 2].split("\r\n") {
            assert!(!line.contains(['\r', '\n']), "bare CR/LF in {line:?}");
            assert!(line.len() <= 998);
            assert!(!line.starts_with('.'), "{line:?}");
        }
        let (head, body) = s.split_once("\r\n\r\n").unwrap();
        let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                let last = headers.last_mut().unwrap();
                last.1.extend_from_slice(b"\r\n");
                last.1.extend_from_slice(line.as_bytes());
            } else {
                let (name, _) = line.split_once(':').unwrap();
                headers.push((name.to_owned(), line.as_bytes().to_vec()));
            }
        }
        for (_, field) in &mut headers {
            field.extend_from_slice(b"\r\n");
        }
        let ct = &headers.iter().find(|(n, _)| n == "Content-Type").unwrap().1;
        let ct = std::str::from_utf8(ct).unwrap();
        let boundary = ct
            .split("boundary=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let delim = format!("\r\n--{boundary}");
        let body = format!("\r\n{body}");
        let parts: Vec<&str> = body.split(&delim).collect();
        assert_eq!(parts.len(), 4, "{body}");
        assert_eq!(parts[0], "");
        assert_eq!(parts[3], "--\r\n");
        let part = |p: &str, ctype: &str| {
            let (h, b) = p.split_once("\r\n\r\n").unwrap();
            assert_eq!(
                h,
                format!("\r\nContent-Type: {ctype}; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable")
            );
            String::from_utf8(qp_decode(b.as_bytes())).unwrap()
        };
        Parsed {
            text: part(parts[1], "text/plain"),
            html: part(parts[2], "text/html"),
            boundary: boundary.to_owned(),
            headers,
        }
    }

    fn header<'p>(p: &'p Parsed, name: &str) -> &'p str {
        let field = &p.headers.iter().find(|(n, _)| n == name).unwrap().1;
        let s = std::str::from_utf8(field).unwrap();
        s[name.len() + 1..s.len() - 2].trim_start()
    }

    #[test]
    fn full_message_layout() {
        let r = MessageRenderer::new(&spec()).unwrap();
        assert_eq!(
            r.fields(),
            ["email", "firstName", "lastName", "customFields.plan"]
        );
        let msg = render(
            &r,
            &[
                ("email", "ann@x.io"),
                ("firstName", "Ann"),
                ("lastName", "Lee"),
                ("customFields.plan", "Pro & Co"),
            ],
            "cmp_x.con_y@mail.example",
        )
        .unwrap();
        let p = parse(&msg);
        let names: Vec<&str> = p.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "From",
                "To",
                "Reply-To",
                "Subject",
                "Date",
                "Message-ID",
                "MIME-Version",
                "List-Unsubscribe",
                "List-Unsubscribe-Post",
                "X-Mailcore-Campaign",
                "Content-Type"
            ]
        );
        for (_, field) in &p.headers {
            assert_lines_ok(field);
        }
        assert_eq!(header(&p, "From"), "\"Sarah at Acme\" <sarah@acme.com>");
        assert_eq!(header(&p, "To"), "\"Ann Lee\" <ann@x.io>");
        assert_eq!(header(&p, "Reply-To"), "<help@acme.com>");
        assert_eq!(header(&p, "Subject"), "Hello Ann, about Pro & Co");
        assert_eq!(header(&p, "Date"), DATE);
        assert_eq!(header(&p, "Message-ID"), "<cmp_x.con_y@mail.example>");
        assert_eq!(header(&p, "MIME-Version"), "1.0");
        assert_eq!(header(&p, "List-Unsubscribe"), "<https://acme.com/u/tok>");
        assert_eq!(
            header(&p, "List-Unsubscribe-Post"),
            "List-Unsubscribe=One-Click"
        );
        assert_eq!(header(&p, "X-Mailcore-Campaign"), "cmp_x");
        assert!(p.boundary.starts_with("=_mc_") && p.boundary.len() == BOUNDARY_LEN);
        assert_eq!(
            p.html,
            HTML.replace("{{ firstName | default: \"there\" }}", "Ann")
                .replace("{{ customFields.plan }}", "Pro &amp; Co")
                .replace(
                    "<body class=\"m\">",
                    &format!(
                        "<body class=\"m\">{PREHEADER_OPEN}Preview for ann@x.io{PREHEADER_CLOSE}"
                    )
                )
        );
        assert_eq!(
            p.text,
            "Hi Ann\r\n\r\nPlan: Pro & Co\r\n\r\nOpen (https://acme.com/p?id=Pro & Co)"
        );
    }

    #[test]
    fn optional_parts() {
        let mut sp = spec();
        sp.from_name = None;
        sp.reply_to = None;
        sp.headers = &[];
        sp.text = Some("Text for {{ firstName | default: \"you\" }}\n.hidden\nFrom here");
        sp.preheader = "{{ lastName }}";
        sp.html = "<p>no body tag</p>";
        let r = MessageRenderer::new(&sp).unwrap();
        let p = parse(&render(&r, &[("email", "b@x.io")], "id1").unwrap());
        assert_eq!(header(&p, "From"), "sarah@acme.com");
        assert_eq!(header(&p, "To"), "b@x.io");
        assert!(p.headers.iter().all(|(n, _)| n != "Reply-To"));
        assert_eq!(p.text, "Text for you\r\n.hidden\r\nFrom here");
        assert_eq!(p.html, "<p>no body tag</p>");
        let p = parse(&render(&r, &[("email", "b@x.io"), ("lastName", "<L>")], "id1").unwrap());
        assert_eq!(
            p.html,
            format!("{PREHEADER_OPEN}&lt;L&gt;{PREHEADER_CLOSE}<p>no body tag</p>")
        );
        assert_eq!(header(&p, "To"), "\"<L>\" <b@x.io>");
    }

    #[test]
    fn header_injection_attempts() {
        let mut sp = spec();
        sp.from_name = Some("Evil\r\nBcc: a@b.c");
        sp.headers = &[("X-A", "v\u{0}x")];
        let r = MessageRenderer::new(&sp).unwrap();
        let evil = "x\r\nBcc: victim@x.io\r\n\r\n<h1>body</h1>\n.\r\nFrom y";
        let msg = render(
            &r,
            &[
                ("email", "a@x.io"),
                ("firstName", evil),
                ("lastName", "\u{2028}L\u{85}"),
                ("customFields.plan", evil),
            ],
            "id",
        )
        .unwrap();
        let p = parse(&msg);
        assert_eq!(p.headers.len(), 11);
        assert!(p.headers.iter().all(|(n, _)| n != "Bcc"));
        assert_eq!(header(&p, "From"), "\"Evil  Bcc: a@b.c\" <sarah@acme.com>");
        assert_eq!(header(&p, "X-A"), "v x");
        let subject = decode_unstructured(&p.headers[3].1);
        assert_eq!(
            subject,
            format!("Hello {}, about {}", evil, evil)
                .replace(['\r', '\n'], " ")
                .trim()
        );
        assert!(p.text.contains("x Bcc: victim@x.io <h1>body</h1> . From y"));
        assert!(p.html.contains("&lt;h1&gt;body&lt;/h1&gt;\r\n.\r\nFrom y"));
    }

    #[test]
    fn invalid_inputs() {
        let r = MessageRenderer::new(&spec()).unwrap();
        let mime_err = |res: Result<Vec<u8>>| match res {
            Err(Error::Mime(m)) => m,
            other => panic!("expected Mime error, got {other:?}"),
        };
        assert!(mime_err(render(&r, &[], "id")).contains("no email"));
        assert!(mime_err(render(&r, &[("email", "")], "id")).contains("no email"));
        mime_err(render(&r, &[("email", "a@b\r\nBcc: c@d")], "id"));
        mime_err(render(&r, &[("email", "<a@b>")], "id"));
        mime_err(render(&r, &[("email", "a@b")], "a b"));
        mime_err(render(&r, &[("email", "a@b")], "<id>"));
        mime_err(render(&r, &[("email", "a@b")], ""));
        mime_err(render(&r, &[("email", "a@b")], "id\r\nX: y"));
        mime_err(render(&r, &[("email", "a@b")], "id\u{2028}x"));
        mime_err(render(&r, &[("email", "a@b")], "id\u{a0}x"));
        assert!(render(&r, &[("email", "a@b")], "cmp.1@exämple.com").is_ok());
        let vals = values(&r, &[("email", "a@b")]);
        for url in [
            "ftp://x",
            "https://x y",
            "https://x>",
            "",
            "/relative",
            "https://x\r\nBcc: y",
        ] {
            let rec = Recipient {
                values: &vals,
                message_id: "id",
                unsubscribe_url: url,
                tracking_token: None,
            };
            mime_err(r.render(&rec, DATE));
        }
        let rec = Recipient {
            values: &vals,
            message_id: "id",
            unsubscribe_url: "HTTP://x",
            tracking_token: None,
        };
        assert!(r.render(&rec, DATE).is_ok());
        for date in ["", "Tue\r\nBcc: x", "日"] {
            mime_err(r.render(&rec, date));
        }

        let new_err = |sp: MessageSpec<'_>| MessageRenderer::new(&sp).unwrap_err();
        for bad in [
            MessageSpec {
                from_email: "a b@c",
                ..spec()
            },
            MessageSpec {
                reply_to: Some("x"),
                ..spec()
            },
            MessageSpec {
                headers: &[("Bad Name", "v")],
                ..spec()
            },
            MessageSpec {
                headers: &[("X-A", "a\r\nb")],
                ..spec()
            },
            MessageSpec {
                headers: &[("x-a", "a\nb")],
                ..spec()
            },
            MessageSpec {
                headers: &[("subject", "dup")],
                ..spec()
            },
        ] {
            assert!(matches!(new_err(bad), Error::Mime(_)));
        }
        let e = new_err(MessageSpec {
            preheader: "x {{ nope }}",
            ..spec()
        });
        assert_eq!(e.to_string(), "preheader: unknown field 'nope' at offset 2");
        assert!(matches!(e, Error::Template { field: Some(ref f), offset: 2, .. } if f == "nope"));
        let e = new_err(MessageSpec {
            text: Some("{{ email"),
            ..spec()
        });
        assert!(e.to_string().starts_with("text: unterminated tag"));
    }

    #[test]
    fn boundaries_are_deterministic_and_distinct() {
        assert_eq!(boundary("a@b"), boundary("a@b"));
        let all: std::collections::HashSet<_> =
            (0..10_000).map(|i| boundary(&format!("m{i}@x"))).collect();
        assert_eq!(all.len(), 10_000);
        assert!(boundary("").starts_with(b"=_mc_"));
    }

    #[test]
    fn long_and_non_ascii_values() {
        let r = MessageRenderer::new(&spec()).unwrap();
        let long = "Ünïcødé ".repeat(300) + &"x".repeat(3000) + "\n.dot\nFrom x";
        let msg = render(
            &r,
            &[
                ("email", "zoë@exämple.com"),
                ("firstName", &long),
                ("lastName", "😀"),
                ("customFields.plan", &long),
            ],
            "id",
        )
        .unwrap();
        let p = parse(&msg);
        for (_, field) in &p.headers {
            assert_lines_ok(field);
        }
        let subject = decode_unstructured(&p.headers[3].1);
        assert_eq!(
            subject,
            format!("Hello {long}, about {long}").replace('\n', " ")
        );
        assert!(header(&p, "To").ends_with("<zoë@exämple.com>"));
        assert!(p.text.contains(".dot From x"));
    }

    #[test]
    fn batch_matches_single_for_any_thread_count() {
        let r = MessageRenderer::new(&spec()).unwrap();
        let names: Vec<String> = (0..600).map(|i| format!("N{i}")).collect();
        let emails: Vec<String> = (0..600).map(|i| format!("u{i}@x.io")).collect();
        let ids: Vec<String> = (0..600).map(|i| format!("m{i}@x")).collect();
        let vals: Vec<Vec<Option<&str>>> = (0..600)
            .map(|i| values(&r, &[("email", &emails[i]), ("firstName", &names[i])]))
            .collect();
        let recs: Vec<Recipient<'_>> = (0..600)
            .map(|i| Recipient {
                values: &vals[i],
                message_id: &ids[i],
                unsubscribe_url: "https://u",
                tracking_token: None,
            })
            .collect();
        let single: Vec<Vec<u8>> = recs
            .iter()
            .map(|rec| r.render(rec, DATE).unwrap())
            .collect();
        for threads in [1, 2, 3, 7] {
            assert_eq!(
                r.render_batch_with_threads(&recs, DATE, threads).unwrap(),
                single
            );
        }
        assert_eq!(r.render_batch(&recs, DATE).unwrap(), single);
        assert!(r.render_batch(&[], DATE).unwrap().is_empty());

        // the first failing recipient (in order) is reported, whatever the split
        let bad_vals = values(&r, &[("email", "bad")]);
        let mut recs2 = recs.clone();
        recs2[450].values = &bad_vals;
        recs2[500].message_id = "bad id";
        for threads in [1, 2, 3] {
            let err = r
                .render_batch_with_threads(&recs2, DATE, threads)
                .unwrap_err();
            assert!(err.to_string().contains("\"bad\""), "{err}");
        }
    }

    const TRACK_HTML: &str = "<html><body><p>Hi {{ firstName }}</p>\
        <a href=\"https://acme.com/a?x=1&amp;y=2\">Shop</a> \
        <a href=\"https://acme.com/p/{{ customFields.plan }}\">Plan</a> \
        <a data-mc-notrack href=\"https://acme.com/raw\">Raw</a> \
        <a href='https://acme.com/a?x=1&amp;y=2'>https://acme.com/a?x=1&y=2</a></body></html>";

    fn tracked_spec<'a>(opens: bool, clicks: bool) -> MessageSpec<'a> {
        MessageSpec {
            html: TRACK_HTML,
            preheader: "",
            tracking: Tracking {
                opens,
                clicks,
                base: "https://t.acme.com",
            },
            ..spec()
        }
    }

    fn render_tok(r: &MessageRenderer, token: Option<&str>) -> Result<Vec<u8>> {
        let vals = values(r, &[("email", "a@x.io"), ("firstName", "Ann")]);
        r.render(
            &Recipient {
                values: &vals,
                message_id: "id",
                unsubscribe_url: "https://acme.com/u/tok",
                tracking_token: token,
            },
            DATE,
        )
    }

    #[test]
    fn tracking_rewrites_html_and_derived_text() {
        let r = MessageRenderer::new(&tracked_spec(true, true)).unwrap();
        assert!(r.is_tracked());
        assert_eq!(r.links(), ["https://acme.com/a?x=1&y=2"]);
        let p = parse(&render_tok(&r, Some("tok_A-1")).unwrap());
        let c0 = "https://t.acme.com/c/tok_A-1/0";
        let pixel = "<img src=\"https://t.acme.com/o/tok_A-1\" width=\"1\" height=\"1\" alt=\"\" \
            style=\"display:block;width:1px;height:1px;border:0\" />";
        assert_eq!(
            p.html,
            TRACK_HTML
                .replace("{{ firstName }}", "Ann")
                .replace("{{ customFields.plan }}", "")
                .replace("https://acme.com/a?x=1&amp;y=2", c0)
                .replace("</body>", &format!("{pixel}</body>"))
        );
        assert_eq!(
            p.text,
            format!(
                "Hi Ann\r\n\r\nShop ({c0}) Plan (https://acme.com/p/) Raw (https://acme.com/raw) \
                 https://acme.com/a?x=1&y=2 ({c0})"
            )
        );
        // a given text template is left as is
        let r = MessageRenderer::new(&MessageSpec {
            text: Some("See https://acme.com/a?x=1&y=2"),
            ..tracked_spec(true, true)
        })
        .unwrap();
        let p = parse(&render_tok(&r, Some("t")).unwrap());
        assert_eq!(p.text, "See https://acme.com/a?x=1&y=2");
        assert!(p.html.contains("https://t.acme.com/c/t/0"));
    }

    #[test]
    fn tracking_off_is_unchanged_and_tokens_are_checked() {
        let off = MessageRenderer::new(&tracked_spec(false, false)).unwrap();
        assert!(!off.is_tracked() && off.links().is_empty());
        let plain = MessageRenderer::new(&MessageSpec {
            tracking: Tracking::default(),
            ..tracked_spec(false, false)
        })
        .unwrap();
        assert_eq!(
            render_tok(&off, None).unwrap(),
            render_tok(&plain, None).unwrap()
        );
        // a token given while tracking is off is validated, then ignored
        assert_eq!(
            render_tok(&off, Some("x")).unwrap(),
            render_tok(&plain, None).unwrap()
        );
        assert!(matches!(render_tok(&off, Some("a b")), Err(Error::Mime(_))));
        for (opens, clicks) in [(true, false), (false, true), (true, true)] {
            let r = MessageRenderer::new(&tracked_spec(opens, clicks)).unwrap();
            assert_eq!(r.links().len(), usize::from(clicks));
            let e = render_tok(&r, None).unwrap_err();
            assert!(e.to_string().contains("tracking token is required"), "{e}");
            for bad in ["", "a/b", "a\r\nb", "ä", "a=b", "<x>"] {
                assert!(
                    matches!(render_tok(&r, Some(bad)), Err(Error::Mime(_))),
                    "{bad:?}"
                );
            }
            let html = parse(&render_tok(&r, Some("T0")).unwrap()).html;
            assert_eq!(html.contains("/o/T0\""), opens);
            assert_eq!(html.contains("/c/T0/0\""), clicks);
        }
        for base in ["", "https://t.io/", "ftp://t.io", "https://t.io?x"] {
            let e = MessageRenderer::new(&MessageSpec {
                tracking: Tracking {
                    opens: true,
                    clicks: false,
                    base,
                },
                ..spec()
            })
            .unwrap_err();
            assert!(matches!(e, Error::Mime(_)), "{base:?}");
        }
    }

    #[test]
    fn tracked_batch_matches_single() {
        let r = MessageRenderer::new(&tracked_spec(true, true)).unwrap();
        let emails: Vec<String> = (0..300).map(|i| format!("u{i}@x.io")).collect();
        let ids: Vec<String> = (0..300).map(|i| format!("m{i}@x")).collect();
        let tokens: Vec<String> = (0..300).map(|i| format!("tok{i}")).collect();
        let vals: Vec<Vec<Option<&str>>> = (0..300)
            .map(|i| values(&r, &[("email", &emails[i])]))
            .collect();
        let recs: Vec<Recipient<'_>> = (0..300)
            .map(|i| Recipient {
                values: &vals[i],
                message_id: &ids[i],
                unsubscribe_url: "https://u",
                tracking_token: Some(&tokens[i]),
            })
            .collect();
        let batch = r.render_batch_with_threads(&recs, DATE, 3).unwrap();
        for (i, msg) in batch.iter().enumerate() {
            assert_eq!(*msg, r.render(&recs[i], DATE).unwrap());
            let html = parse(msg).html;
            assert!(html.contains(&format!("/c/tok{i}/0\"")));
            assert!(html.contains(&format!("/o/tok{i}\"")));
        }
    }

    #[test]
    fn dkim_signed_rendering() {
        use crate::dkim::{tests::ED_PEM, Algorithm, DkimSigner};
        let signer = DkimSigner::new("acme.com", "mc1", ED_PEM, Algorithm::Ed25519Sha256).unwrap();
        let plain = MessageRenderer::new(&spec()).unwrap();
        let signed = MessageRenderer::new(&spec())
            .unwrap()
            .with_dkim(signer.clone());
        assert!(plain.dkim().is_none());
        assert_eq!(signed.dkim().unwrap().domain(), "acme.com");
        let vals = values(&signed, &[("email", "a@x.io"), ("firstName", "Ann")]);
        let recs: Vec<Recipient<'_>> = (0..3)
            .map(|_| Recipient {
                values: &vals,
                message_id: "m@x",
                unsubscribe_url: "https://u",
                tracking_token: None,
            })
            .collect();
        let unsigned = plain.render(&recs[0], DATE).unwrap();
        let msg = signed.render_at(&recs[0], DATE, Some(77)).unwrap();
        assert_eq!(msg, signer.sign(&unsigned, 77).unwrap());
        assert!(msg.starts_with(b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;"));
        let text = String::from_utf8(msg.clone()).unwrap();
        assert!(text.contains(
            " t=77; h=from:to:subject:date:message-id:mime-version:list-unsubscribe:\r\n list-unsubscribe-post:content-type;"
        ), "{text}");
        assert_eq!(
            signed
                .render_batch_with_threads_at(&recs, DATE, Some(77), 2)
                .unwrap(),
            vec![msg.clone(); 3]
        );
        // unsigned renderers ignore the timestamp; signing ones require it
        assert_eq!(plain.render_at(&recs[0], DATE, Some(77)).unwrap(), unsigned);
        for e in [
            signed.render(&recs[0], DATE).unwrap_err(),
            signed.render_batch(&recs, DATE).unwrap_err(),
            signed
                .render_at(&recs[0], DATE, Some(u64::MAX))
                .unwrap_err(),
        ] {
            assert!(matches!(e, Error::Dkim(_)), "{e:?}");
        }
    }
}
