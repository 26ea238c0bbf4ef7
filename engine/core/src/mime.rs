//! Per-recipient MIME message rendering (`multipart/alternative`, quoted-printable parts).
//!
//! [`MessageRenderer::new`] compiles the campaign once: the subject, the preheader, the HTML
//! (as HTML, see [`crate::html`]) and the optional text template, every header that does not
//! depend on the recipient, the open and click tracking of the HTML part (see
//! [`crate::tracking`]), the text part derived from the HTML template (the rules of
//! [`crate::text`] with each field standing for opaque text: its value, as text), and the
//! quoted-printable encoding of every long literal text of the bodies (see
//! [`crate::qp::QpChunk`]). Per recipient only the values, the tracking token
//! and the per-message headers are written and encoded. A message is one RFC 5322
//! message (CRLF line endings, not dot-stuffed):
//!
//! ```text
//! From, To, [Reply-To], Subject, Date, Message-ID, MIME-Version, List-Unsubscribe,
//! List-Unsubscribe-Post, <extra headers>, Content-Type: multipart/alternative
//! --=_mc_<hash>  text/plain; charset=utf-8, quoted-printable
//! --=_mc_<hash>  text/html; charset=utf-8, quoted-printable
//! --=_mc_<hash>--
//! ```
//!
//! The preheader (when it renders to more than whitespace) is a hidden block right after the
//! first `<body …>` tag of the HTML template (at the start without one). With [`Tracking`]
//! on, each [`Recipient`] supplies its tracking token; a text part derived from the HTML shows
//! the tracked URLs (`T (TRACKED_URL)`); a given `text` template is never rewritten.
//!
//! Rendering first makes a [`RenderPlan`]: the message as a list of byte slices, the
//! recipient's bytes in the plan's own buffer and the rest referring to the renderer's
//! precomputed text. [`MessageRenderer::write_plan`] then copies it out, so a caller can
//! write each message once into memory it owns (`render` and `render_batch` write `Vec`s).
//!
//! Header safety: every value written into a header is either validated (addresses,
//! message id, URL, date, extra header names) or sanitised with [`header::sanitize`], so
//! nothing from a value can start a new header line. The boundary starts with `=_`, which
//! quoted-printable output can never contain.

use crate::dkim::DkimSigner;
use crate::error::{Error, Result};
use crate::header::{self, sanitize, trim_wsp, validate_address, validate_field_name};
use crate::parallel;
use crate::qp::{QpChunk, QpSink, QpStream};
use crate::template::{html_escape_into, Escape, Segment, Template};
use crate::text;
use crate::textpart::{Piece, TextOut, TextProgram};
use crate::tracking::{self, Tracking};

/// Batches of at least this many messages are split across threads.
pub const PARALLEL_THRESHOLD: usize = 256;

/// Maximum length of a message id or unsubscribe URL (keeps header lines < 998 octets).
const MAX_TOKEN_LEN: usize = 900;
/// Maximum length of the date header value.
const MAX_DATE_LEN: usize = 200;
/// Literal body text at least this long is encoded once, at compile time; shorter text is
/// encoded per message (a precomputed chunk after a value costs a soft line break).
const MIN_CHUNK: usize = 64;

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
    /// Preheader template (an HTML template: hidden preview block).
    pub preheader: &'a str,
    /// HTML body template.
    pub html: &'a str,
    /// Plain-text template; `None` derives the text from the HTML template.
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

/// A template and where its fields are among the renderer's.
#[derive(Debug, Clone)]
struct Part {
    template: Template,
    /// `index[i]`: position in [`MessageRenderer::fields`] of the template's field `i`.
    index: Vec<usize>,
}

