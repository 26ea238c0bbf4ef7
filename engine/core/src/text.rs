//! Plain-text alternative derived from HTML.
//!
//! Rules:
//! * the contents of `<head>`, `<style>` and `<script>` are dropped, as are comments,
//!   `<!…>` declarations and every tag not listed below;
//! * `<br>` is a line break; `<p>`, `</p>`, `<h1>`…`<h6>` and their ends separate paragraphs
//!   (one blank line); `<div>`, `<tr>`, `<ul>`, `<ol>`, `<table>`, `<li>` and their ends start
//!   a new line; `<li>` writes `- `; `</td>`/`</th>` write a space;
//! * `<a href="U">T</a>` becomes `T (U)`, or just `U` when `T` is empty or equals `U`
//!   (`U` is entity-decoded with whitespace runs collapsed to one space and trimmed);
//! * `&amp; &lt; &gt; &quot; &#39; &#x27; &nbsp;` and numeric references `&#NNN;`/`&#xHH;`
//!   are decoded once (other text, including unknown entities, stays as is);
//! * whitespace (space, tab, CR, LF, FF, NBSP) collapses to one space; lines are trimmed;
//!   at most one blank line in a row; the result is trimmed.

/// Derive the plain-text alternative of `html`.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    html_to_text_into(&mut out, html);
    out
}

/// Like [`html_to_text`] but appends to `out` (which should be empty or end a line).
pub fn html_to_text_into(out: &mut String, html: &str) {
    let base = out.len();
    let mut b = Builder {
        out,
        base,
        pending: 0,
        link: None,
    };
    tokenize(html, &[], &mut b);
    b.finish();
}

/// What [`tokenize`] finds, in document order.
pub(crate) trait Events {
    /// Text without whitespace at either end (single spaces inside).
    fn text(&mut self, s: &str);
    /// A whitespace run.
    fn ws(&mut self);
    /// A block boundary: `level` line breaks (1 or 2) before the next text.
    fn block(&mut self, level: u8);
    /// `<br>`.
    fn br(&mut self);
    /// `<a>` with an `href` whose raw value is `html[value.0..value.1]`.
    fn link_open(&mut self, html: &str, value: (usize, usize));
    /// `</a>`.
    fn link_close(&mut self);
    /// The `k`-th mark, in text content.
    fn mark(&mut self, k: usize);
}

/// Scan `html` by the rules of the module docs, reporting to `ev`. `marks` (ascending) are
/// offsets of two-byte stand-ins (`{{`) for merge fields: in text content each is reported
/// with [`Events::mark`]; inside markup or dropped elements they are not reported.
pub(crate) fn tokenize(html: &str, marks: &[usize], ev: &mut impl Events) {
    let bytes = html.as_bytes();
    let mut next_mark = 0;
    let mut i = 0;
    while i < bytes.len() {
        while marks.get(next_mark).is_some_and(|&m| m < i) {
            next_mark += 1;
        }
        let mark_at = marks.get(next_mark).copied().unwrap_or(usize::MAX);
        if mark_at == i {
            ev.mark(next_mark);
            next_mark += 1;
            i += 2;
            continue;
        }
        // Copy a run of ordinary text (single spaces between ordinary bytes included: the
        // result is the same as pushing char by char).
        let stop = bytes.len().min(mark_at);
        let start = i;
        loop {
            while i < stop && !SPECIAL[usize::from(bytes[i])] {
                i += 1;
            }
            if i > start && i + 1 < stop && bytes[i] == b' ' && !SPECIAL[usize::from(bytes[i + 1])]
            {
                i += 1;
                continue;
            }
            break;
        }
        if i > start {
            ev.text(&html[start..i]);
            continue;
        }
        match bytes[i] {
            b'<' => match parse_tag(html, i) {
                Some(tag) => i = tag_events(html, &tag, ev),
                None => {
                    ev.text("<");
                    i += 1;
                }
            },
            b'&' => match decode_entity(html, i) {
                Some((c, end)) => {
                    char_event(ev, c);
                    i = end;
                }
                None => {
                    ev.text("&");
                    i += 1;
                }
            },
            _ => {
                let c = html[i..].chars().next().unwrap_or(' ');
                char_event(ev, c);
                i += c.len_utf8();
            }
        }
    }
}

