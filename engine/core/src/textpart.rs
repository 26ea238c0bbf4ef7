//! The plain-text part derived from an HTML template, compiled once per campaign.
//!
//! The rules are those of [`crate::text`], applied to the template with every merge field
//! standing for opaque text: a field in text content contributes its value as text (its
//! whitespace runs collapse like the template's own; a value is never read as markup or as
//! character references), a field in an `<a href>` value contributes its value (as the
//! HTML part writes it, see [`crate::html`]) to the URL shown, and fields elsewhere
//! contribute nothing. For a rendered HTML part that decodes nothing across a field's edge,
//! the result equals [`crate::text::html_to_text`] of it.
//!
//! Compiling runs the conversion over the template once: text between two fields is
//! converted in advance into static chunks (each starts and ends with a non-space
//! character, so what happens at its edges does not change it); per recipient, a small
//! program places the chunks, converts the field values and resolves the links whose URL
//! or text holds a field or the tracking token. The result is a list of [`Piece`]s.

use crate::template::{Escape, Segment, Template};
use crate::text::{self, Builder, Events};

/// Stands for a field in the scanned text (literal text never contains it).
const MARK: &str = "{{";

/// A part of a URL shown for a link.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Href {
    /// Template text, character references decoded.
    Lit(Box<str>),
    Field {
        slot: usize,
        default: Option<Box<str>>,
        escape: Escape,
    },
    Token,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// Static text (index into `chunks`).
    Chunk(u32),
    Ws,
    Block(u8),
    Br,
    /// A field in text content.
    Field {
        slot: usize,
        default: Option<Box<str>>,
    },
    /// The tracking token in text content.
    Token,
    /// A link; `collapse`: whether its URL may hold whitespace to collapse.
    LinkOpen {
        href: Vec<Href>,
        collapse: bool,
    },
    LinkClose,
}

/// Static text of a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// The text (non-empty; no space or line break at either end).
    pub(crate) text: Box<str>,
    /// The caller's id for it, when the caller keeps an encoding of it.
    pub(crate) id: Option<u32>,
}

/// A compiled text derivation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TextProgram {
    ops: Vec<Op>,
    chunks: Vec<Chunk>,
}

/// One piece of a derived text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece {
    /// A static chunk of the program (index).
    Chunk(u32),
    /// Bytes of [`TextOut::scratch`].
    Dyn(u32, u32),
}

/// An event of the template's scan.
#[derive(Debug, Clone)]
enum Ev {
    Text(String),
    Ws,
    Block(u8),
    Br,
    Field {
        slot: usize,
        default: Option<Box<str>>,
    },
    Token,
    LinkOpen(Vec<Href>),
    LinkClose,
}

/// Collects the events of a scan; `segments[k]` is the segment of mark `k`.
struct Collector<'t> {
    events: Vec<Ev>,
    marks: &'t [usize],
    segments: Vec<&'t Segment>,
    index: &'t [usize],
}

impl Collector<'_> {
    fn slot(&self, field: usize) -> usize {
        self.index.get(field).copied().unwrap_or(usize::MAX)
    }
}