impl Part {
    fn compile(name: &str, source: &str, html: bool, fields: &mut Vec<String>) -> Result<Part> {
        let compiled = if html {
            Template::compile_html(source)
        } else {
            Template::compile(source)
        };
        let template = compiled.map_err(|e| match e {
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

    fn render_into(&self, out: &mut String, values: &[Option<&str>], html: bool) {
        self.template
            .render_into_indexed(out, values, &self.index, html);
    }
}

/// One step of writing a body from a compiled template.
#[derive(Debug, Clone)]
enum BodyOp {
    /// Literal text encoded in advance (index into [`MessageRenderer::chunks`]).
    Chunk(u32),
    /// Short literal text.
    Lit(Box<str>),
    /// A field (`slot` in [`MessageRenderer::fields`]); `html`: its escaping, `None` raw.
    Field {
        slot: usize,
        default: Option<Box<str>>,
        html: Option<Escape>,
    },
    /// The tracking token.
    Token,
}

/// The quoted-printable encodings made at compile time.
#[derive(Debug, Clone, Default)]
struct Chunks(Vec<QpChunk>);

impl Chunks {
    /// Register `text`: long text gets an encoding (its id), short text none.
    fn register(&mut self, text: &str) -> Option<u32> {
        if text.len() < MIN_CHUNK {
            return None;
        }
        let id = self.0.len() as u32;
        self.0.push(QpChunk::new(text.as_bytes(), id));
        Some(id)
    }

    /// The body ops of `segments` (`index`: the template's field slots).
    fn body(&mut self, segments: &[Segment], index: &[usize], html: bool) -> Vec<BodyOp> {
        segments
            .iter()
            .filter_map(|segment| {
                Some(match segment {
                    Segment::Literal(text) if text.is_empty() => return None,
                    Segment::Literal(text) => match self.register(text) {
                        Some(id) => BodyOp::Chunk(id),
                        None => BodyOp::Lit(text.as_str().into()),
                    },
                    Segment::Field {
                        field,
                        default,
                        escape,
                    } => BodyOp::Field {
                        slot: index.get(*field).copied().unwrap_or(usize::MAX),
                        default: default.as_deref().map(Into::into),
                        html: html.then(|| escape.clone()),
                    },
                    Segment::Token => BodyOp::Token,
                })
            })
            .collect()
    }
}

/// The text part: a given template, or derived from the HTML template.
#[derive(Debug, Clone)]
enum TextBody {
    Given(Vec<BodyOp>),
    Derived(TextProgram),
}

/// Compiled campaign message: renders one complete MIME message per recipient.
#[derive(Debug, Clone)]
pub struct MessageRenderer {
    subject: Part,
    preheader: Part,
    /// Whether the preheader renders to more than whitespace, when that does not depend on
    /// the recipient.
    preheader_shown: Option<bool>,
    /// The HTML body without and with the preheader block.
    html: Vec<BodyOp>,
    html_preheader: Vec<BodyOp>,
    text: TextBody,
    chunks: Chunks,
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
    /// DKIM signer (`None`: messages are not signed).
    dkim: Option<DkimSigner>,
}

/// A message ready to be written: the recipient's bytes and references to the renderer's
/// precomputed text (see [`MessageRenderer::plan_batch`]). Reusable: planning clears it.
#[derive(Debug, Clone, Default)]
pub struct RenderPlan {
    /// The recipient's bytes.
    own: Vec<u8>,
    segs: Vec<Seg>,
    /// Start in `own` of the bytes not yet in a segment.
    mark: usize,
    len: usize,
}

#[derive(Debug, Clone, Copy)]
enum Seg {
    /// `own[start..end]`.
    Own(u32, u32),
    /// A precomputed chunk's encoding from byte `from`.
    Chunk(u32, u32),
}

impl RenderPlan {
    /// An empty plan.
    pub fn new() -> RenderPlan {
        RenderPlan::default()
    }

    /// The length of the message in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the plan is empty (not planned yet).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn clear(&mut self) {
        self.own.clear();
        self.segs.clear();
        self.mark = 0;
        self.len = 0;
    }

    /// Close the segment of the bytes written to `own` since the last one.
    fn seal(&mut self) {
        if self.own.len() > self.mark {
            self.segs
                .push(Seg::Own(self.mark as u32, self.own.len() as u32));
            self.len += self.own.len() - self.mark;
            self.mark = self.own.len();
        }
    }
}

impl QpSink for RenderPlan {
    fn bytes(&mut self) -> &mut Vec<u8> {
        &mut self.own
    }

    fn chunk(&mut self, chunk: &QpChunk, from: usize) {
        self.seal();
        self.segs.push(Seg::Chunk(chunk.id(), from as u32));
        self.len += chunk.encoded().len() - from;
    }
}

/// Reusable per-thread buffers.
#[derive(Default)]
struct Scratch {
    subject: String,
    preheader: String,
    name: String,
    escaped: String,
    text: TextOut,
}

impl MessageRenderer {
    /// Compile the templates and precompute the fixed headers and text.
    pub fn new(spec: &MessageSpec<'_>) -> Result<Self> {
        let mut fields: Vec<String> = ["email", "firstName", "lastName"]
            .map(String::from)
            .to_vec();
        let subject = Part::compile("subject", spec.subject, false, &mut fields)?;
        let preheader = Part::compile("preheader", spec.preheader, true, &mut fields)?;
        spec.tracking.validate()?;
        let html = Part::compile("html", spec.html, true, &mut fields)?;
        let text = spec
            .text
            .map(|t| Part::compile("text", t, false, &mut fields))
            .transpose()?;
        let (instrumented, links) = tracking::instrument(&html.template, &spec.tracking);

        let mut chunks = Chunks::default();
        let text = match text {
            Some(part) => {
                TextBody::Given(chunks.body(part.template.segments(), &part.index, false))
            }
            None => TextBody::Derived(TextProgram::compile(&instrumented, &html.index, |t| {
                chunks.register(t)
            })),
        };
        let html_ops = chunks.body(instrumented.segments(), &html.index, true);
        let preheader_shown = preheader
            .template
            .fields()
            .is_empty()
            .then(|| !preheader.template.render(&[], true).trim().is_empty());
        let html_preheader = if preheader_shown == Some(false) {
            Vec::new()
        } else {
            let with = with_preheader(&instrumented, &html.index, &preheader);
            chunks.body(&with, &(0..fields.len()).collect::<Vec<_>>(), true)
        };

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

        Ok(MessageRenderer {
            subject,
            preheader,
            preheader_shown,
            html: html_ops,
            html_preheader,
            text,
            chunks,
            fields,
            tracked: spec.tracking.enabled(),
            links,
            from_line,
            reply_to_line,
            tail_block,
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
        let mut plan = RenderPlan::new();
        self.plan_one(
            recipient,
            &date_line,
            dkim_timestamp,
            &mut Scratch::default(),
            &mut plan,
        )?;
        Ok(self.to_vec(&plan))
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
        self.render_batch_with_threads_at(
            recipients,
            date,
            dkim_timestamp,
            default_threads(recipients.len()),
        )
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
            let mut plan = RenderPlan::new();
            chunk
                .iter()
                .map(|r| {
                    self.plan_one(r, &date_line, dkim_timestamp, &mut scratch, &mut plan)?;
                    Ok(self.to_vec(&plan))
                })
                .collect()
        })
    }

    /// Plan one message per recipient into the first `recipients.len()` of `plans` (grown as
    /// needed, never shrunk: plans and their buffers are reused from call to call), splitting
    /// the work across `threads` (≥ 1). On error, the error of the first failing recipient
    /// (in order) is returned. Write the messages with [`MessageRenderer::write_plan`] or read
    /// them with [`MessageRenderer::plan_slices`].
    pub fn plan_batch(
        &self,
        recipients: &[Recipient<'_>],
        date: &str,
        dkim_timestamp: Option<u64>,
        threads: usize,
        plans: &mut Vec<RenderPlan>,
    ) -> Result<()> {
        let date_line = date_line(date)?;
        if self.dkim.is_some() && dkim_timestamp.is_none() {
            return Err(missing_timestamp());
        }
        if plans.len() < recipients.len() {
            plans.resize_with(recipients.len(), RenderPlan::new);
        }
        let plans = &mut plans[..recipients.len()];
        parallel::for_each_chunk(recipients, plans, threads, |chunk, plans| {
            let mut scratch = Scratch::default();
            for (r, plan) in chunk.iter().zip(plans.iter_mut()) {
                self.plan_one(r, &date_line, dkim_timestamp, &mut scratch, plan)?;
            }
            Ok(())
        })
    }

    /// The bytes of a planned message, in order (their lengths add up to `plan.len()`).
    pub fn plan_slices<'a>(&'a self, plan: &'a RenderPlan) -> impl Iterator<Item = &'a [u8]> + 'a {
        plan.segs.iter().map(move |seg| match *seg {
            Seg::Own(a, b) => &plan.own[a as usize..b as usize],
            Seg::Chunk(id, from) => &self.chunks.0[id as usize].encoded()[from as usize..],
        })
    }

    /// Write a planned message into `out` (exactly `plan.len()` bytes long).
    pub fn write_plan(&self, plan: &RenderPlan, out: &mut [u8]) {
        let mut at = 0;
        for slice in self.plan_slices(plan) {
            out[at..at + slice.len()].copy_from_slice(slice);
            at += slice.len();
        }
    }

    fn to_vec(&self, plan: &RenderPlan) -> Vec<u8> {
        let mut out = Vec::with_capacity(plan.len());
        for slice in self.plan_slices(plan) {
            out.extend_from_slice(slice);
        }
        out
    }

    fn plan_one(
        &self,
        r: &Recipient<'_>,
        date_line: &[u8],
        dkim_timestamp: Option<u64>,
        s: &mut Scratch,
        plan: &mut RenderPlan,
    ) -> Result<()> {
        plan.clear();
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
        s.name.clear();
        self.subject.render_into(&mut s.subject, values, false);
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

        let out = &mut plan.own;
        out.extend_from_slice(&self.from_line);
        header::write_address(out, "To", &s.name, email);
        out.extend_from_slice(&self.reply_to_line);
        header::write_unstructured(out, "Subject", subject);
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

        let mut stream = QpStream::new();
        match &self.text {
            TextBody::Given(ops) => self.write_body(ops, values, token, &mut stream, plan, s),
            TextBody::Derived(program) => {
                program.run(&mut s.text, values, token);
                for &piece in &s.text.pieces {
                    match piece {
                        Piece::Chunk(i) => {
                            let chunk = &program.chunks()[i as usize];
                            match chunk.id {
                                Some(id) => stream.write_chunk(plan, &self.chunks.0[id as usize]),
                                None => stream.write(&mut plan.own, chunk.text.as_bytes()),
                            }
                        }
                        Piece::Dyn(a, b) => stream.write(
                            &mut plan.own,
                            &s.text.scratch.as_bytes()[a as usize..b as usize],
                        ),
                    }
                }
            }
        }
        stream.finish(&mut plan.own);

        let out = &mut plan.own;
        out.extend_from_slice(b"\r\n--");
        out.extend_from_slice(&boundary);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(HTML_PART_HEADERS);
        let shown = match self.preheader_shown {
            Some(shown) => shown,
            None => {
                s.preheader.clear();
                self.preheader.render_into(&mut s.preheader, values, true);
                !s.preheader.trim().is_empty()
            }
        };
        let html = if shown {
            &self.html_preheader
        } else {
            &self.html
        };
        let mut stream = QpStream::new();
        self.write_body(html, values, token, &mut stream, plan, s);
        stream.finish(&mut plan.own);
        let out = &mut plan.own;
        out.extend_from_slice(b"\r\n--");
        out.extend_from_slice(&boundary);
        out.extend_from_slice(b"--\r\n");
        plan.seal();

        if let Some(signer) = &self.dkim {
            let timestamp = dkim_timestamp.ok_or_else(missing_timestamp)?;
            let message = self.to_vec(plan);
            let field = signer.signature_field(&message, timestamp)?;
            plan.clear();
            plan.own.extend_from_slice(&field);
            plan.own.extend_from_slice(&message);
            plan.seal();
        }
        Ok(())
    }

    fn write_body(
        &self,
        ops: &[BodyOp],
        values: &[Option<&str>],
        token: &str,
        stream: &mut QpStream,
        plan: &mut RenderPlan,
        s: &mut Scratch,
    ) {
        for op in ops {
            match op {
                BodyOp::Chunk(id) => stream.write_chunk(plan, &self.chunks.0[*id as usize]),
                BodyOp::Lit(text) => stream.write(&mut plan.own, text.as_bytes()),
                BodyOp::Field {
                    slot,
                    default,
                    html,
                } => {
                    let v = match values.get(*slot).copied().flatten() {
                        Some(v) if !v.is_empty() => v,
                        _ => default.as_deref().unwrap_or(""),
                    };
                    match html {
                        None => stream.write(&mut plan.own, v.as_bytes()),
                        Some(escape) => {
                            let v = escape.apply(v);
                            if v.bytes()
                                .any(|b| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\''))
                            {
                                s.escaped.clear();
                                html_escape_into(&mut s.escaped, v);
                                stream.write(&mut plan.own, s.escaped.as_bytes());
                            } else {
                                stream.write(&mut plan.own, v.as_bytes());
                            }
                        }
                    }
                }
                BodyOp::Token => stream.write(&mut plan.own, token.as_bytes()),
            }
        }
    }
}

/// Threads for a batch of `n` messages.
fn default_threads(n: usize) -> usize {
    if n >= PARALLEL_THRESHOLD {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        1
    }
}

/// The segments of `html` with the preheader block after its first `<body …>` tag (at the
/// start without one); fields index [`MessageRenderer::fields`].
fn with_preheader(html: &Template, html_index: &[usize], preheader: &Part) -> Vec<Segment> {
    let reindex = |segments: &[Segment], index: &[usize]| -> Vec<Segment> {
        segments
            .iter()
            .map(|s| match s {
                Segment::Field {
                    field,
                    default,
                    escape,
                } => Segment::Field {
                    field: index.get(*field).copied().unwrap_or(usize::MAX),
                    default: default.clone(),
                    escape: escape.clone(),
                },
                other => other.clone(),
            })
            .collect()
    };
    let mut scanned = String::with_capacity(html.literal_len() + 2 * html.segments().len());
    for segment in html.segments() {
        match segment {
            Segment::Literal(text) => scanned.push_str(text),
            _ => scanned.push_str("{{"),
        }
    }
    let at = text::body_open_end(&scanned).unwrap_or(0);
    let mut block = vec![Segment::Literal(PREHEADER_OPEN.to_owned())];
    block.extend(reindex(preheader.template.segments(), &preheader.index));
    block.push(Segment::Literal(PREHEADER_CLOSE.to_owned()));

    let mut out = Vec::with_capacity(html.segments().len() + block.len() + 1);
    let mut pos = 0;
    let mut block = Some(block);
    for segment in reindex(html.segments(), html_index) {
        let len = match &segment {
            Segment::Literal(text) => text.len(),
            _ => 2,
        };
        if let (Some(_), Segment::Literal(text)) = (&block, &segment) {
            if at >= pos && at <= pos + len {
                let (head, tail) = text.split_at(at - pos);
                out.push(Segment::Literal(head.to_owned()));
                out.extend(block.take().unwrap_or_default());
                out.push(Segment::Literal(tail.to_owned()));
                pos += len;
                continue;
            }
        }
        if block.is_some() && at == pos && at == 0 {
            out.extend(block.take().unwrap_or_default());
        }
        out.push(segment);
        pos += len;
    }
    out.extend(block.unwrap_or_default());
    merge_literals(out)
}

/// Adjacent literals merged, empty ones dropped.
fn merge_literals(segments: Vec<Segment>) -> Vec<Segment> {
    let mut merged: Vec<Segment> = Vec::with_capacity(segments.len());
    for segment in segments {
        match (segment, merged.last_mut()) {
            (Segment::Literal(text), _) if text.is_empty() => {}
            (Segment::Literal(text), Some(Segment::Literal(prev))) => prev.push_str(&text),
            (segment, _) => merged.push(segment),
        }
    }
    merged
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
    let char_ok = |c: char| {
        !c.is_whitespace() && !c.is_control() && !header::is_header_control(c) && extra(c)
    };
    // ASCII (the common case) bytewise: no whitespace or control is printable ASCII.
    let ok = !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && if token.is_ascii() {
            token
                .bytes()
                .all(|b| b.is_ascii_graphic() && extra(char::from(b)))
        } else {
            token.chars().all(char_ok)
        };
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
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; BOUNDARY_LEN];
    out[..BOUNDARY_PREFIX.len()].copy_from_slice(BOUNDARY_PREFIX);
    for (k, b) in out[BOUNDARY_PREFIX.len()..].iter_mut().enumerate() {
        *b = HEX[((hash >> (124 - 4 * k)) & 0xF) as usize];
    }
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
            let decoded = qp_decode(b.as_bytes());
            crate::qp::tests::check_encoding(b.as_bytes(), &decoded);
            String::from_utf8(decoded).unwrap()
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

