//! The merge-tag template language.
//!
//! ```text
//! template := ( literal | tag )*
//! tag      := "{{" ws* path ws* ( "|" ws* filter ws* ":" ws* string ws* )? "}}"
//! ws       := " " | "\t"
//! path     := "email" | "firstName" | "lastName" | "customFields." KEY
//! KEY      := [A-Za-z_][A-Za-z0-9_-]{0,63}
//! filter   := "default"
//! string   := '"' ( any char except '"' and '\' | '\"' | '\\' )* '"'
//! ```
//!
//! Lexing rules: a tag starts at every `{{` in literal text. The path token is the
//! longest run of characters up to a space, tab, `|` or `}}`; the filter-name token is the
//! longest run up to a space, tab, `:`, `"`, `|` or `}`. Everything outside tags (including
//! a lone `}}` or single braces) is literal. All compile errors report the char offset of
//! the `{{` that opens the offending tag.
//!
//! A template compiles to a flat list of [`Segment`]s, so rendering is a single pass into a
//! preallocated `String`. Field values are supplied positionally, indexed like
//! [`Template::fields`], which lets batch renderers resolve each field once per contact.

use std::fmt;

use crate::error::{Error, Result};

/// Maximum length of a `customFields.KEY` key.
const MAX_CUSTOM_KEY_LEN: usize = 64;

/// A known merge-field path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldPath {
    /// `email`
    Email,
    /// `firstName`
    FirstName,
    /// `lastName`
    LastName,
    /// `customFields.KEY` (holds `KEY`).
    Custom(String),
}

impl FieldPath {
    /// Parse a path; `None` when it is not a known field.
    pub fn parse(path: &str) -> Option<FieldPath> {
        match path {
            "email" => Some(FieldPath::Email),
            "firstName" => Some(FieldPath::FirstName),
            "lastName" => Some(FieldPath::LastName),
            _ => {
                let key = path.strip_prefix("customFields.")?;
                is_valid_custom_key(key).then(|| FieldPath::Custom(key.to_owned()))
            }
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldPath::Email => f.write_str("email"),
            FieldPath::FirstName => f.write_str("firstName"),
            FieldPath::LastName => f.write_str("lastName"),
            FieldPath::Custom(key) => write!(f, "customFields.{key}"),
        }
    }
}

fn is_valid_custom_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            bytes.len() <= MAX_CUSTOM_KEY_LEN
                && (first.is_ascii_alphabetic() || *first == b'_')
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        }
        None => false,
    }
}

/// One piece of a compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Text copied verbatim (never escaped).
    Literal(String),
    /// A merge field.
    Field {
        /// Index into [`Template::fields`].
        field: usize,
        /// Used when the value is missing or empty.
        default: Option<String>,
        /// How the value is escaped when rendered as HTML (always [`Escape::Html`] unless
        /// compiled with [`Template::compile_html`]).
        escape: Escape,
    },
    /// The recipient's tracking token, written verbatim. [`Template::compile`] never
    /// produces it; the message renderer adds it when it instruments the HTML part for
    /// click and open tracking (see `crate::tracking`).
    Token,
}

/// How a field's value is escaped when a template renders as HTML (see [`crate::html`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Escape {
    /// `& < > " '` become `&amp; &lt; &gt; &quot; &#x27;` (text content, attribute values,
    /// comments).
    #[default]
    Html,
    /// As [`Escape::Html`], at the start of a URL attribute value: a value that would give the
    /// URL a scheme other than `http`, `https`, `mailto` or `tel` is replaced by
    /// [`crate::html::BLOCKED_URL`].
    UrlStart {
        /// The template text after the field in the attribute value, character references
        /// decoded (the value's scheme may end in it).
        after: Box<str>,
    },
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
    fields: Vec<FieldPath>,
    field_paths: Vec<String>,
    literal_len: usize,
}

impl Template {
    /// Compile `source`.
    pub fn compile(source: &str) -> Result<Template> {
        Ok(Template::parse(source)?.0)
    }