impl Events for Collector<'_> {
    fn text(&mut self, s: &str) {
        match self.events.last_mut() {
            Some(Ev::Text(prev)) => prev.push_str(s),
            _ => self.events.push(Ev::Text(s.to_owned())),
        }
    }

    fn ws(&mut self) {
        self.events.push(Ev::Ws);
    }

    fn block(&mut self, level: u8) {
        self.events.push(Ev::Block(level));
    }

    fn br(&mut self) {
        self.events.push(Ev::Br);
    }

    fn link_open(&mut self, html: &str, value: (usize, usize)) {
        let mut parts = Vec::new();
        let mut at = value.0;
        let first = self.marks.partition_point(|&m| m < value.0);
        let last = self.marks.partition_point(|&m| m < value.1);
        for k in first..last {
            let m = self.marks[k];
            parts.push(Href::Lit(text::decode_entities(&html[at..m]).into()));
            parts.push(match self.segments[k] {
                Segment::Field {
                    field,
                    default,
                    escape,
                } => Href::Field {
                    slot: self.slot(*field),
                    default: default.as_deref().map(Into::into),
                    escape: escape.clone(),
                },
                _ => Href::Token,
            });
            at = m + MARK.len();
        }
        parts.push(Href::Lit(text::decode_entities(&html[at..value.1]).into()));
        parts.retain(|p| !matches!(p, Href::Lit(l) if l.is_empty()));
        if let [] | [Href::Lit(_)] = parts.as_slice() {
            let raw: String = parts
                .iter()
                .map(|p| match p {
                    Href::Lit(l) => &**l,
                    _ => "",
                })
                .collect();
            let href = text::collapse_ws(&raw);
            if href.is_empty() {
                // Opens no link (and keeps an open one open).
                return;
            }
            parts = vec![Href::Lit(href.into())];
        }
        self.events.push(Ev::LinkOpen(parts));
    }

    fn link_close(&mut self) {
        self.events.push(Ev::LinkClose);
    }

    fn mark(&mut self, k: usize) {
        self.events.push(match self.segments[k] {
            Segment::Field { field, default, .. } => Ev::Field {
                slot: self.slot(*field),
                default: default.as_deref().map(Into::into),
            },
            _ => Ev::Token,
        });
    }
}

/// The events of `html` (`index[i]`: the caller's slot of the template's field `i`).
fn events(html: &Template, index: &[usize]) -> Vec<Ev> {
    let mut scanned = String::with_capacity(html.literal_len() + 2 * html.segments().len());
    let mut marks = Vec::new();
    let mut segments = Vec::new();
    for segment in html.segments() {
        match segment {
            Segment::Literal(text) => scanned.push_str(text),
            _ => {
                marks.push(scanned.len());
                segments.push(segment);
                scanned.push_str(MARK);
            }
        }
    }
    let mut c = Collector {
        events: Vec::new(),
        marks: &marks,
        segments,
        index,
    };
    text::tokenize(&scanned, &marks, &mut c);
    c.events
}

impl TextProgram {
    /// Compile the text derivation of `html` (`index[i]`: the caller's slot of the
    /// template's field `i`); `register` is called with every static chunk's text and
    /// returns the caller's id for it (e.g. when it keeps an encoding of long chunks).
    pub(crate) fn compile(
        html: &Template,
        index: &[usize],
        mut register: impl FnMut(&str) -> Option<u32>,
    ) -> TextProgram {
        let mut ops = Vec::new();
        let mut chunks: Vec<Chunk> = Vec::new();
        // The chunk being built, and the separators after its last text.
        let mut chunk: Option<String> = None;
        let mut seps: Vec<Ev> = Vec::new();
        let mut close = |chunk: &mut Option<String>, ops: &mut Vec<Op>, seps: &mut Vec<Ev>| {
            if let Some(text) = chunk.take() {
                let id = register(&text);
                ops.push(Op::Chunk(chunks.len() as u32));
                chunks.push(Chunk {
                    text: text.into(),
                    id,
                });
            }
            ops.extend(seps.drain(..).map(|ev| match ev {
                Ev::Ws => Op::Ws,
                Ev::Block(l) => Op::Block(l),
                _ => Op::Br,
            }));
        };
        for ev in events(html, index) {
            match ev {
                Ev::Text(s) => match &mut chunk {
                    Some(buf) => {
                        // After text the state is known: convert the separators now.
                        let mut b = Builder {
                            out: buf,
                            base: 0,
                            pending: 0,
                            link: None,
                        };
                        for sep in seps.drain(..) {
                            match sep {
                                Ev::Ws => b.ws(),
                                Ev::Block(l) => b.block(l),
                                _ => b.br(),
                            }
                        }
                        b.text(&s);
                    }
                    None => {
                        close(&mut chunk, &mut ops, &mut seps);
                        chunk = Some(s);
                    }
                },
                Ev::Ws | Ev::Block(_) | Ev::Br => seps.push(ev),
                other => {
                    close(&mut chunk, &mut ops, &mut seps);
                    ops.push(match other {
                        Ev::Field { slot, default } => Op::Field { slot, default },
                        Ev::Token => Op::Token,
                        Ev::LinkOpen(href) => {
                            let collapse = href.iter().any(|p| match p {
                                Href::Lit(l) => l.contains(text::is_ws),
                                Href::Field { .. } => true,
                                Href::Token => false,
                            });
                            Op::LinkOpen { href, collapse }
                        }
                        _ => Op::LinkClose,
                    });
                }
            }
        }
        close(&mut chunk, &mut ops, &mut seps);
        TextProgram { ops, chunks }
    }