fn char_event(ev: &mut impl Events, c: char) {
    if is_ws(c) {
        ev.ws();
    } else {
        let mut buf = [0u8; 4];
        ev.text(c.encode_utf8(&mut buf));
    }
}

/// Report the tag `tag`; returns the offset where scanning resumes.
fn tag_events(html: &str, tag: &Tag, ev: &mut impl Events) -> usize {
    let name = &html[tag.name.0..tag.name.1];
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    let heading = name.len() == 2
        && name.as_bytes()[0].eq_ignore_ascii_case(&b'h')
        && (b'1'..=b'6').contains(&name.as_bytes()[1]);
    match tag.kind {
        TagKind::Other => {}
        TagKind::Open => {
            if is("head") || is("style") || is("script") {
                return skip_element(html, tag.end, name);
            }
            if is("br") {
                ev.br();
            } else if is("p") || heading {
                ev.block(2);
            } else if is("li") {
                ev.block(1);
                ev.text("-");
                ev.ws();
            } else if is("div") || is("tr") || is("ul") || is("ol") || is("table") {
                ev.block(1);
            } else if is("a") {
                if let Some(href) = attrs(html, tag.attrs.0, tag.attrs.1)
                    .find(|a| html[a.name.0..a.name.1].eq_ignore_ascii_case("href"))
                {
                    ev.link_open(html, href.value);
                }
            }
        }
        TagKind::Close => {
            if is("p") || heading {
                ev.block(2);
            } else if is("div") || is("li") || is("tr") || is("ul") || is("ol") || is("table") {
                ev.block(1);
            } else if is("br") {
                ev.br();
            } else if is("td") || is("th") {
                ev.ws();
            } else if is("a") {
                ev.link_close();
            }
        }
    }
    tag.end
}

/// Byte offset just after the `<body …>` open tag (ASCII case-insensitive), if any.
pub fn body_open_end(html: &str) -> Option<usize> {
    let bytes = html.as_bytes();
    let mut from = 0;
    while let Some(rel) = html[from..].find('<') {
        let i = from + rel;
        if bytes.len() >= i + 5
            && bytes[i + 1..i + 5].eq_ignore_ascii_case(b"body")
            && matches!(
                bytes.get(i + 5),
                Some(b' ' | b'\t' | b'\r' | b'\n' | 0x0C | b'>' | b'/')
            )
        {
            return tag_end(bytes, i + 5);
        }
        from = i + 1;
    }
    None
}

/// Bytes that end a run of ordinary text: markup, entities, whitespace and the lead byte
/// of U+00A0 (NBSP, which counts as whitespace).
const SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let specials = [b'<', b'&', b' ', b'\t', b'\r', b'\n', 0x0C, 0xC2];
    let mut k = 0;
    while k < specials.len() {
        t[specials[k] as usize] = true;
        k += 1;
    }
    t
};

/// Whitespace of the rules: space, tab, CR, LF, FF and NBSP.
#[inline]
pub(crate) fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n' | '\x0C' | '\u{a0}')
}

/// The conversion state: text written to `out[base..]`.
pub(crate) struct Builder<'a> {
    pub(crate) out: &'a mut String,
    /// Where this conversion's output starts in `out`.
    pub(crate) base: usize,
    /// Line breaks requested by block elements, written before the next text (0, 1 or 2).
    pub(crate) pending: u8,
    /// Open `<a href>`: (output offset where the link text starts, decoded href).
    pub(crate) link: Option<(usize, String)>,
}