        // plans: reused, never shrunk; each writes exactly its message
        let mut plans = Vec::new();
        for (n, threads) in [(600, 3), (10, 1), (300, 2)] {
            r.plan_batch(&recs[..n], DATE, None, threads, &mut plans)
                .unwrap();
            assert_eq!(plans.len(), 600);
            for (plan, want) in plans.iter().zip(&single[..n]) {
                let mut out = vec![0u8; plan.len()];
                r.write_plan(plan, &mut out);
                assert_eq!(&out, want);
                assert_eq!(
                    r.plan_slices(plan).map(<[u8]>::len).sum::<usize>(),
                    want.len()
                );
            }
        }

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
            let err = r
                .plan_batch(&recs2, DATE, None, threads, &mut Vec::new())
                .unwrap_err();
            assert!(err.to_string().contains("\"bad\""), "{err}");
            let mut late = recs.clone();
            late[599].message_id = "bad id";
            late[40].message_id = "bad<id>";
            let err = r
                .plan_batch(&late, DATE, None, threads, &mut Vec::new())
                .unwrap_err();
            assert!(err.to_string().contains("bad<id>"), "{err}");
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

    /// Random campaigns and recipients: every message parses strictly, each part's
    /// quoted-printable follows the rules, and the parts decode to what the templates give
    /// when rendered one by one (HTML rendered then the preheader inserted; the text given,
    /// or derived event by event, see `textpart::tests::reference`).
    #[test]
    fn random_messages_decode_to_the_reference() {
        use crate::qp::tests::Rng;
        const PIECES: &[&str] = &[
            "<p>", "</p>", "<br>", "<li>", "</li>", "<div>", "</div>", "<h1>", "</h1>", " ",
            "\n", "\r\n", "\r", "  ", "&nbsp;", "&amp;", "word ", "Longer text of some words ",
            ".", "From ", "=", "é", "😀", "\t", "<body class=\"x\">", "</body>", "<head><title>{{ email }}</title></head>",
            "<a href=\"https://x.io/p\">", "</a>", "<a href=\"https://x.io/q?a={{ lastName }}\">",
            "<a href=\"{{ customFields.url }}\">", "{{ firstName }}", "{{ lastName | default: \"d d\" }}",
            "{{ customFields.url }}", "<td class={{ firstName }}>", "<img src=\"https://x.io/i.png\">",
            "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. ",
        ];
        const VALUES: &[&str] = &[
            "",
            " ",
            "Ann",
            "a b",
            "\r\n.\r\nFrom x",
            "x=y",
            "  spaced  out  ",
            "é😀",
            "<b>&amp;",
            "javascript:alert(1)",
            "https://ok.io/x",
            "\t",
            "F",
            ".",
            "Fro",
            "A value long enough to need a soft line break somewhere in the middle of it, surely",
        ];
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let mut rendered = 0;
        for round in 0..1500 {
            let pick = |rng: &mut Rng, n: usize| -> String {
                (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect()
            };
            let n = rng.below(16);
            let html = pick(&mut rng, n);
            let n = rng.below(6);
            let text = (rng.below(3) == 0).then(|| pick(&mut rng, n));
            let preheader = ["", "Hi {{ firstName }}", "Static preview", " "][rng.below(4)];
            let (opens, clicks) = (rng.below(2) == 0, rng.below(2) == 0);
            let spec = MessageSpec {
                html: &html,
                text: text.as_deref(),
                preheader,
                tracking: Tracking {
                    opens,
                    clicks,
                    base: "https://t.io",
                },
                ..spec()
            };
            let Ok(r) = MessageRenderer::new(&spec) else {
                continue;
            };
            let owned: Vec<Option<&str>> = (0..r.fields().len())
                .map(|i| {
                    if i == EMAIL {
                        Some("a@x.io")
                    } else {
                        (rng.below(4) > 0).then(|| VALUES[rng.below(VALUES.len())])
                    }
                })
                .collect();
            let token = "Tok-1_x";
            let msg = r
                .render(
                    &Recipient {
                        values: &owned,
                        message_id: "m@x",
                        unsubscribe_url: "https://u.io/u",
                        tracking_token: Some(token),
                    },
                    DATE,
                )
                .unwrap();
            rendered += 1;
            let p = parse(&msg);
            let lookup = |path: &str| {
                r.fields()
                    .iter()
                    .position(|f| f == path)
                    .and_then(|i| owned[i])
            };
            let html_t = Template::compile_html(&html).unwrap();
            let (instrumented, _) = tracking::instrument(&html_t, &spec.tracking);
            let index: Vec<usize> = instrumented
                .field_paths()
                .iter()
                .map(|f| r.fields().iter().position(|g| g == f).unwrap())
                .collect();
            let mut expected_html = String::new();
            instrumented.render_into_indexed_with_token(
                &mut expected_html,
                &owned,
                &index,
                true,
                token,
            );
            let pre = Template::compile_html(preheader)
                .unwrap()
                .render_with(lookup, true);
            if !pre.trim().is_empty() {
                let at = text::body_open_end(&expected_html).unwrap_or(0);
                expected_html.insert_str(at, &format!("{PREHEADER_OPEN}{pre}{PREHEADER_CLOSE}"));
            }
            let expected_text = match &text {
                Some(t) => Template::compile(t).unwrap().render_with(lookup, false),
                None => crate::textpart::tests::reference(&instrumented, &index, &owned, token),
            };
            let crlf = |s: &str| {
                s.replace("\r\n", "\n")
                    .replace('\r', "\n")
                    .replace('\n', "\r\n")
            };
            assert_eq!(
                p.html,
                crlf(&expected_html),
                "round {round}: {html:?} {owned:?}"
            );
            assert_eq!(
                p.text,
                crlf(&expected_text),
                "round {round}: {html:?} {text:?} {owned:?}"
            );
        }
        assert!(rendered > 1000, "{rendered}");
    }
}