    /// Compile `source` as HTML: every field is escaped for its context, and fields where
    /// no escaping is safe are compile errors (see [`crate::html`]).
    pub fn compile_html(source: &str) -> Result<Template> {
        let (template, opens) = Template::parse(source)?;
        crate::html::contextualize(template, &opens)
    }

    /// Compile `source`; also returns the byte offset of the `{{` of every
    /// [`Segment::Field`], in segment order.
    fn parse(source: &str) -> Result<(Template, Vec<usize>)> {
        let mut opens = Vec::new();
        let mut segments: Vec<Segment> = Vec::new();
        let mut fields: Vec<FieldPath> = Vec::new();
        let mut literal_len = 0;
        let mut pos = 0;
        let mut push_literal = |segments: &mut Vec<Segment>, text: &str| {
            if text.is_empty() {
                return;
            }
            literal_len += text.len();
            if let Some(Segment::Literal(prev)) = segments.last_mut() {
                prev.push_str(text);
            } else {
                segments.push(Segment::Literal(text.to_owned()));
            }
        };
        while let Some(rel) = source[pos..].find("{{") {
            let open = pos + rel;
            push_literal(&mut segments, &source[pos..open]);
            let tag = parse_tag(source, open)?;
            let field = match fields.iter().position(|f| *f == tag.path) {
                Some(i) => i,
                None => {
                    fields.push(tag.path);
                    fields.len() - 1
                }
            };
            segments.push(Segment::Field {
                field,
                default: tag.default,
                escape: Escape::Html,
            });
            opens.push(open);
            pos = tag.end;
        }
        push_literal(&mut segments, &source[pos..]);
        let field_paths = fields.iter().map(ToString::to_string).collect();
        let template = Template {
            source: source.to_owned(),
            segments,
            fields,
            field_paths,
            literal_len,
        };
        Ok((template, opens))
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Distinct fields referenced, in order of first appearance.
    pub fn fields(&self) -> &[FieldPath] {
        &self.fields
    }

    /// Distinct field paths (e.g. `customFields.plan`), parallel to [`Template::fields`].
    pub fn field_paths(&self) -> &[String] {
        &self.field_paths
    }

    /// The compiled segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Total byte length of the literal segments.
    pub fn literal_len(&self) -> usize {
        self.literal_len
    }

    /// A copy with `segments` in place of the compiled ones (same source and fields; adjacent
    /// literals are merged). Every field index in `segments` must be one of this template's.
    pub(crate) fn with_segments(&self, segments: Vec<Segment>) -> Template {
        let mut merged: Vec<Segment> = Vec::with_capacity(segments.len());
        let mut literal_len = 0;
        for segment in segments {
            match (segment, merged.last_mut()) {
                (Segment::Literal(text), _) if text.is_empty() => {}
                (Segment::Literal(text), Some(Segment::Literal(prev))) => {
                    literal_len += text.len();
                    prev.push_str(&text);
                }
                (segment, _) => {
                    if let Segment::Literal(text) = &segment {
                        literal_len += text.len();
                    }
                    merged.push(segment);
                }
            }
        }
        Template {
            source: self.source.clone(),
            segments: merged,
            fields: self.fields.clone(),
            field_paths: self.field_paths.clone(),
            literal_len,
        }
    }

    /// Render with positional values: `values[i]` is the value of `fields()[i]`
    /// (`None`, an empty string or a missing index all mean "no value").
    /// With `html`, substituted values and defaults are HTML-escaped; literal text never is.
    pub fn render(&self, values: &[Option<&str>], html: bool) -> String {
        let mut out = String::with_capacity(self.estimate_len(values, html));
        self.render_into(&mut out, values, html);
        out
    }

    /// Like [`Template::render`] but appends to `out` (lets batch renderers reuse buffers).
    pub fn render_into(&self, out: &mut String, values: &[Option<&str>], html: bool) {
        self.render_by(out, |field| values.get(field).copied().flatten(), html, "");
    }

    /// Like [`Template::render_into`] with values indexed through `index`: the value of
    /// `fields()[i]` is `values[index[i]]` (lets a caller share one value table between
    /// several templates).
    pub fn render_into_indexed(
        &self,
        out: &mut String,
        values: &[Option<&str>],
        index: &[usize],
        html: bool,
    ) {
        self.render_into_indexed_with_token(out, values, index, html, "");
    }

    /// Like [`Template::render_into_indexed`], writing `token` (verbatim) for every
    /// [`Segment::Token`]; the other methods write nothing for a token slot.
    pub fn render_into_indexed_with_token(
        &self,
        out: &mut String,
        values: &[Option<&str>],
        index: &[usize],
        html: bool,
        token: &str,
    ) {
        self.render_by(
            out,
            |field| {
                index
                    .get(field)
                    .and_then(|&i| values.get(i).copied().flatten())
            },
            html,
            token,
        );
    }

    fn render_by<'v>(
        &self,
        out: &mut String,
        value: impl Fn(usize) -> Option<&'v str>,
        html: bool,
        token: &str,
    ) {
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Token => out.push_str(token),
                Segment::Field {
                    field,
                    default,
                    escape,
                } => {
                    let text = match value(*field) {
                        Some(v) if !v.is_empty() => Some(v),
                        _ => default.as_deref(),
                    };
                    if let Some(text) = text {
                        if html {
                            html_escape_into(out, escape.apply(text));
                        } else {
                            out.push_str(text);
                        }
                    }
                }
            }
        }
    }

    /// Render looking each field path up with `lookup` (once per distinct field).
    pub fn render_with<'v>(&self, lookup: impl Fn(&str) -> Option<&'v str>, html: bool) -> String {
        let values: Vec<Option<&str>> = self.field_paths.iter().map(|p| lookup(p)).collect();
        self.render(&values, html)
    }

    fn estimate_len(&self, values: &[Option<&str>], html: bool) -> usize {
        let substituted: usize = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) | Segment::Token => 0,
                Segment::Field { field, default, .. } => {
                    resolve(values, *field, default.as_deref()).map_or(0, str::len)
                }
            })
            .sum();
        let slack = if html { substituted / 8 } else { 0 };
        self.literal_len + substituted + slack
    }
}

