//! Click and open tracking of the HTML part, applied once per campaign.
//!
//! [`instrument`] rewrites a compiled HTML [`Template`]; per recipient only the tracking token
//! is written, through [`Segment::Token`] slots, so rendering stays one pass.
//!
//! * Click tracking: the `href` of every `<a>` tag (double-, single- or un-quoted, name
//!   ASCII case-insensitive, first `href` wins, any attribute order) whose value contains no
//!   merge tag and decodes to an absolute `http://`/`https://` URL becomes
//!   `{base}/c/{TOKEN}/{link_id}`. The URL of the link table is the value with character
//!   references decoded, leading/trailing HTML whitespace trimmed and tab/CR/LF removed (as a
//!   browser's URL parser does). Untouched: values with a merge tag, other schemes, relative
//!   URLs and fragments, URLs with control characters, URLs under `{base}/` (the
//!   engine's own endpoints, e.g. unsubscribe), and every `<a>` with a `data-mc-notrack`
//!   attribute. Equal URLs share one id (ids are positions in the link table, in order of
//!   first appearance).
//! * Open tracking: a 1×1 `<img src="{base}/o/{TOKEN}">` just before the last `</body>` tag,
//!   or at the end without one.
//!
//! Markup is scanned with the tokenizer of [`crate::text`]: comments and declarations
//! (including Outlook conditional comments) and the contents of `<script>`, `<style>`,
//! `<title>` and `<textarea>` are skipped. A merge tag counts as opaque text that contains
//! no markup (substituted values are HTML-escaped).

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::header::is_header_control;
use crate::template::{html_escape_into, Segment, Template};
use crate::text::{self, TagKind};

/// Maximum length of the tracking base URL.
pub const MAX_BASE_LEN: usize = 512;
/// Maximum length of a tracking token.
pub const MAX_TOKEN_LEN: usize = 256;

/// Stands for a merge tag in the scanned text: it is how a merge tag starts, and literal
/// template text never contains it.
const FIELD_MARK: &str = "{{";
/// Elements whose contents are not markup.
const SKIPPED_ELEMENTS: &[&str] = &["script", "style", "title", "textarea"];
const PIXEL_CLOSE: &str =
    "\" width=\"1\" height=\"1\" alt=\"\" style=\"display:block;width:1px;height:1px;border:0\" />";

/// The tracking options of a campaign (all off by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tracking<'a> {
    /// Insert the open-tracking pixel.
    pub opens: bool,
    /// Rewrite links for click tracking.
    pub clicks: bool,
    /// Absolute http(s) URL without a trailing slash, query or fragment (e.g.
    /// `https://mail.example.com/t`); required when `opens` or `clicks` is set.
    pub base: &'a str,
}

impl Tracking<'_> {
    /// Whether either kind of tracking is on (messages then need a token).
    pub fn enabled(&self) -> bool {
        self.opens || self.clicks
    }

    /// Check the options: with tracking on, the base is required and must be valid; with
    /// tracking off it is ignored (callers may always pass their public URL).
    pub fn validate(&self) -> Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        if self.base.is_empty() {
            return Err(Error::Mime(
                "tracking_base is required when open or click tracking is on".into(),
            ));
        }
        validate_base(self.base)
    }
}

/// A tracking base: `http://` or `https://` (any case) then a host, no trailing `/`, at most
/// [`MAX_BASE_LEN`] bytes of printable ASCII other than quotes, `<`, `>`, `\`, `^`, a
/// backtick, `{`, `|`, `}`, `?` and `#`.
pub fn validate_base(base: &str) -> Result<()> {
    let fail = |why: &str| {
        Err(Error::Mime(format!(
            "invalid tracking_base {base:?}: {why}"
        )))
    };
    if base.len() > MAX_BASE_LEN {
        return fail("too long");
    }
    let Some(rest) = strip_http_scheme(base) else {
        return fail("expected an absolute http(s) URL");
    };
    if rest.is_empty() || rest.starts_with('/') {
        return fail("missing host");
    }
    if base.ends_with('/') {
        return fail("trailing '/'");
    }
    if let Some(c) = base.chars().find(|&c| {
        !c.is_ascii_graphic()
            || matches!(
                c,
                '"' | '\'' | '<' | '>' | '\\' | '^' | '`' | '{' | '|' | '}' | '?' | '#'
            )
    }) {
        return fail(&format!("forbidden character {c:?}"));
    }
    Ok(())
}

