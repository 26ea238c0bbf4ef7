//! HTML contexts of merge fields, determined once when an HTML template compiles
//! ([`Template::compile_html`]).
//!
//! The template's markup is scanned with the tokenizer of [`crate::text`], each merge tag
//! standing for opaque text, and every field gets the escaping its context needs:
//!
//! * text content, quoted attribute values, comments, `<title>` and `<textarea>`:
//!   `& < > " '` become character references ([`Escape::Html`]), so a value can never end
//!   the element, attribute value or comment it is in;
//! * an unquoted attribute value: the template is rewritten to quote it (`a={{x}}` becomes
//!   `a="{{x}}"`), then as above;
//! * the start of a URL attribute value (`href`, `src`, `action`, …; only whitespace before
//!   the field in the value): [`Escape::UrlStart`]. When the value and the template text
//!   after it give the URL a scheme (text before a `:` that comes before any `/`, `?`, `#`,
//!   ASCII tab/CR/LF removed, leading spaces and controls ignored, case-insensitive) other
//!   than `http`, `https`, `mailto` or `tel`, the value is replaced by [`BLOCKED_URL`]: a
//!   value cannot smuggle in `javascript:` or `data:`. A `&` in the template text after the
//!   field counts as a `:` (it may be a character reference for one).
//!
//! Compile errors, where no escaping makes a value safe:
//! * a field inside a tag but not in an attribute value (`<a {{x}}>`, `<{{x}}>`), right
//!   after `<` or `</`, or anywhere after a tag that never ends;
//! * a field inside `<script>` or `<style>`, or in an event-handler attribute (`on…`);
//! * a field in a URL attribute value that could change the scheme without starting the
//!   value (`href="java{{x}}"`, the second field of `href="{{a}}{{b}}"`);
//! * a field in an unquoted attribute value that also holds a quote.
//!
//! Comments end where a browser ends them (`<!-->`, `<!--->` and `--!>` included), so a
//! tag after such an end is seen as the browser sees it.

use crate::error::{Error, Result};
use crate::template::{Escape, Segment, Template};
use crate::text::{self, TagKind};

/// What a blocked URL value renders as (the `#` turns whatever follows into a fragment).
pub const BLOCKED_URL: &str = "about:invalid#blocked";

/// Schemes a field may give a URL.
const ALLOWED_SCHEMES: &[&[u8]] = &[b"http", b"https", b"mailto", b"tel"];

/// Attributes whose value is a URL.
const URL_ATTRIBUTES: &[&str] = &[
    "action",
    "archive",
    "background",
    "cite",
    "classid",
    "codebase",
    "data",
    "dynsrc",
    "formaction",
    "href",
    "icon",
    "longdesc",
    "lowsrc",
    "manifest",
    "poster",
    "profile",
    "src",
    "usemap",
    "xlink:href",
];

/// Stands for a field in the scanned text (literal text never contains it).
const MARK: &str = "{{";

/// `value`, or [`BLOCKED_URL`] when `value` (non-empty) followed by `after` has a scheme
/// that is not allowed (see the module docs).
pub fn url_start<'v>(value: &'v str, after: &str) -> &'v str {
    if value.is_empty() {
        // Nothing of the URL comes from the value.
        return value;
    }
    // The scheme so far, lower-cased; `None` once it cannot be an allowed one.
    let mut scheme = Some([0u8; 6]);
    let mut len = 0;
    let mut started = false;
    let mut delimited = false;
    let chars = (value.chars().map(|c| (c, false))).chain(after.chars().map(|c| (c, true)));
    for (c, in_after) in chars {
        if matches!(c, '\t' | '\n' | '\r') || (!started && c <= ' ') {
            continue;
        }
        started = true;
        match c {
            '/' | '?' | '#' => return value,
            ':' => {
                delimited = true;
                break;
            }
            '&' if in_after => {
                delimited = true;
                break;
            }
            _ => {}
        }
        match &mut scheme {
            Some(buf) if c.is_ascii() && len < buf.len() => {
                buf[len] = (c as u8).to_ascii_lowercase();
                len += 1;
            }
            _ => scheme = None,
        }
    }
    let allowed = scheme.is_some_and(|buf| ALLOWED_SCHEMES.contains(&&buf[..len]));
    if allowed || !delimited {
        value
    } else {
        BLOCKED_URL
    }
}

/// Where a field is, found by [`scan`].
enum Context {
    Html,
    UrlStart(String),
}