    /// The static chunks.
    pub(crate) fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// Derive the text for one recipient into `out` (cleared first): `values[slot]` is a
    /// field's value (`None` or empty: its default), `token` the tracking token.
    pub(crate) fn run(&self, out: &mut TextOut, values: &[Option<&str>], token: &str) {
        out.clear();
        let value = |slot: usize, default| value_of(values, slot, default);
        for op in &self.ops {
            match op {
                Op::Chunk(i) => {
                    out.flush(self);
                    out.push_chunk(self, *i);
                }
                Op::Ws => out.ws(self),
                Op::Block(l) => out.pending = out.pending.max(*l),
                Op::Br => {
                    out.flush(self);
                    out.newline(self);
                }
                Op::Field { slot, default } => out.value_text(self, value(*slot, default)),
                Op::Token => out.value_text(self, token),
                Op::LinkOpen {
                    href: parts,
                    collapse,
                } => {
                    // Built aside: an empty URL opens no link and keeps an open one's.
                    let mut href = std::mem::take(&mut out.next_href);
                    href.clear();
                    for part in parts {
                        match part {
                            Href::Lit(l) => href.push_str(l),
                            Href::Field {
                                slot,
                                default,
                                escape,
                            } => href.push_str(escape.apply(value(*slot, default))),
                            Href::Token => href.push_str(token),
                        }
                    }
                    if *collapse {
                        collapse_in_place(&mut href, &mut out.tmp);
                    }
                    if !href.is_empty() {
                        out.flush(self);
                        out.link = Some(out.total);
                        std::mem::swap(&mut out.link_href, &mut href);
                    }
                    out.next_href = href;
                }
                Op::LinkClose => out.close_link(self),
            }
        }
        out.finish(self);
    }
}

/// The value of `slot` (`None` or empty: `default`, else empty).
fn value_of<'a>(values: &[Option<&'a str>], slot: usize, default: &'a Option<Box<str>>) -> &'a str {
    match values.get(slot).copied().flatten() {
        Some(v) if !v.is_empty() => v,
        _ => default.as_deref().unwrap_or(""),
    }
}

/// Whether `s` holds a [`text::is_ws`] character (bytewise: all but NBSP are ASCII).
fn has_ws(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        matches!(c, b' ' | b'\t' | b'\r' | b'\n' | 0x0C)
            || (c == 0xC2 && b.get(i + 1) == Some(&0xA0))
    })
}

/// Collapse whitespace runs of `s` to one space and trim (`tmp`: a scratch buffer).
fn collapse_in_place(s: &mut String, tmp: &mut String) {
    if !has_ws(s) {
        return;
    }
    tmp.clear();
    for word in s.split(text::is_ws).filter(|w| !w.is_empty()) {
        if !tmp.is_empty() {
            tmp.push(' ');
        }
        tmp.push_str(word);
    }
    std::mem::swap(s, tmp);
}

/// A derived text under construction: pieces of a program's chunks and of `scratch`
/// (reused from recipient to recipient).
#[derive(Debug, Default)]
pub(crate) struct TextOut {
    pub(crate) pieces: Vec<Piece>,
    pub(crate) scratch: String,
    /// Length of the text so far.
    total: usize,
    /// Line breaks requested by block elements (0, 1 or 2).
    pending: u8,
    /// Open link: the offset where its text starts (its URL is `link_href`).
    link: Option<usize>,
    link_href: String,
    next_href: String,
    tmp: String,
}