/// A tracking token: `[A-Za-z0-9_-]+`, at most [`MAX_TOKEN_LEN`] bytes.
pub fn validate_token(token: &str) -> Result<()> {
    let ok = !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::Mime(format!(
            "invalid tracking token {token:?}: expected 1 to {MAX_TOKEN_LEN} of [A-Za-z0-9_-]"
        )))
    }
}

/// `url` without its `http://` or `https://` prefix (ASCII case-insensitive).
fn strip_http_scheme(url: &str) -> Option<&str> {
    ["http://", "https://"].iter().find_map(|scheme| {
        url.get(..scheme.len())
            .filter(|p| p.eq_ignore_ascii_case(scheme))
            .map(|_| &url[scheme.len()..])
    })
}

/// A replacement of `scanned[start..end]` (within one literal segment).
struct Edit {
    start: usize,
    end: usize,
    with: [Segment; 3],
}

/// Instrument the compiled HTML template for `tracking` (which must be valid); returns the
/// new template and the link table. With tracking off, the template is returned unchanged.
pub fn instrument(html: &Template, tracking: &Tracking<'_>) -> (Template, Vec<String>) {
    let mut links = Vec::new();
    if !tracking.enabled() {
        return (html.clone(), links);
    }
    let mut base = String::with_capacity(tracking.base.len());
    html_escape_into(&mut base, tracking.base);

    // The template's text with every merge tag replaced by FIELD_MARK.
    let mut scanned = String::with_capacity(html.literal_len() + 2 * html.segments().len());
    for segment in html.segments() {
        match segment {
            Segment::Literal(text) => scanned.push_str(text),
            Segment::Field { .. } | Segment::Token => scanned.push_str(FIELD_MARK),
        }
    }

    let mut edits: Vec<Edit> = Vec::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut body_close = None;
    let mut i = 0;
    while let Some(rel) = scanned[i..].find('<') {
        let at = i + rel;
        let Some(tag) = text::parse_tag(&scanned, at) else {
            i = at + 1;
            continue;
        };
        let name = &scanned[tag.name.0..tag.name.1];
        i = tag.end;
        match tag.kind {
            TagKind::Open
                if SKIPPED_ELEMENTS
                    .iter()
                    .any(|e| e.eq_ignore_ascii_case(name)) =>
            {
                i = text::skip_element(&scanned, tag.end, name);
            }
            TagKind::Open if tracking.clicks && name.eq_ignore_ascii_case("a") => {
                let Some((href, url)) = tracked_href(&scanned, tag.attrs, tracking.base) else {
                    continue;
                };
                let id = *ids.entry(url).or_insert_with_key(|url| {
                    links.push(url.clone());
                    links.len() - 1
                });
                let quote = if href.quote.is_some() { "" } else { "\"" };
                edits.push(Edit {
                    start: href.value.0,
                    end: href.value.1,
                    with: [
                        Segment::Literal(format!("{quote}{base}/c/")),
                        Segment::Token,
                        Segment::Literal(format!("/{id}{quote}")),
                    ],
                });
            }
            TagKind::Close if name.eq_ignore_ascii_case("body") => body_close = Some(at),
            _ => {}
        }
    }
    if tracking.opens {
        let at = body_close.unwrap_or(scanned.len());
        edits.push(Edit {
            start: at,
            end: at,
            with: [
                Segment::Literal(format!("<img src=\"{base}/o/")),
                Segment::Token,
                Segment::Literal(PIXEL_CLOSE.to_owned()),
            ],
        });
        edits.sort_by_key(|e| e.start);
    }

    let mut segments = Vec::with_capacity(html.segments().len() + 3 * edits.len());
    let mut edits = edits.into_iter().peekable();
    let mut pos = 0;
    for segment in html.segments() {
        let Segment::Literal(text) = segment else {
            segments.push(segment.clone());
            pos += FIELD_MARK.len();
            continue;
        };
        let end = pos + text.len();
        let mut done = 0;
        while let Some(edit) = edits.next_if(|e| e.start < end) {
            segments.push(Segment::Literal(text[done..edit.start - pos].to_owned()));
            segments.extend(edit.with);
            done = edit.end - pos;
        }
        segments.push(Segment::Literal(text[done..].to_owned()));
        pos = end;
    }
    for edit in edits {
        segments.extend(edit.with);
    }
    (html.with_segments(segments), links)
}