/// Give every field of `template` its context's escaping (`opens`: the byte offset in the
/// source of each field's `{{`, in segment order).
pub(crate) fn contextualize(template: Template, opens: &[usize]) -> Result<Template> {
    let mut scanned = String::with_capacity(template.literal_len() + 2 * opens.len());
    let mut marks: Vec<usize> = Vec::with_capacity(opens.len());
    for segment in template.segments() {
        match segment {
            Segment::Literal(text) => scanned.push_str(text),
            Segment::Field { .. } | Segment::Token => {
                marks.push(scanned.len());
                scanned.push_str(MARK);
            }
        }
    }
    let fail = |mark: usize, message: &str| {
        let k = marks.iter().position(|&m| m == mark).unwrap_or(0);
        let field = template
            .segments()
            .iter()
            .filter_map(|s| match s {
                Segment::Field { field, .. } => Some(*field),
                _ => None,
            })
            .nth(k)
            .map(|f| template.field_paths()[f].clone());
        let open = opens.get(k).copied().unwrap_or(0);
        // Every message starts with "merge tag": name it.
        let message = match &field {
            Some(path) => message.replacen("merge tag", &format!("merge tag '{path}'"), 1),
            None => message.to_owned(),
        };
        Error::Template {
            message,
            field,
            offset: template.source()[..open].chars().count(),
        }
    };
    let scan = scan(&scanned, &marks).map_err(|(mark, message)| fail(mark, &message))?;

    let mut contexts = scan.contexts.into_iter();
    let mut quotes = scan.quotes.into_iter().peekable();
    let mut segments = Vec::with_capacity(template.segments().len() + 2);
    let mut pos = 0;
    for segment in template.segments() {
        match segment {
            Segment::Literal(text) => {
                let end = pos + text.len();
                let mut done = 0;
                while let Some(at) = quotes.next_if(|&q| q <= end) {
                    segments.push(Segment::Literal(text[done..at - pos].to_owned()));
                    segments.push(Segment::Literal("\"".to_owned()));
                    done = at - pos;
                }
                segments.push(Segment::Literal(text[done..].to_owned()));
                pos = end;
            }
            Segment::Field { field, default, .. } => {
                // A quote inserted just before the field belongs before it.
                while quotes.next_if(|&q| q == pos).is_some() {
                    segments.push(Segment::Literal("\"".to_owned()));
                }
                let escape = match contexts.next() {
                    Some(Context::UrlStart(after)) => Escape::UrlStart {
                        after: after.into(),
                    },
                    _ => Escape::Html,
                };
                segments.push(Segment::Field {
                    field: *field,
                    default: default.clone(),
                    escape,
                });
                pos += MARK.len();
            }
            Segment::Token => {
                segments.push(Segment::Token);
                pos += MARK.len();
            }
        }
    }
    segments.extend(quotes.map(|_| Segment::Literal("\"".to_owned())));
    Ok(template.with_segments(segments))
}

struct Scan {
    /// The context of each mark, in order.
    contexts: Vec<Context>,
    /// Scanned-text offsets where a `"` is inserted (ascending).
    quotes: Vec<usize>,
}