impl Events for Builder<'_> {
    fn text(&mut self, s: &str) {
        self.flush();
        self.out.push_str(s);
    }

    fn ws(&mut self) {
        if self.pending == 0 && !self.ends_with_break_or_space() {
            self.out.push(' ');
        }
    }

    fn block(&mut self, level: u8) {
        self.pending = self.pending.max(level);
    }

    fn br(&mut self) {
        self.flush();
        self.newline();
    }

    fn link_open(&mut self, html: &str, value: (usize, usize)) {
        let href = collapse_ws(&decode_entities(&html[value.0..value.1]));
        if !href.is_empty() {
            self.flush();
            self.link = Some((self.out.len(), href));
        }
    }

    fn link_close(&mut self) {
        let Some((start, href)) = self.link.take() else {
            return;
        };
        let start = start.min(self.out.len());
        let text = self.out[start..].trim_matches([' ', '\n']);
        if text.is_empty() || text == href {
            let keep = self.out.len() - self.out[start..].trim_start_matches([' ', '\n']).len();
            self.out.truncate(keep);
            self.out.push_str(&href);
        } else {
            if !self.out.ends_with([' ', '\n']) {
                self.out.push(' ');
            }
            self.out.push('(');
            self.out.push_str(&href);
            self.out.push(')');
        }
    }

    fn mark(&mut self, _k: usize) {}
}

impl Builder<'_> {
    fn is_empty(&self) -> bool {
        self.out.len() == self.base
    }

    fn ends_with_break_or_space(&self) -> bool {
        self.is_empty() || self.out.ends_with([' ', '\n'])
    }

    /// A hard newline: trims trailing spaces, never leads, at most one blank line.
    fn newline(&mut self) {
        while self.out.len() > self.base && self.out.ends_with(' ') {
            self.out.pop();
        }
        if self.is_empty() || self.out[self.base..].ends_with("\n\n") {
            return;
        }
        self.out.push('\n');
    }

    pub(crate) fn flush(&mut self) {
        for _ in 0..self.pending {
            self.newline();
        }
        self.pending = 0;
    }

    pub(crate) fn finish(&mut self) {
        while self.out.len() > self.base && self.out.ends_with([' ', '\n']) {
            self.out.pop();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TagKind {
    Open,
    Close,
    /// Comment, declaration or processing instruction.
    Other,
}

#[derive(Debug)]
pub(crate) struct Tag {
    pub(crate) kind: TagKind,
    /// Byte range of the tag name.
    pub(crate) name: (usize, usize),
    /// Byte range of the attribute text.
    pub(crate) attrs: (usize, usize),
    /// Byte offset just past the tag.
    pub(crate) end: usize,
}

/// Byte offset just past the `>` that ends a tag whose attributes start at `from`,
/// skipping quoted attribute values.
fn tag_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'>' => return Some(i + 1),
            q @ (b'"' | b'\'') => {
                let close = bytes[i + 1..].iter().position(|&b| b == q)?;
                i += close + 2;
            }
            _ => i += 1,
        }
    }
    None
}

/// Parse markup at `i` (which holds `<`); `None` means the `<` is literal text.
pub(crate) fn parse_tag(html: &str, i: usize) -> Option<Tag> {
    let bytes = html.as_bytes();
    let other = |end| Tag {
        kind: TagKind::Other,
        name: (i, i),
        attrs: (i, i),
        end,
    };
    match bytes.get(i + 1)? {
        b'!' if html[i..].starts_with("<!--") => {
            let end = html[i + 4..]
                .find("-->")
                .map_or(html.len(), |p| i + 4 + p + 3);
            Some(other(end))
        }
        b'!' | b'?' => Some(other(html[i..].find('>').map_or(html.len(), |p| i + p + 1))),
        b'/' => {
            let name_start = i + 2;
            let name_end = name_end(bytes, name_start);
            if name_end == name_start || !bytes[name_start].is_ascii_alphabetic() {
                return None;
            }
            Some(Tag {
                kind: TagKind::Close,
                name: (name_start, name_end),
                attrs: (name_end, name_end),
                end: tag_end(bytes, name_end)?,
            })
        }
        c if c.is_ascii_alphabetic() => {
            let name_start = i + 1;
            let name_end = name_end(bytes, name_start);
            let end = tag_end(bytes, name_end)?;
            Some(Tag {
                kind: TagKind::Open,
                name: (name_start, name_end),
                attrs: (name_end, end - 1),
                end,
            })
        }
        _ => None,
    }
}