/// The `href` attribute of the `<a>` tag with attribute text `scanned[attrs.0..attrs.1]`
/// and its link-table URL, when the link is tracked.
fn tracked_href(scanned: &str, attrs: (usize, usize), base: &str) -> Option<(text::Attr, String)> {
    let mut href = None;
    for attr in text::attrs(scanned, attrs.0, attrs.1) {
        let name = &scanned[attr.name.0..attr.name.1];
        if name.eq_ignore_ascii_case("data-mc-notrack") {
            return None;
        }
        if href.is_none() && name.eq_ignore_ascii_case("href") {
            href = Some(attr);
        }
    }
    let href = href?;
    let raw = &scanned[href.value.0..href.value.1];
    if raw.contains(FIELD_MARK) {
        return None;
    }
    let url = link_url(raw, base)?;
    Some((href, url))
}

/// The link-table URL of the raw `href` value `raw`, or `None` when it is not tracked.
fn link_url(raw: &str, base: &str) -> Option<String> {
    let decoded = text::decode_entities(raw);
    let url: String = decoded
        .trim_matches([' ', '\t', '\n', '\r', '\x0C'])
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let rest = strip_http_scheme(&url)?;
    if rest.is_empty() || url.chars().any(|c| c.is_control() || is_header_control(c)) {
        return None;
    }
    let own = url
        .get(..base.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(base))
        && matches!(
            url.as_bytes().get(base.len()),
            None | Some(b'/' | b'?' | b'#')
        );
    (!own).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://t.example/mc";
    const PIXEL_OPEN: &str = "<img src=\"https://t.example/mc/o/";

    fn tracking(opens: bool, clicks: bool) -> Tracking<'static> {
        Tracking {
            opens,
            clicks,
            base: BASE,
        }
    }

    /// Instrument `html` and render it without values (merge tags render their default or
    /// nothing) and with token `TOK`.
    fn run(html: &str, opens: bool, clicks: bool) -> (String, Vec<String>) {
        let template = Template::compile(html).unwrap();
        let (t, links) = instrument(&template, &tracking(opens, clicks));
        let mut out = String::new();
        t.render_into_indexed_with_token(&mut out, &[], &[], true, "TOK");
        (out, links)
    }

    fn clicks(html: &str) -> (String, Vec<String>) {
        run(html, false, true)
    }

    fn c(id: usize) -> String {
        format!("{BASE}/c/TOK/{id}")
    }

    #[test]
    fn quotes_case_and_attribute_order() {
        let (out, links) = clicks(
            "<a href=\"https://a.io/1\">1</a><A class='x' HREF='http://b.io/2' id=q>2</A>\
             <a\n title=\"t\"\thref = https://c.io/3>3</a><a href=https://d.io/4/>4</a>",
        );
        assert_eq!(
            links,
            [
                "https://a.io/1",
                "http://b.io/2",
                "https://c.io/3",
                "https://d.io/4/"
            ]
        );
        assert_eq!(
            out,
            format!(
                "<a href=\"{}\">1</a><A class='x' HREF='{}' id=q>2</A>\
                 <a\n title=\"t\"\thref = \"{}\">3</a><a href=\"{}\">4</a>",
                c(0),
                c(1),
                c(2),
                c(3)
            )
        );
    }

    #[test]
    fn entities_are_decoded_for_the_link_table() {
        let (out, links) = clicks(
            "<a href=\"https://x.io/?a=1&amp;b=&quot;2&quot;&#38;c=&#x27;3\">x</a>\
             <a href=' https://x.io/p\n q&#9;r '>y</a><a href=\"HTTPS://Ü.io/é?q=&lt;&gt;&unknown;\">z</a>",
        );
        assert_eq!(
            links,
            [
                "https://x.io/?a=1&b=\"2\"&c='3",
                "https://x.io/p qr",
                "HTTPS://Ü.io/é?q=<>&unknown;"
            ]
        );
        assert_eq!(
            out,
            format!(
                "<a href=\"{}\">x</a><a href='{}'>y</a><a href=\"{}\">z</a>",
                c(0),
                c(1),
                c(2)
            )
        );
    }

    #[test]
    fn untracked_links_are_left_untouched() {
        let html = "<a href=\"https://x.io/?n={{ firstName }}\">m</a>\
            <a href=\"{{ customFields.url | default: \"https://d.io\" }}\">m</a>\
            <a href=\"mailto:a@b.io\">m</a><a href=\"tel:+1\">t</a><a href=\"#top\">a</a>\
            <a href=\"/rel\">r</a><a href=\"//x.io/p\">p</a><a href=\"ftp://x.io\">f</a>\
            <a href=\"https://\">e</a><a href=\"\">e</a><a href>e</a><a name=\"n\">n</a>\
            <a data-mc-notrack href=\"https://x.io/n\">n</a>\
            <a href=\"https://x.io/n\" DATA-MC-NOTRACK=\"1\">n</a>\
            <a href=\"https://x.io/\u{1}\">c</a><a href=\"https://x.io/&#133;\">c</a>\
            <a href=\"https://t.example/mc/u/tok\">u</a><a href=\"https://T.example/MC\">u</a>\
            <link href=\"https://x.io/css\"><area href=\"https://x.io/area\">\
            <!-- <a href=\"https://x.io/comment\">c</a> -->\
            <!--[if mso]><a href=\"https://x.io/mso\">c</a><![endif]-->\
            <script>var a = '<a href=\"https://x.io/script\">';</script>\
            <title><a href=\"https://x.io/title\"></title><style>a{}</style>";
        let (out, links) = clicks(html);
        assert!(links.is_empty(), "{links:?}");
        let plain = Template::compile(html).unwrap().render(&[], true);
        assert_eq!(out, plain);
        // a base that only shares a prefix with a URL does not exclude it
        let (_, links) = clicks("<a href=\"https://t.example/mcx\">x</a>");
        assert_eq!(links, ["https://t.example/mcx"]);
    }

    #[test]
    fn merge_tags_elsewhere_in_the_tag_or_text() {
        let (out, links) = clicks(
            "<a title=\"{{ firstName }}\" href=\"https://x.io/a\">{{ lastName | default: \"L\" }}</a>\
             <p>{{ email | default: \"<a href='https://x.io/b'>\" }}</p>",
        );
        assert_eq!(links, ["https://x.io/a"]);
        assert_eq!(
            out,
            format!(
                "<a title=\"\" href=\"{}\">L</a><p>&lt;a href=&#x27;https://x.io/b&#x27;&gt;</p>",
                c(0)
            )
        );
    }

    #[test]
    fn duplicates_share_an_id() {
        let (out, links) = clicks(
            "<a href=\"https://x.io/a\">1</a><a href='https://x.io/b'>2</a>\
             <a href=\"https://x.io/a\">3</a><a href=\"https://x.io/&#97;\">4</a>\
             <a href=\"HTTPS://x.io/a\">5</a>",
        );
        assert_eq!(
            links,
            ["https://x.io/a", "https://x.io/b", "HTTPS://x.io/a"]
        );
        let hrefs: Vec<&str> = out.split("/c/TOK/").skip(1).map(|s| &s[..1]).collect();
        assert_eq!(hrefs, ["0", "1", "0", "0", "2"]);
    }

    #[test]
    fn base_is_escaped_in_markup() {
        let template = Template::compile("<a href=\"https://x.io\">x</a></body>").unwrap();
        let t = Tracking {
            opens: true,
            clicks: true,
            base: "https://t.io/a&b",
        };
        let (t, _) = instrument(&template, &t);
        let out = t.render(&[], true);
        assert_eq!(
            out,
            format!("<a href=\"https://t.io/a&amp;b/c//0\">x</a><img src=\"https://t.io/a&amp;b/o/{PIXEL_CLOSE}</body>")
        );
    }

    #[test]
    fn pixel_placement() {
        let pixel = format!("{PIXEL_OPEN}TOK{PIXEL_CLOSE}");
        let (out, links) = run(
            "<html><body><a href=\"https://x.io\">x</a></body></html>",
            true,
            false,
        );
        assert!(links.is_empty());
        assert_eq!(
            out,
            format!("<html><body><a href=\"https://x.io\">x</a>{pixel}</body></html>")
        );
        // the last </body>, any case, with attributes/whitespace; not in comments or scripts
        let (out, _) = run(
            "<body>a</body>b</BODY >c<!-- </body> --><script>'</body>'</script>d</bodyx>",
            true,
            false,
        );
        assert_eq!(
            out,
            format!("<body>a</body>b{pixel}</BODY >c<!-- </body> --><script>'</body>'</script>d</bodyx>")
        );
        for html in ["", "<p>no body</p>", "<p>{{ firstName }}</p>", "x</body"] {
            let (out, _) = run(html, true, false);
            assert_eq!(
                out,
                format!(
                    "{}{pixel}",
                    Template::compile(html).unwrap().render(&[], true)
                )
            );
        }
        let (out, _) = run("<p>{{ firstName }}</body>{{ lastName }}", true, true);
        assert_eq!(out, format!("<p>{pixel}</body>"));
    }

    #[test]
    fn token_segments_and_literal_merging() {
        let template =
            Template::compile("a{{ email }}<a href=\"https://x.io\">b</a>c</body>").unwrap();
        let (t, links) = instrument(&template, &tracking(true, true));
        assert_eq!(links, ["https://x.io"]);
        assert_eq!(t.fields(), template.fields());
        assert_eq!(t.source(), template.source());
        let kinds: Vec<&str> = t
            .segments()
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => "L",
                Segment::Field { .. } => "F",
                Segment::Token => "T",
            })
            .collect();
        assert_eq!(kinds, ["L", "F", "L", "T", "L", "T", "L"]);
        let literal_len: usize = t
            .segments()
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(t.literal_len(), literal_len);
        // without a token the slots render empty; off leaves the template unchanged
        assert!(t.render(&[], true).contains("/c//0\""));
        let (same, links) = instrument(&template, &Tracking::default());
        assert_eq!(same, template);
        assert!(links.is_empty());
        let (same, _) = instrument(&template, &tracking(false, false));
        assert_eq!(same, template);
    }

    #[test]
    fn opens_only_or_clicks_only() {
        let html = "<a href=\"https://x.io\">x</a></body>";
        let (out, links) = run(html, true, false);
        assert!(links.is_empty() && out.starts_with("<a href=\"https://x.io\">"));
        assert!(out.contains(PIXEL_OPEN));
        let (out, links) = run(html, false, true);
        assert_eq!(links, ["https://x.io"]);
        assert!(!out.contains("<img"));
    }

    #[test]
    fn token_validation() {
        for ok in ["a", "AZaz09_-", &"x".repeat(MAX_TOKEN_LEN)] {
            assert!(validate_token(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            "a.b",
            "a=",
            "a+b",
            "é",
            "a\r\nb",
            "a\"",
            &"x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(
                matches!(validate_token(bad), Err(Error::Mime(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn base_validation() {
        for ok in [
            "https://t.io",
            "http://t.io:8080/a/b",
            "HTTPS://T.IO/x_y-z~%20",
            "https://t.io/a&b",
        ] {
            assert!(validate_base(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "t.io",
            "ftp://t.io",
            "https://",
            "https:///x",
            "https://t.io/",
            "https://t.io/a b",
            "https://t.io/\"",
            "https://t.io/'",
            "https://t.io/<",
            "https://t.io/?q",
            "https://t.io/#f",
            "https://t.io/{{",
            "https://tö.io",
            "https://t.io\r\nX: y",
            &format!("https://{}", "x".repeat(MAX_BASE_LEN)),
        ] {
            assert!(matches!(validate_base(bad), Err(Error::Mime(_))), "{bad:?}");
        }
        assert!(Tracking::default().validate().is_ok());
        for (opens, clicks) in [(true, false), (false, true), (true, true)] {
            let t = Tracking {
                opens,
                clicks,
                base: "",
            };
            assert!(t.validate().unwrap_err().to_string().contains("required"));
            assert!(tracking(opens, clicks).validate().is_ok());
        }
        let off_ignored = Tracking {
            base: "nope",
            ..Tracking::default()
        };
        assert!(off_ignored.validate().is_ok());
    }
}