/// Classify every mark of `scanned` (at the offsets `marks`, ascending); an error names
/// the offending mark.
fn scan(scanned: &str, marks: &[usize]) -> Result<Scan, (usize, String)> {
    let bytes = scanned.as_bytes();
    let mut contexts: Vec<Option<Context>> = (0..marks.len()).map(|_| None).collect();
    let mut quotes = Vec::new();
    let index = |at: usize| marks.partition_point(|&m| m < at);
    let marks_in = |from: usize, to: usize| index(from)..index(to);
    let mut i = 0;
    while let Some(rel) = scanned[i..].find('<') {
        let at = i + rel;
        for k in marks_in(i, at) {
            contexts[k] = Some(Context::Html);
        }
        let next = bytes.get(at + 1).copied();
        let after_slash = bytes.get(at + 2).copied();
        let mark_at = |p: usize| marks.binary_search(&p).is_ok();
        if mark_at(at + 1) || (next == Some(b'/') && mark_at(at + 2)) {
            return Err((marks[index(at)], "merge tag right after '<'".into()));
        }
        if scanned[at..].starts_with("<!--") {
            let end = comment_end(scanned, at);
            for k in marks_in(at, end) {
                contexts[k] = Some(Context::Html);
            }
            i = end;
            continue;
        }
        let Some(tag) = text::parse_tag(scanned, at) else {
            let starts_tag = next.is_some_and(|b| b.is_ascii_alphabetic())
                || (next == Some(b'/') && after_slash.is_some_and(|b| b.is_ascii_alphabetic()));
            if starts_tag {
                if let Some(&m) = marks.get(index(at)) {
                    return Err((m, "merge tag after a tag that never ends".into()));
                }
            }
            i = at + 1;
            continue;
        };
        let name = &scanned[tag.name.0..tag.name.1];
        match tag.kind {
            TagKind::Other => {
                for k in marks_in(at, tag.end) {
                    contexts[k] = Some(Context::Html);
                }
            }
            TagKind::Close => {
                if let Some(k) = marks_in(at, tag.end).next() {
                    return Err((marks[k], "merge tag inside an end tag".into()));
                }
            }
            TagKind::Open => {
                scan_attributes(scanned, marks, &tag, &mut contexts, &mut quotes)?;
            }
        }
        i = tag.end;
        if tag.kind == TagKind::Open {
            let raw = ["script", "style"]
                .iter()
                .any(|e| e.eq_ignore_ascii_case(name));
            let rcdata = ["title", "textarea"]
                .iter()
                .any(|e| e.eq_ignore_ascii_case(name));
            if raw || rcdata {
                let end = text::skip_element(scanned, tag.end, name);
                for k in marks_in(tag.end, end) {
                    if raw {
                        return Err((
                            marks[k],
                            format!("merge tag inside <{}>", name.to_ascii_lowercase()),
                        ));
                    }
                    contexts[k] = Some(Context::Html);
                }
                i = end;
            }
        }
    }
    for k in marks_in(i, scanned.len() + 1) {
        contexts[k] = Some(Context::Html);
    }
    Ok(Scan {
        contexts: contexts
            .into_iter()
            .map(|c| c.unwrap_or(Context::Html))
            .collect(),
        quotes,
    })
}

/// Where a browser ends the comment that starts at `at` (`<!--`): `<!-->` and `<!--->` are
/// whole comments, and `--!>` ends one as `-->` does.
fn comment_end(scanned: &str, at: usize) -> usize {
    let body = at + 4;
    if scanned[body..].starts_with('>') {
        return body + 1;
    }
    if scanned[body..].starts_with("->") {
        return body + 2;
    }
    let close = scanned[body..].find("-->").map(|p| body + p + 3);
    let bang = scanned[body..].find("--!>").map(|p| body + p + 4);
    match (close, bang) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(scanned.len()),
    }
}