impl TextOut {
    fn clear(&mut self) {
        self.pieces.clear();
        self.scratch.clear();
        self.total = 0;
        self.pending = 0;
        self.link = None;
    }

    /// The bytes of piece `p`.
    pub(crate) fn bytes<'a>(&'a self, program: &'a TextProgram, p: Piece) -> &'a [u8] {
        match p {
            Piece::Chunk(i) => program.chunks[i as usize].text.as_bytes(),
            Piece::Dyn(a, b) => &self.scratch.as_bytes()[a as usize..b as usize],
        }
    }

    /// The derived text as one string.
    #[cfg(test)]
    pub(crate) fn to_text(&self, program: &TextProgram) -> String {
        let mut s = Vec::with_capacity(self.total);
        for &p in &self.pieces {
            s.extend_from_slice(self.bytes(program, p));
        }
        String::from_utf8(s).unwrap_or_default()
    }

    fn last_byte(&self, program: &TextProgram) -> Option<u8> {
        let &p = self.pieces.last()?;
        self.bytes(program, p).last().copied()
    }

    fn ends_with_two_breaks(&self, program: &TextProgram) -> bool {
        let mut want = 2;
        for &p in self.pieces.iter().rev() {
            for &b in self.bytes(program, p).iter().rev() {
                if b != b'\n' {
                    return false;
                }
                want -= 1;
                if want == 0 {
                    return true;
                }
            }
        }
        false
    }

    fn push_dyn(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        let start = self.scratch.len() as u32;
        self.scratch.push_str(s);
        let end = self.scratch.len() as u32;
        self.total += s.len();
        if let Some(Piece::Dyn(_, b)) = self.pieces.last_mut() {
            if *b == start {
                *b = end;
                return;
            }
        }
        self.pieces.push(Piece::Dyn(start, end));
    }

    fn push_chunk(&mut self, program: &TextProgram, i: u32) {
        let chunk = &program.chunks[i as usize];
        if chunk.id.is_none() {
            // Encoded per message anyway: as scratch text it joins its neighbours.
            self.push_dyn(&chunk.text);
            return;
        }
        self.total += chunk.text.len();
        self.pieces.push(Piece::Chunk(i));
    }

    /// Drop the last byte (it is in scratch: chunks never end with a space or break).
    fn pop_byte(&mut self) {
        if let Some(Piece::Dyn(a, b)) = self.pieces.last_mut() {
            *b -= 1;
            self.total -= 1;
            if *b as usize + 1 == self.scratch.len() {
                self.scratch.pop();
            }
            if *a == *b {
                self.pieces.pop();
            }
        }
    }

    /// Cut the text to its first `len` bytes.
    fn truncate(&mut self, program: &TextProgram, len: usize) {
        while self.total > len {
            let Some(&p) = self.pieces.last() else {
                break;
            };
            let plen = self.bytes(program, p).len();
            if self.total - plen >= len {
                self.pieces.pop();
                self.total -= plen;
                continue;
            }
            let keep = plen - (self.total - len);
            match p {
                Piece::Dyn(a, _) => {
                    self.pieces.pop();
                    self.pieces.push(Piece::Dyn(a, a + keep as u32));
                }
                Piece::Chunk(i) => {
                    // Not reached (a cut falls before text, and chunks start with text);
                    // kept correct: the chunk's head becomes scratch text.
                    self.pieces.pop();
                    self.total -= plen;
                    let head = &program.chunks[i as usize].text[..keep];
                    let head = head.to_owned();
                    self.push_dyn(&head);
                    continue;
                }
            }
            self.total = len;
        }
    }

    fn is_empty(&self) -> bool {
        self.total == 0
    }

    fn ws(&mut self, program: &TextProgram) {
        if self.pending == 0
            && !self.is_empty()
            && !matches!(self.last_byte(program), Some(b' ' | b'\n'))
        {
            self.push_dyn(" ");
        }
    }