impl Escape {
    /// The text to HTML-escape for `value` (the value itself, or the blocked-URL stand-in).
    #[inline]
    pub fn apply<'v>(&self, value: &'v str) -> &'v str {
        match self {
            Escape::Html => value,
            Escape::UrlStart { after } => crate::html::url_start(value, after),
        }
    }
}

#[inline]
fn resolve<'a>(
    values: &[Option<&'a str>],
    field: usize,
    default: Option<&'a str>,
) -> Option<&'a str> {
    match values.get(field).copied().flatten() {
        Some(v) if !v.is_empty() => Some(v),
        _ => default,
    }
}

/// Append `text` to `out`, escaping `& < > " '` as `&amp; &lt; &gt; &quot; &#x27;`.
pub fn html_escape_into(out: &mut String, text: &str) {
    let mut last = 0;
    for (i, b) in text.bytes().enumerate() {
        let rep = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#x27;",
            _ => continue,
        };
        out.push_str(&text[last..i]);
        out.push_str(rep);
        last = i + 1;
    }
    out.push_str(&text[last..]);
}

struct Tag {
    path: FieldPath,
    default: Option<String>,
    /// Byte index just past the closing `}}`.
    end: usize,
}

#[inline]
fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Parse the tag whose `{{` starts at byte `open`.
fn parse_tag(src: &str, open: usize) -> Result<Tag> {
    let b = src.as_bytes();
    let err = |message: String, field: Option<String>| Error::Template {
        message,
        field,
        offset: src[..open].chars().count(),
    };
    let unterminated = || {
        err(
            "unterminated tag: '{{' without a matching '}}'".into(),
            None,
        )
    };
    let at_close = |i: usize| b.get(i) == Some(&b'}') && b.get(i + 1) == Some(&b'}');
    let skip_ws = |mut i: usize| {
        while i < b.len() && is_ws(b[i]) {
            i += 1;
        }
        i
    };
    if !src[open + 2..].contains("}}") {
        return Err(unterminated());
    }
    // All delimiters are ASCII, so byte-wise scanning never splits a UTF-8 sequence.
    let mut i = skip_ws(open + 2);
    let path_start = i;
    while i < b.len() && !is_ws(b[i]) && b[i] != b'|' && !at_close(i) {
        i += 1;
    }
    let path_text = &src[path_start..i];
    if path_text.is_empty() {
        return Err(if at_close(i) {
            err("empty tag '{{ }}'".into(), None)
        } else {
            err("missing field path before '|'".into(), None)
        });
    }
    let Some(path) = FieldPath::parse(path_text) else {
        return Err(err(
            format!("unknown field '{path_text}'"),
            Some(path_text.to_owned()),
        ));
    };
    i = skip_ws(i);
    if at_close(i) {
        return Ok(Tag {
            path,
            default: None,
            end: i + 2,
        });
    }
    match b.get(i) {
        None => return Err(unterminated()),
        Some(b'|') => {}
        Some(_) => {
            let c = src[i..].chars().next().unwrap_or_default();
            return Err(err(format!("unexpected character '{c}' in tag"), None));
        }
    }
    i = skip_ws(i + 1);
    let name_start = i;
    while i < b.len() && !is_ws(b[i]) && !matches!(b[i], b':' | b'"' | b'|' | b'}') {
        i += 1;
    }
    let name = &src[name_start..i];
    if name.is_empty() {
        return Err(if i >= b.len() {
            unterminated()
        } else {
            err("missing filter name after '|'".into(), None)
        });
    }
    if name != "default" {
        return Err(err(format!("unknown filter '{name}'"), None));
    }
    i = skip_ws(i);
    match b.get(i) {
        None => return Err(unterminated()),
        Some(b':') => {}
        Some(_) => return Err(err("expected ':' after 'default'".into(), None)),
    }
    i = skip_ws(i + 1);
    match b.get(i) {
        None => return Err(unterminated()),
        Some(b'"') => {}
        Some(_) => {
            return Err(err(
                "expected a double-quoted string after 'default:'".into(),
                None,
            ))
        }
    }
    i += 1;
    let mut literal = String::new();
    let mut chunk_start = i;
    loop {
        match b.get(i) {
            None => return Err(err("unterminated string literal".into(), None)),
            Some(b'"') => {
                literal.push_str(&src[chunk_start..i]);
                i += 1;
                break;
            }
            Some(b'\\') => {
                literal.push_str(&src[chunk_start..i]);
                match b.get(i + 1) {
                    Some(&e @ (b'"' | b'\\')) => literal.push(char::from(e)),
                    None => return Err(err("unterminated string literal".into(), None)),
                    Some(_) => {
                        let c = src[i + 1..].chars().next().unwrap_or_default();
                        return Err(err(
                            format!("invalid escape '\\{c}' in string literal"),
                            None,
                        ));
                    }
                }
                i += 2;
                chunk_start = i;
            }
            Some(_) => i += 1,
        }
    }
    i = skip_ws(i);
    if at_close(i) {
        return Ok(Tag {
            path,
            default: Some(literal),
            end: i + 2,
        });
    }
    if i >= b.len() {
        return Err(unterminated());
    }
    Err(err("expected '}}' to close tag".into(), None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn render(src: &str, values: &[(&str, &str)], html: bool) -> String {
        let map: HashMap<&str, &str> = values.iter().copied().collect();
        Template::compile(src)
            .unwrap()
            .render_with(|p| map.get(p).copied(), html)
    }

    fn compile_err(src: &str) -> (String, Option<String>, usize) {
        match Template::compile(src) {
            Err(e @ Error::Template { .. }) => {
                let Error::Template { field, offset, .. } = e.clone() else {
                    unreachable!()
                };
                (e.to_string(), field, offset)
            }
            other => panic!("expected template error for {src:?}, got {other:?}"),
        }
    }

    #[test]
    fn plain_text_and_braces_are_literal() {
        for src in ["", "hello", "a } b { c", "}} closing only", "{ {", "x}}}y"] {
            assert_eq!(render(src, &[], false), src);
            assert!(Template::compile(src).unwrap().fields().is_empty());
        }
    }

    #[test]
    fn simple_substitution() {
        let out = render(
            "Hi {{ firstName }} <{{email}}>!",
            &[("firstName", "Ann"), ("email", "a@x.io")],
            false,
        );
        assert_eq!(out, "Hi Ann <a@x.io>!");
    }

    #[test]
    fn default_used_when_missing_or_empty() {
        let src = "Hi {{ firstName | default: \"friend\" }}";
        assert_eq!(render(src, &[], false), "Hi friend");
        assert_eq!(render(src, &[("firstName", "")], false), "Hi friend");
        assert_eq!(render(src, &[("firstName", "Bo")], false), "Hi Bo");
        assert_eq!(render("Hi {{ firstName }}!", &[], false), "Hi !");
    }

    #[test]
    fn whitespace_variants() {
        let src = "{{\tlastName\t|\tdefault\t:\t\"x\"\t}}{{lastName|default:\"y\"}}";
        assert_eq!(render(src, &[], false), "xy");
        let t = Template::compile(src).unwrap();
        assert_eq!(t.field_paths(), ["lastName"]);
        assert_eq!(t.segments().len(), 2);
    }

    #[test]
    fn escapes_in_default_literal() {
        let src = r#"{{ email | default: "a \"q\" \\ b }} c" }}"#;
        assert_eq!(render(src, &[], false), r#"a "q" \ b }} c"#);
    }

    #[test]
    fn html_escaping_applies_to_values_and_defaults_only() {
        let src = "<b>{{ firstName }}</b>{{ lastName | default: \"<&>\" }}";
        assert_eq!(
            render(src, &[("firstName", "A&B <i>\"'")], true),
            "<b>A&amp;B &lt;i&gt;&quot;&#x27;</b>&lt;&amp;&gt;"
        );
        assert_eq!(
            render(src, &[("firstName", "A&B <i>\"'")], false),
            "<b>A&B <i>\"'</b><&>"
        );
    }

    #[test]
    fn fields_distinct_in_first_appearance_order() {
        let t = Template::compile(
            "{{ lastName }}{{ customFields.plan-2 }}{{ lastName }}{{ email }}{{customFields.plan-2}}",
        )
        .unwrap();
        assert_eq!(
            t.field_paths(),
            ["lastName", "customFields.plan-2", "email"]
        );
        assert_eq!(t.fields()[1], FieldPath::Custom("plan-2".into()));
        assert_eq!(t.source(), "{{ lastName }}{{ customFields.plan-2 }}{{ lastName }}{{ email }}{{customFields.plan-2}}");
    }

    #[test]
    fn positional_render_and_render_into() {
        let t = Template::compile("{{email}}/{{firstName|default:\"d\"}}").unwrap();
        assert_eq!(t.render(&[Some("e"), None], false), "e/d");
        assert_eq!(t.render(&[], false), "/d");
        let mut buf = String::from(">");
        t.render_into(&mut buf, &[Some("<"), Some("f")], true);
        assert_eq!(buf, ">&lt;/f");
    }

    #[test]
    fn indexed_render_shares_a_value_table() {
        let t = Template::compile("{{lastName}}/{{email|default:\"d\"}}/{{firstName}}").unwrap();
        let table = [Some("e"), Some("f"), None, Some("<l>")];
        let mut out = String::new();
        t.render_into_indexed(&mut out, &table, &[3, 2, 1], true);
        assert_eq!(out, "&lt;l&gt;/d/f");
        out.clear();
        t.render_into_indexed(&mut out, &table, &[0, 9], false);
        assert_eq!(out, "e/d/");
    }

    #[test]
    fn unicode_passthrough_and_char_offsets() {
        assert_eq!(
            render("héllo {{ firstName }} ✓", &[("firstName", "Zoë")], false),
            "héllo Zoë ✓"
        );
        let (msg, field, offset) = compile_err("héllo ✓ {{ nope }}");
        assert_eq!(msg, "unknown field 'nope' at offset 8");
        assert_eq!(field.as_deref(), Some("nope"));
        assert_eq!(offset, 8);
    }

    #[test]
    fn custom_field_keys() {
        let ok_key = format!("customFields.{}", "a".repeat(64));
        assert!(Template::compile(&format!("{{{{ {ok_key} }}}}")).is_ok());
        for bad in [
            "customFields.".to_string(),
            "customFields.1abc".into(),
            "customFields.a.b".into(),
            "customFields.é".into(),
            format!("customFields.{}", "a".repeat(65)),
            "customfields.a".into(),
            "Email".into(),
            "first_name".into(),
        ] {
            let (msg, field, offset) = compile_err(&format!("x{{{{{bad}}}}}"));
            assert_eq!(field.as_deref(), Some(bad.as_str()));
            assert_eq!(offset, 1);
            assert_eq!(msg, format!("unknown field '{bad}' at offset 1"));
        }
    }

    #[test]
    fn syntax_errors() {
        let cases: &[(&str, &str, usize)] = &[
            ("ab{{ }}", "empty tag '{{ }}'", 2),
            ("{{}}", "empty tag '{{ }}'", 0),
            (
                "hi {{ email",
                "unterminated tag: '{{' without a matching '}}'",
                3,
            ),
            ("{{", "unterminated tag: '{{' without a matching '}}'", 0),
            ("{{ | default: \"x\" }}", "missing field path before '|'", 0),
            ("{{ email | upper }}", "unknown filter 'upper'", 0),
            ("{{ email | }}", "missing filter name after '|'", 0),
            (
                "{{ email | default \"x\" }}",
                "expected ':' after 'default'",
                0,
            ),
            (
                "{{ email | default: x }}",
                "expected a double-quoted string after 'default:'",
                0,
            ),
            (
                "{{ email | default: \"x }}",
                "unterminated string literal",
                0,
            ),
            (
                "{{ email | default: \"\\n\" }}",
                "invalid escape '\\n' in string literal",
                0,
            ),
            (
                "{{ email | default: \"x\" y }}",
                "expected '}}' to close tag",
                0,
            ),
            (
                "{{ email | default: \"}}\"",
                "unterminated tag: '{{' without a matching '}}'",
                0,
            ),
            ("{{ email x }}", "unexpected character 'x' in tag", 0),
            (
                "ok {{email}} {{ email",
                "unterminated tag: '{{' without a matching '}}'",
                13,
            ),
        ];
        for (src, msg, offset) in cases {
            let (m, field, off) = compile_err(src);
            assert_eq!(m, format!("{msg} at offset {offset}"), "{src:?}");
            assert_eq!(field, None, "{src:?}");
            assert_eq!(off, *offset, "{src:?}");
        }
    }

    #[test]
    fn triple_braces_open_at_first_pair() {
        let (_, field, offset) = compile_err("{{{ email }}}");
        assert_eq!(field.as_deref(), Some("{"));
        assert_eq!(offset, 0);
        assert_eq!(render("{ {{email}}}", &[("email", "e")], false), "{ e}");
    }

    #[test]
    fn multiline_literals() {
        assert_eq!(
            render("a\r\n{{email}}\nb\r", &[("email", "x")], false),
            "a\r\nx\nb\r"
        );
    }

    #[test]
    fn escape_helper() {
        let mut s = String::new();
        html_escape_into(&mut s, "plain é");
        html_escape_into(&mut s, "&&");
        assert_eq!(s, "plain é&amp;&amp;");
    }
}