/// Classify the marks inside the open tag `tag`.
fn scan_attributes(
    scanned: &str,
    marks: &[usize],
    tag: &text::Tag,
    contexts: &mut [Option<Context>],
    quotes: &mut Vec<usize>,
) -> Result<(), (usize, String)> {
    let index = |at: usize| marks.partition_point(|&m| m < at);
    let in_tag = index(tag.name.0)..index(tag.end);
    if in_tag.is_empty() {
        return Ok(());
    }
    for attr in text::attrs(scanned, tag.attrs.0, tag.attrs.1) {
        let (v0, v1) = attr.value;
        let inside = index(v0)..index(v1);
        if inside.is_empty() {
            continue;
        }
        let name = scanned[attr.name.0..attr.name.1].to_ascii_lowercase();
        if name.starts_with("on") {
            return Err((
                marks[inside.start],
                format!("merge tag in the event-handler attribute '{name}'"),
            ));
        }
        if attr.quote.is_none() {
            if scanned[v0..v1].contains(['"', '\'', '`']) {
                return Err((
                    marks[inside.start],
                    "merge tag in an unquoted attribute value with a quote".into(),
                ));
            }
            quotes.push(v0);
            quotes.push(v1);
        }
        let url = URL_ATTRIBUTES.contains(&name.as_str());
        let mut scheme_open = url;
        let mut blank_before = true;
        let mut literal_start = v0;
        for k in inside {
            let m = marks[k];
            let before = text::decode_entities(&scanned[literal_start..m]);
            if scheme_open && before.contains([':', '/', '?', '#']) {
                scheme_open = false;
            }
            blank_before &= before.chars().all(|c| c <= ' ');
            contexts[k] = Some(if !scheme_open {
                Context::Html
            } else if blank_before {
                let next = marks.get(k + 1).copied().unwrap_or(v1).min(v1);
                let after = text::decode_entities(&scanned[m + MARK.len()..next]);
                blank_before = false;
                Context::UrlStart(after)
            } else {
                return Err((
                    m,
                    format!("merge tag that could change the scheme of the URL in '{name}'"),
                ));
            });
            literal_start = m + MARK.len();
        }
    }
    // Every mark of the tag must be in a value.
    for k in in_tag {
        if contexts[k].is_none() {
            return Err((
                marks[k],
                "merge tag inside an HTML tag but not in an attribute value".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(src: &str) -> Result<Template> {
        Template::compile_html(src)
    }

    fn render(src: &str, value: &str) -> String {
        let t = compile(src).unwrap();
        let values = vec![Some(value); t.fields().len()];
        t.render(&values, true)
    }

    fn err(src: &str) -> (String, Option<String>, usize) {
        match compile(src) {
            Err(Error::Template {
                message,
                field,
                offset,
            }) => (message, field, offset),
            other => panic!("expected a template error for {src:?}, got {other:?}"),
        }
    }

    #[test]
    fn text_and_quoted_attributes_escape_all_five() {
        let evil = "\"'><script>&";
        let esc = "&quot;&#x27;&gt;&lt;script&gt;&amp;";
        assert_eq!(render("<p>{{ email }}</p>", evil), format!("<p>{esc}</p>"));
        assert_eq!(
            render("<p title=\"{{ email }}\" class='{{email}}'>x", evil),
            format!("<p title=\"{esc}\" class='{esc}'>x")
        );
        assert_eq!(
            render("<!-- {{ email }} --><title>{{ email }}</title>", "-->"),
            "<!-- --&gt; --><title>--&gt;</title>"
        );
        assert_eq!(
            render("<!-->{{ email }}<!-- a --!><a href={{email}}>", "<"),
            "<!-->&lt;<!-- a --!><a href=\"&lt;\">"
        );
        assert_eq!(
            render("<!--[if mso]><p>{{ email }}</p><![endif]-->", "<b>"),
            "<!--[if mso]><p>&lt;b&gt;</p><![endif]-->"
        );
    }

    #[test]
    fn unquoted_attribute_values_are_quoted() {
        assert_eq!(
            render("<td class={{ email }} id=x>", "a onclick=alert(1)"),
            "<td class=\"a onclick=alert(1)\" id=x>"
        );
        assert_eq!(
            render("<td class=a{{email}}b>", " x "),
            "<td class=\"a x b\">"
        );
        assert_eq!(render("<td class={{email}}>", ""), "<td class=\"\">");
        let t = compile("<td class={{email}}{{ firstName }} id=x>").unwrap();
        assert_eq!(
            t.render(&[Some("a"), Some("b")], true),
            "<td class=\"ab\" id=x>"
        );
        assert_eq!(
            t.render(&[Some("a"), Some("b")], false),
            "<td class=\"ab\" id=x>"
        );
    }

    #[test]
    fn url_starts_are_checked() {
        let href = "<a href=\"{{ email }}\">x</a>";
        for ok in [
            "https://x.io/a?b=1",
            "HTTP://x",
            "mailto:a@b.io",
            "tel:+1",
            "/relative:x",
            "page",
            "page?x=a:b",
            "#top",
            "",
            "  https://x.io",
        ] {
            let escaped = Template::compile("{{ email }}")
                .unwrap()
                .render(&[Some(ok)], true);
            assert_eq!(
                render(href, ok),
                format!("<a href=\"{escaped}\">x</a>"),
                "{ok:?}"
            );
        }
        for bad in [
            "javascript:alert(1)",
            " JaVaScRiPt:alert(1)",
            "java\tscript:alert(1)",
            "java\nscript:x",
            "\u{1}javascript:x",
            "data:text/html,<b>",
            "vbscript:x",
            "foo bar:baz",
            "httpsx:y",
        ] {
            assert_eq!(
                render(href, bad),
                format!("<a href=\"{BLOCKED_URL}\">x</a>"),
                "{bad:?}"
            );
        }
        // the template text after the field takes part
        let t = "<a href=\"{{ email }}:alert(1)\">";
        assert_eq!(
            render(t, "javascript"),
            format!("<a href=\"{BLOCKED_URL}:alert(1)\">")
        );
        assert_eq!(render(t, "https"), "<a href=\"https:alert(1)\">");
        // an empty value adds nothing to check
        assert_eq!(render(t, ""), "<a href=\":alert(1)\">");
        let t = "<a href=\"{{ email }}&#58;x\">";
        assert_eq!(
            render(t, "javascript"),
            format!("<a href=\"{BLOCKED_URL}&#58;x\">")
        );
        let t = "<a href=\"{{ email }}&colon;x\">";
        assert_eq!(
            render(t, "javascript"),
            format!("<a href=\"{BLOCKED_URL}&colon;x\">")
        );
        assert_eq!(render(t, "page/x"), "<a href=\"page/x&colon;x\">");
        // unquoted: quoted and checked; src and other URL attributes too
        assert_eq!(
            render("<img src={{ email }}>", "javascript:x"),
            format!("<img src=\"{BLOCKED_URL}\">")
        );
        assert_eq!(
            render("<form action='{{ email }}'>", "data:x"),
            format!("<form action='{BLOCKED_URL}'>")
        );
        // after the scheme is fixed, values are only escaped
        for t in [
            "<a href=\"https://x.io/{{ email }}\">",
            "<a href=\"/p/{{ email }}\">",
            "<a href=\"?q={{ email }}\">",
            "<a href=\"#{{ email }}\">",
            "<a href=\"{{ email }}/{{ email }}\">",
            "<a title=\"{{ email }}\">",
        ] {
            let out = render(t, "javascript:x");
            assert!(out.contains("javascript:x"), "{t}: {out}");
        }
    }

    #[test]
    fn unsafe_contexts_are_compile_errors() {
        let cases: &[(&str, &str, usize)] = &[
            (
                "<a {{ email }}>",
                "merge tag 'email' inside an HTML tag but not in an attribute value",
                3,
            ),
            (
                "<a href=\"x\" {{ email }}=\"y\">",
                "merge tag 'email' inside an HTML tag but not in an attribute value",
                12,
            ),
            (
                "<p{{ email }}>",
                "merge tag 'email' inside an HTML tag but not in an attribute value",
                2,
            ),
            ("é<{{ email }}>", "merge tag 'email' right after '<'", 2),
            ("</{{ email }}>", "merge tag 'email' right after '<'", 2),
            ("</p {{ email }}>", "merge tag 'email' inside an end tag", 4),
            (
                "<p title=\"x {{ email }}",
                "merge tag 'email' after a tag that never ends",
                12,
            ),
            (
                "<b x {{ email }}",
                "merge tag 'email' after a tag that never ends",
                5,
            ),
            (
                "<script>var a = '{{ email }}';</script>",
                "merge tag 'email' inside <script>",
                17,
            ),
            (
                "<STYLE>a{color:{{ email }}}</STYLE>",
                "merge tag 'email' inside <style>",
                15,
            ),
            (
                "<a onclick=\"f('{{ email }}')\">",
                "merge tag 'email' in the event-handler attribute 'onclick'",
                15,
            ),
            (
                "<a href=\"java{{ email }}\">",
                "merge tag 'email' that could change the scheme of the URL in 'href'",
                13,
            ),
            (
                "<a href=\"{{email}}{{ email }}\">",
                "merge tag 'email' that could change the scheme of the URL in 'href'",
                18,
            ),
            (
                "<a href=x{{ email }}>",
                "merge tag 'email' that could change the scheme of the URL in 'href'",
                9,
            ),
            (
                "<td class=a'b'{{ email }}>",
                "merge tag 'email' in an unquoted attribute value with a quote",
                14,
            ),
            (
                "<td class=`{{ email }}>",
                "merge tag 'email' in an unquoted attribute value with a quote",
                11,
            ),
        ];
        for &(src, message, offset) in cases {
            assert_eq!(
                err(src),
                (message.to_owned(), Some("email".to_owned()), offset),
                "{src}"
            );
            assert!(Template::compile(src).is_ok(), "{src}");
        }
    }

    #[test]
    fn fields_outside_markup_and_after_raw_text_elements() {
        assert_eq!(
            render(
                "a < {{ email }} <3 <script>x</script>{{email}}<style></style>",
                "<"
            ),
            "a < &lt; <3 <script>x</script>&lt;<style></style>"
        );
        assert_eq!(render("{{ email }}", "<'"), "&lt;&#x27;");
        // single braces are text
        assert_eq!(render("<{ </{ {{ email }}", "x"), "<{ </{ x");
        // the same escaping as an unannotated template where nothing differs
        let src = "<p class=\"{{ email }}\">{{ firstName | default: \"<d>\" }}</p>";
        let html = compile(src).unwrap();
        let plain = Template::compile(src).unwrap();
        let values = [Some("\"x\""), None];
        assert_eq!(html.render(&values, true), plain.render(&values, true));
        assert_eq!(html.fields(), plain.fields());
        assert_eq!(html.source(), src);
    }
}