    fn newline(&mut self, program: &TextProgram) {
        match self.last_byte(program) {
            None => return,
            Some(b' ' | b'\n') => {}
            Some(_) => return self.push_dyn("\n"),
        }
        while self.last_byte(program) == Some(b' ') {
            self.pop_byte();
        }
        if self.is_empty() || self.ends_with_two_breaks(program) {
            return;
        }
        self.push_dyn("\n");
    }

    fn flush(&mut self, program: &TextProgram) {
        for _ in 0..self.pending {
            self.newline(program);
        }
        self.pending = 0;
    }

    /// A value in text content: its words as text, its whitespace runs as spaces.
    fn value_text(&mut self, program: &TextProgram, value: &str) {
        if !value.is_empty() && !has_ws(value) {
            self.flush(program);
            return self.push_dyn(value);
        }
        let mut rest = value;
        while !rest.is_empty() {
            let word_end = rest.find(text::is_ws).unwrap_or(rest.len());
            if word_end > 0 {
                self.flush(program);
                self.push_dyn(&rest[..word_end]);
                rest = &rest[word_end..];
            }
            let ws_len = rest.len() - rest.trim_start_matches(text::is_ws).len();
            if ws_len > 0 {
                self.ws(program);
                rest = &rest[ws_len..];
            }
        }
    }

    fn close_link(&mut self, program: &TextProgram) {
        let Some(start) = self.link.take() else {
            return;
        };
        let start = start.min(self.total);
        // The link text is the text from `start`: from piece `first`, byte `skip` on.
        let (mut first, mut at) = (self.pieces.len(), self.total);
        while at > start {
            first -= 1;
            at -= self.bytes(program, self.pieces[first]).len();
        }
        let skip = start - at;
        let this: &TextOut = self;
        let region = || {
            this.pieces[first..]
                .iter()
                .enumerate()
                .map(move |(k, &p)| &this.bytes(program, p)[if k == 0 { skip } else { 0 }..])
        };
        let is_space = |b: &u8| *b == b' ' || *b == b'\n';
        let region_len = self.total - start;
        let lead = region()
            .flat_map(|s| s.iter())
            .take_while(|b| is_space(b))
            .count();
        let empty = lead == region_len;
        let equal = !empty && {
            let href = self.link_href.as_bytes();
            let trail = region()
                .rev()
                .flat_map(|s| s.iter().rev())
                .take_while(|b| is_space(b))
                .count();
            let text_len = region_len - lead - trail;
            text_len == href.len()
                && region()
                    .flat_map(|s| s.iter())
                    .skip(lead)
                    .take(text_len)
                    .eq(href.iter())
        };
        let href = std::mem::take(&mut self.link_href);
        if empty || equal {
            self.truncate(program, start + lead);
            self.push_dyn(&href);
        } else {
            if !matches!(self.last_byte(program), Some(b' ' | b'\n')) {
                self.push_dyn(" ");
            }
            self.push_dyn("(");
            self.push_dyn(&href);
            self.push_dyn(")");
        }
        self.link_href = href;
    }