fn name_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'-') {
        i += 1;
    }
    i
}

/// Skip to just past `</name …>` (ASCII case-insensitive) or to the end of the input.
pub(crate) fn skip_element(html: &str, from: usize, name: &str) -> usize {
    let bytes = html.as_bytes();
    let mut i = from;
    while let Some(rel) = html[i..].find("</") {
        let at = i + rel + 2;
        let after = at + name.len();
        if bytes.len() >= after
            && bytes[at..after].eq_ignore_ascii_case(name.as_bytes())
            && !bytes
                .get(after)
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'-')
        {
            return tag_end(bytes, after).unwrap_or(html.len());
        }
        i = at;
    }
    html.len()
}

/// One attribute of a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attr {
    /// Byte range of the name.
    pub(crate) name: (usize, usize),
    /// Byte range of the raw value (inside the quotes; empty without a value).
    pub(crate) value: (usize, usize),
    /// The quote around the value (`"` or `'`), `None` for unquoted or missing values.
    pub(crate) quote: Option<u8>,
}

/// The attributes in the attribute text `html[from..to]`, in order.
pub(crate) fn attrs(html: &str, from: usize, to: usize) -> impl Iterator<Item = Attr> + '_ {
    let bytes = html.as_bytes();
    let mut i = from;
    std::iter::from_fn(move || {
        while i < to && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        if i >= to {
            return None;
        }
        let name_start = i;
        while i < to && !bytes[i].is_ascii_whitespace() && !matches!(bytes[i], b'=' | b'/') {
            i += 1;
        }
        let name = (name_start, i);
        while i < to && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let (value, quote) = if i < to && bytes[i] == b'=' {
            i += 1;
            while i < to && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            match bytes.get(i) {
                Some(&q @ (b'"' | b'\'')) if i < to => {
                    let close = html[i + 1..to]
                        .find(char::from(q))
                        .map_or(to, |p| i + 1 + p);
                    let v = (i + 1, close);
                    i = (close + 1).min(to);
                    (v, Some(q))
                }
                _ => {
                    let start = i;
                    while i < to && !bytes[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    ((start, i), None)
                }
            }
        } else {
            ((i, i), None)
        };
        Some(Attr { name, value, quote })
    })
}

/// Decode the character reference at `i` (which holds `&`): the char and the offset after
/// the `;`.
fn decode_entity(html: &str, i: usize) -> Option<(char, usize)> {
    let rest = &html[i + 1..];
    for (name, c) in [
        ("amp;", '&'),
        ("lt;", '<'),
        ("gt;", '>'),
        ("quot;", '"'),
        ("nbsp;", '\u{a0}'),
    ] {
        if rest.starts_with(name) {
            return Some((c, i + 1 + name.len()));
        }
    }
    let num = rest.strip_prefix('#')?;
    let (digits, radix, skip) = match num.strip_prefix(['x', 'X']) {
        Some(hex) => (hex, 16, 2),
        None => (num, 10, 1),
    };
    let len = digits
        .bytes()
        .take_while(|b| {
            if radix == 16 {
                b.is_ascii_hexdigit()
            } else {
                b.is_ascii_digit()
            }
        })
        .count();
    if len == 0 || len > 8 || digits.as_bytes().get(len) != Some(&b';') {
        return None;
    }
    let code = u32::from_str_radix(&digits[..len], radix).ok()?;
    let c = char::from_u32(code).filter(|&c| c != '\0')?;
    Some((c, i + 1 + skip + len + 1))
}