    fn finish(&mut self, program: &TextProgram) {
        while matches!(self.last_byte(program), Some(b' ' | b'\n')) {
            self.pop_byte();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::qp::tests::Rng;
    use crate::tracking::{self, Tracking};

    /// The straightforward derivation: every event through [`Builder`], no chunks.
    pub(crate) fn reference(
        html: &Template,
        index: &[usize],
        values: &[Option<&str>],
        token: &str,
    ) -> String {
        let value = |slot: usize, default: &Option<Box<str>>| -> String {
            match values.get(slot).copied().flatten() {
                Some(v) if !v.is_empty() => v.to_owned(),
                _ => default.as_deref().unwrap_or("").to_owned(),
            }
        };
        let mut out = String::new();
        let mut b = Builder {
            out: &mut out,
            base: 0,
            pending: 0,
            link: None,
        };
        let text_of = |b: &mut Builder<'_>, v: &str| {
            for (k, word) in v.split(text::is_ws).enumerate() {
                if k > 0 {
                    b.ws();
                }
                if !word.is_empty() {
                    b.text(word);
                }
            }
        };
        for ev in events(html, index) {
            match ev {
                Ev::Text(s) => b.text(&s),
                Ev::Ws => b.ws(),
                Ev::Block(l) => b.block(l),
                Ev::Br => b.br(),
                Ev::Field { slot, default } => text_of(&mut b, &value(slot, &default)),
                Ev::Token => text_of(&mut b, token),
                Ev::LinkOpen(parts) => {
                    let raw: String = parts
                        .iter()
                        .map(|p| match p {
                            Href::Lit(l) => l.to_string(),
                            Href::Field {
                                slot,
                                default,
                                escape,
                            } => escape.apply(&value(*slot, default)).to_owned(),
                            Href::Token => token.to_owned(),
                        })
                        .collect();
                    let href = text::collapse_ws(&raw);
                    if !href.is_empty() {
                        b.flush();
                        b.link = Some((b.out.len(), href));
                    }
                }
                Ev::LinkClose => b.link_close(),
            }
        }
        b.finish();
        out
    }

    fn run(t: &Template, values: &[Option<&str>], token: &str) -> (TextProgram, String) {
        let index: Vec<usize> = (0..t.fields().len()).collect();
        let p = TextProgram::compile(t, &index, |_| None);
        let mut out = TextOut::default();
        p.run(&mut out, values, token);
        (p.clone(), out.to_text(&p))
    }

    /// Old path: render the HTML, then convert it.
    fn old(t: &Template, values: &[Option<&str>], token: &str) -> String {
        let mut html = String::new();
        let index: Vec<usize> = (0..t.fields().len()).collect();
        t.render_into_indexed_with_token(&mut html, values, &index, true, token);
        text::html_to_text(&html)
    }

    #[test]
    fn chunks_fold_static_text() {
        let t = Template::compile_html(
            "<html><head><title>T</title></head><body><h1>Hi {{ firstName | default: \"you\" }}!</h1>\
             <p>Para one\n  continues.</p><ul><li>a</li><li>{{ lastName }}</li></ul>\
             <p><a href=\"https://x.io/{{ lastName }}\">Go {{ firstName }}</a></p>\
             <p><a href=\"https://x.io/s\">https://x.io/s</a> done</p></body></html>",
        )
        .unwrap();
        for values in [
            [None, None],
            [Some("Ann"), Some("Lee")],
            [Some("  "), Some(" x  y ")],
            [Some("a<b>&amp;"), Some("\u{a0}\n")],
        ] {
            let (p, text) = run(&t, &values, "");
            assert_eq!(text, old(&t, &values, ""), "{values:?}");
            let index = [0, 1];
            assert_eq!(text, reference(&t, &index, &values, ""));
            assert!(p.chunks().iter().all(|c| {
                let b = c.text.as_bytes();
                !b.is_empty()
                    && !matches!(b[0], b' ' | b'\n')
                    && !matches!(b[b.len() - 1], b' ' | b'\n')
            }));
        }
        let (p, text) = run(&t, &[Some("Ann"), Some("Lee")], "");
        assert_eq!(
            text,
            "Hi Ann!\n\nPara one continues.\n\n- a\n- Lee\n\nGo Ann (https://x.io/Lee)\n\n\
             https://x.io/s done"
        );
        assert!(p
            .chunks()
            .iter()
            .any(|c| &*c.text == "!\n\nPara one continues.\n\n- a\n-"));
    }

    #[test]
    fn values_are_text_not_markup() {
        // old and new differ only where a value completes a character reference
        let t = Template::compile_html("<p>&am{{ email }}</p>").unwrap();
        assert_eq!(run(&t, &[Some("p;")], "").1, "&amp;");
        assert_eq!(old(&t, &[Some("p;")], ""), "&");
    }

    #[test]
    fn tracked_links_show_the_token() {
        let t = Template::compile_html(
            "<p><a href=\"https://x.io/a\">Read</a> <a href=\"https://x.io/b\"> </a></p>",
        )
        .unwrap();
        let (t, _) = tracking::instrument(
            &t,
            &Tracking {
                opens: true,
                clicks: true,
                base: "https://t.io",
            },
        );
        let (_, text) = run(&t, &[], "TOK");
        assert_eq!(text, "Read (https://t.io/c/TOK/0) https://t.io/c/TOK/1");
        assert_eq!(text, old(&t, &[], "TOK"));
    }

    #[test]
    fn link_text_equal_to_the_url_is_shown_once() {
        let t = Template::compile_html(
            "x <a href=\"https://x.io/{{ email }}\">https://x.io/{{ email }}</a>\
             <a href=\"{{ email }}\"><br>{{ email }} </a>y",
        )
        .unwrap();
        for v in ["a", "", " a b ", "javascript:x"] {
            let values = [Some(v)];
            let (_, text) = run(&t, &values, "");
            assert_eq!(text, old(&t, &values, ""), "{v:?}");
            assert_eq!(text, reference(&t, &[0], &values, ""), "{v:?}");
        }
    }

    /// Random templates from HTML-ish pieces and fields: the program equals the plain
    /// event-by-event conversion, and (no `&` right before a field) the old path.
    #[test]
    fn random_templates_match_the_reference() {
        const PIECES: &[&str] = &[
            "<p>",
            "</p>",
            "<br>",
            "<br/>",
            "<li>",
            "</li>",
            "<ul>",
            "</ul>",
            "<div>",
            "</div>",
            "<h2>",
            "</h2>",
            "<td>",
            "</td>",
            "<tr>",
            " ",
            "  ",
            "\n",
            "\t",
            "&nbsp;",
            "&amp;",
            "&lt;",
            "&#10;",
            "word",
            "Other words",
            ".",
            "é",
            "<a href=\"https://x.io/p\">",
            "<a href=\"https://x.io/p\">https://x.io/p</a>",
            "<a href=\"\">",
            "<a name=x>",
            "</a>",
            "<a href=\" https://x.io/q?a={{ lastName }} \">",
            "<a href=\"{{ email }}\">",
            "<b>",
            "</b>",
            "<!-- c -->",
            "<style>p{}</style>",
            "<head><title>t</title></head>",
            "{{ email }}",
            "{{ firstName | default: \" d \" }}",
            "{{ lastName }}",
            "<",
            "<span title=\"{{ email }}\">",
            "&",
        ];
        const VALUES: &[&str] = &[
            "",
            " ",
            "a",
            "a b",
            " a ",
            "\n\nx\n",
            "x\u{a0}y",
            "https://x.io/p",
            "<b>&amp;",
            "javascript:x",
            "Zoë",
            "  many   spaces  ",
        ];
        let mut rng = Rng(0x1234_5678_9ABC_DEF1);
        let (mut compiled, mut compared) = (0, 0);
        for round in 0..20_000 {
            let n = rng.below(14);
            let src: String = (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect();
            let Ok(t) = Template::compile_html(&src) else {
                continue;
            };
            compiled += 1;
            let values: Vec<Option<&str>> = (0..t.fields().len())
                .map(|_| (rng.below(5) > 0).then(|| VALUES[rng.below(VALUES.len())]))
                .collect();
            let index: Vec<usize> = (0..t.fields().len()).collect();
            let (_, text) = run(&t, &values, "TK");
            assert_eq!(
                text,
                reference(&t, &index, &values, "TK"),
                "round {round}: {src:?} {values:?}"
            );
            if !src.contains("&{{") {
                compared += 1;
                assert_eq!(
                    text,
                    old(&t, &values, "TK"),
                    "round {round}: {src:?} {values:?}"
                );
            }
        }
        assert!(
            compiled > 10_000 && compared > 9_000,
            "{compiled} {compared}"
        );
    }
}