/// Collapse whitespace runs to one space and trim.
pub(crate) fn collapse_ws(s: &str) -> String {
    if !s.contains(is_ws) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    for word in s.split(is_ws).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Decode the character references of `s` (the ones [`html_to_text`] decodes).
pub(crate) fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut pos = 0;
    while let Some(rel) = s[pos..].find('&') {
        let i = pos + rel;
        out.push_str(&s[pos..i]);
        match decode_entity(s, i) {
            Some((c, end)) => {
                out.push(c);
                pos = end;
            }
            None => {
                out.push('&');
                pos = i + 1;
            }
        }
    }
    out.push_str(&s[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(html: &str) -> String {
        html_to_text(html)
    }

    #[test]
    fn plain_text_and_whitespace() {
        assert_eq!(t(""), "");
        assert_eq!(t("  hello \n\t world  "), "hello world");
        assert_eq!(t("a&nbsp;&nbsp;b"), "a b");
        assert_eq!(t("a\u{a0}b é"), "a b é");
    }

    #[test]
    fn blocks_and_breaks() {
        assert_eq!(t("<p>One</p><p>Two</p>"), "One\n\nTwo");
        assert_eq!(t("<div>a</div><div>b</div>"), "a\nb");
        assert_eq!(t("<h1>T</h1>text"), "T\n\ntext");
        assert_eq!(t("a<br>b<BR/>c<br />d"), "a\nb\nc\nd");
        assert_eq!(t("a<br><br><br><br>b"), "a\n\nb");
        assert_eq!(t("<p> x </p>\n\n<p>\n y</p><br><br>"), "x\n\ny");
        assert_eq!(
            t("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>"),
            "a b\nc"
        );
    }

    #[test]
    fn lists() {
        assert_eq!(
            t("<ul><li>One</li><li>Two</li></ul>after"),
            "- One\n- Two\nafter"
        );
        assert_eq!(t("<ol><li>a<li>b</ol>"), "- a\n- b");
    }

    #[test]
    fn dropped_elements() {
        let html = "<html><HEAD><title>T</title><style>p{x:1}</style></head>\
                    <body><!-- c <p>x</p> --><script type=\"x\">if (a<b) {}</script>\
                    <!DOCTYPE html>Hi<style>.a{}</STYLE >!</body></html>";
        assert_eq!(t(html), "Hi!");
        assert_eq!(t("a<script>never closed"), "a");
        assert_eq!(t("<header>kept</header>"), "kept");
    }

    #[test]
    fn links() {
        assert_eq!(
            t(r#"<a href="https://x.io/a?b=1&amp;c=2">Click</a>"#),
            "Click (https://x.io/a?b=1&c=2)"
        );
        assert_eq!(
            t("<a href='https://x.io'> https://x.io </a>."),
            "https://x.io."
        );
        assert_eq!(
            t("Go <a href=https://x.io>x</a> now"),
            "Go x (https://x.io) now"
        );
        assert_eq!(t("<a href=\"u\"><img src=\"i\"></a>"), "u");
        assert_eq!(t("<a name=\"top\">Top</a>"), "Top");
        assert_eq!(t("<a title=\"a>b\" HREF = \"u\" >T</a>"), "T (u)");
        assert_eq!(t("<a href=\" u\n&#10;v&nbsp;\">T</a>"), "T (u v)");
    }

    #[test]
    fn entities() {
        assert_eq!(t("&amp;&lt;&gt;&quot;&#39;&#x27;&#X41;&#233;"), "&<>\"''Aé");
        assert_eq!(
            t("&amp;lt; &copy; &#0; &#xZZ; & &#65"),
            "&lt; &copy; &#0; &#xZZ; & &#65"
        );
        assert_eq!(t("a&#10;b&#32;&#32;c"), "a b c");
    }

    #[test]
    fn literal_angle_brackets() {
        assert_eq!(t("1 < 2 > 0 <3 <"), "1 < 2 > 0 <3 <");
        assert_eq!(t("a <b unterminated"), "a <b unterminated");
    }

    #[test]
    fn body_open_tag() {
        assert_eq!(body_open_end("<html><BODY class=\"a>b\">x"), Some(24));
        assert_eq!(body_open_end("<body>"), Some(6));
        assert_eq!(body_open_end("<bodyx><body\n>"), Some(14));
        assert_eq!(body_open_end("<p>no body</p>"), None);
        assert_eq!(body_open_end("<body"), None);
    }
}
