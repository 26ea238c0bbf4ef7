"""mailcore._engine.Template vs a small pure-Python reference of the merge-tag grammar."""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcore import _engine as eng

# ---------------------------------------------------------------- reference implementation

KNOWN = {"email", "firstName", "lastName"}
KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}", re.ASCII)
UNTERMINATED = "unterminated tag: '{{' without a matching '}}'"
WS = " \t"


@dataclass
class RefError(Exception):
    message: str
    field: str | None
    offset: int


@dataclass(frozen=True)
class Field:
    path: str
    default: str | None


def valid_path(path: str) -> bool:
    if path in KNOWN:
        return True
    key = path.removeprefix("customFields.")
    return key != path and KEY_RE.fullmatch(key) is not None


def ref_tag(src: str, start: int) -> tuple[Field, int]:
    """Parse the tag whose ``{{`` is at ``start``; return it and the index after ``}}``."""
    n = len(src)

    def fail(msg: str, field: str | None = None) -> RefError:
        return RefError(f"{msg} at offset {start}", field, start)

    def ws(i: int) -> int:
        while i < n and src[i] in WS:
            i += 1
        return i

    def at_close(i: int) -> bool:
        return src.startswith("}}", i)

    if "}}" not in src[start + 2 :]:
        raise fail(UNTERMINATED)
    i = p = ws(start + 2)
    while i < n and src[i] not in WS + "|" and not at_close(i):
        i += 1
    path = src[p:i]
    if not path:
        raise fail("empty tag '{{ }}'" if at_close(i) else "missing field path before '|'")
    if not valid_path(path):
        raise fail(f"unknown field '{path}'", path)
    i = ws(i)
    if at_close(i):
        return Field(path, None), i + 2
    if i >= n:
        raise fail(UNTERMINATED)
    if src[i] != "|":
        raise fail(f"unexpected character '{src[i]}' in tag")
    i = p = ws(i + 1)
    while i < n and src[i] not in WS + ':"|}':
        i += 1
    name = src[p:i]
    if not name:
        raise fail(UNTERMINATED if i >= n else "missing filter name after '|'")
    if name != "default":
        raise fail(f"unknown filter '{name}'")
    i = ws(i)
    if i >= n:
        raise fail(UNTERMINATED)
    if src[i] != ":":
        raise fail("expected ':' after 'default'")
    i = ws(i + 1)
    if i >= n:
        raise fail(UNTERMINATED)
    if src[i] != '"':
        raise fail("expected a double-quoted string after 'default:'")
    i += 1
    chars: list[str] = []
    while True:
        if i >= n:
            raise fail("unterminated string literal")
        c = src[i]
        if c == '"':
            i += 1
            break
        if c == "\\":
            if i + 1 >= n:
                raise fail("unterminated string literal")
            esc = src[i + 1]
            if esc not in '"\\':
                raise fail(f"invalid escape '\\{esc}' in string literal")
            chars.append(esc)
            i += 2
            continue
        chars.append(c)
        i += 1
    i = ws(i)
    if at_close(i):
        return Field(path, "".join(chars)), i + 2
    if i >= n:
        raise fail(UNTERMINATED)
    raise fail("expected '}}' to close tag")


def ref_compile(src: str) -> list[str | Field]:
    segments: list[str | Field] = []
    pos = 0
    while (start := src.find("{{", pos)) != -1:
        segments.append(src[pos:start])
        field, pos = ref_tag(src, start)
        segments.append(field)
    segments.append(src[pos:])
    return segments


def ref_fields(segments: list[str | Field]) -> list[str]:
    return list(dict.fromkeys(s.path for s in segments if isinstance(s, Field)))


def ref_render(segments: list[str | Field], values: dict[str, str], html: bool) -> str:
    out: list[str] = []
    for seg in segments:
        if isinstance(seg, str):
            out.append(seg)
            continue
        value = values.get(seg.path) or seg.default or ""
        out.append(html_lib.escape(value, quote=True) if html else value)
    return "".join(out)


def engine_outcome(src: str, values: dict[str, str], html: bool) -> tuple[object, ...]:
    try:
        t = eng.Template(src)
    except eng.TemplateError as e:
        return ("error", str(e), e.field, e.offset)
    return ("ok", t.fields, t.render(values, html=html))


def ref_outcome(src: str, values: dict[str, str], html: bool) -> tuple[object, ...]:
    try:
        segments = ref_compile(src)
    except RefError as e:
        return ("error", e.message, e.field, e.offset)
    return ("ok", ref_fields(segments), ref_render(segments, values, html))


# ---------------------------------------------------------------- examples


def test_basic_render_and_properties() -> None:
    src = 'Hi {{ firstName | default: "friend" }} <{{email}}>, {{ customFields.plan }}!'
    t = eng.Template(src)
    assert t.source == src
    assert t.fields == ["firstName", "email", "customFields.plan"]
    values = {"email": "a@b.c", "customFields.plan": "Pro & <Co>"}
    assert t.render(values, html=False) == "Hi friend <a@b.c>, Pro & <Co>!"
    assert t.render(values, html=True) == "Hi friend <a@b.c>, Pro &amp; &lt;Co&gt;!"
    assert t.render({"firstName": "", "email": "x"}, html=False) == "Hi friend <x>, !"
    assert t.render({"firstName": "Zoë"}, html=False) == "Hi Zoë <>, !"


def test_html_escapes_all_five_chars_in_values_and_defaults_only() -> None:
    t = eng.Template('<p class="x">{{ email }}|{{ lastName | default: "\'\\"&" }}</p>')
    assert t.render({"email": "&<>\"'"}, html=True) == (
        '<p class="x">&amp;&lt;&gt;&quot;&#x27;|&#x27;&quot;&amp;</p>'
    )
    assert t.render({"email": "&<>\"'"}, html=False) == '<p class="x">&<>"\'|\'"&</p>'


def test_whitespace_and_literal_braces() -> None:
    t = eng.Template('}} { } {{\temail\t|\tdefault\t:\t"d"\t}}}')
    assert t.render({}, html=False) == "}} { } d}"


def test_fields_distinct_first_appearance() -> None:
    t = eng.Template("{{lastName}}{{email}}{{ lastName }}{{customFields.a-1}}{{email}}")
    assert t.fields == ["lastName", "email", "customFields.a-1"]


def test_render_requires_str_values() -> None:
    t = eng.Template("{{ email }}")
    with pytest.raises(TypeError):
        t.render({"email": 5}, html=False)  # type: ignore[dict-item]
    assert t.render({"unused": 5}, html=False) == ""  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("src", "field", "offset"),
    [
        ("Hello {{ foo }}", "foo", 6),
        ("héllo ✓ {{ first_name }}", "first_name", 8),
        ("{{customFields.}}", "customFields.", 0),
        ("{{ customFields.9x }}", "customFields.9x", 0),
        ("{{ customFields." + "k" * 65 + " }}", "customFields." + "k" * 65, 0),
        ("{{ email }}{{ Email }}", "Email", 11),
    ],
)
def test_unknown_field_errors_name_the_field(src: str, field: str, offset: int) -> None:
    with pytest.raises(eng.TemplateError) as info:
        eng.Template(src)
    assert info.value.field == field
    assert info.value.offset == offset
    assert str(info.value) == f"unknown field '{field}' at offset {offset}"
    assert isinstance(info.value, eng.EngineError)


@pytest.mark.parametrize(
    ("src", "message", "offset"),
    [
        ("ab{{ }}", "empty tag", 2),
        ("x {{ email", "unterminated tag", 2),
        ("ö{{", "unterminated tag", 1),
        ('{{ email | upper: "x" }}', "unknown filter 'upper'", 0),
        ('{{ email | default: "x }}', "unterminated string literal", 0),
        ('{{ email | default: "\\n" }}', "invalid escape", 0),
        ("{{ email x }}", "unexpected character 'x'", 0),
    ],
)
def test_syntax_errors(src: str, message: str, offset: int) -> None:
    with pytest.raises(eng.TemplateError) as info:
        eng.Template(src)
    assert message in str(info.value)
    assert str(info.value).endswith(f" at offset {offset}")
    assert info.value.field is None
    assert info.value.offset == offset


def test_template_error_class_defaults() -> None:
    assert eng.TemplateError.field is None
    assert eng.TemplateError.offset == 0


def test_reference_agrees_on_examples() -> None:
    src = 'a{{ email | default: "\\"}}\\\\" }}b'
    assert engine_outcome(src, {}, False) == ref_outcome(src, {}, False)
    assert engine_outcome(src, {}, False) == ("ok", ["email"], 'a"}}\\b')


# ---------------------------------------------------------------- property tests

PATHS = ["email", "firstName", "lastName", "customFields.plan", "customFields._x-9"]
ws_st = st.text(alphabet=" \t", max_size=2)
any_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]) | st.sampled_from("{}\"\\|:&<>'\r\n"),
    max_size=12,
)
literal_chunk = any_text.filter(lambda s: "{{" not in s and not s.endswith("{"))
custom_key = st.from_regex(KEY_RE, fullmatch=True)
path_st = st.sampled_from(PATHS) | custom_key.map(lambda k: f"customFields.{k}")


@st.composite
def tag_st(draw: st.DrawFn) -> str:
    w = [draw(ws_st) for _ in range(6)]
    path = draw(path_st)
    default = draw(st.none() | any_text)
    if default is None:
        return f"{{{{{w[0]}{path}{w[1]}}}}}"
    quoted = default.replace("\\", "\\\\").replace('"', '\\"')
    return f'{{{{{w[0]}{path}{w[1]}|{w[2]}default{w[3]}:{w[4]}"{quoted}"{w[5]}}}}}'


template_st = st.lists(literal_chunk | tag_st(), max_size=8).map("".join)
values_st = st.dictionaries(st.sampled_from(PATHS) | path_st, any_text, max_size=6)


@settings(max_examples=300)
@given(template_st, values_st, st.booleans())
def test_valid_templates_match_reference(src: str, values: dict[str, str], html: bool) -> None:
    expected = ref_outcome(src, values, html)
    assert expected[0] == "ok", expected
    assert engine_outcome(src, values, html) == expected


tokens = st.sampled_from(
    ["{{", "}}", "{", "}", " ", "\t", "|", ":", '"', "\\", "default", "email", "firstName",
     "customFields.", "k", "é", "\n", "defaulT", "x"]
)  # fmt: skip


@st.composite
def near_tag_st(draw: st.DrawFn) -> str:
    """Tag-shaped text where each component may be valid, missing or wrong."""

    def pick(*options: str) -> str:
        return draw(st.sampled_from(options))

    parts = [
        "{{",
        draw(ws_st),
        draw(path_st | st.sampled_from(["", "x", "|", "a b", "customFields.", "{", '"'])),
        draw(ws_st),
        pick("", "|", "|", "x", "}"),
        draw(ws_st),
        pick("", "default", "default", "upper", "défault", ":", '"'),
        draw(ws_st),
        pick("", ":", ":", "=", "}}"),
        draw(ws_st),
        pick("", '"', '"a"', '"\\"}}"', '"\\q"', '"x', "x", '"\\'),
        draw(ws_st),
        pick("}}", "}}", "}}", "}", "", " x }}"),
    ]
    return "".join(parts)


noisy_st = st.lists(tokens | any_text | near_tag_st(), max_size=8).map("".join)


@settings(max_examples=400)
@given(noisy_st, values_st, st.booleans())
def test_arbitrary_text_matches_reference(src: str, values: dict[str, str], html: bool) -> None:
    assert engine_outcome(src, values, html) == ref_outcome(src, values, html)


# ---------------------------------------------------------------- HTML contexts (reference)
#
# A mirror of engine/core/src/html.rs on top of the tokenizer rules of engine/core/src/text.rs:
# the template is scanned with every field standing for the two-character mark "{{", each
# field gets the escaping of its context, unquoted attribute values holding a field get
# quotes, and fields where no escaping is safe are errors.

BLOCKED_URL = "about:invalid#blocked"
ALLOWED_SCHEMES = {"http", "https", "mailto", "tel"}
URL_ATTRIBUTES = {
    "action", "archive", "background", "cite", "classid", "codebase", "data", "dynsrc",
    "formaction", "href", "icon", "longdesc", "lowsrc", "manifest", "poster", "profile", "src",
    "usemap", "xlink:href",
}  # fmt: skip
ASCII_WS = " \t\n\x0c\r"
MARK = "{{"


@dataclass(frozen=True)
class HtmlField:
    path: str
    default: str | None
    url_after: str | None  # None: plain HTML escaping; else the start of a URL (text after)


def is_alpha(c: str) -> bool:
    return c.isascii() and c.isalpha()


def is_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def tag_end(s: str, i: int) -> int | None:
    while i < len(s):
        if s[i] == ">":
            return i + 1
        if s[i] in "\"'":
            close = s.find(s[i], i + 1)
            if close == -1:
                return None
            i = close + 1
        else:
            i += 1
    return None


def name_end(s: str, i: int) -> int:
    while i < len(s) and (is_alnum(s[i]) or s[i] == "-"):
        i += 1
    return i


@dataclass(frozen=True)
class Tag:
    kind: str  # "open", "close", "other"
    name: tuple[int, int]
    attrs: tuple[int, int]
    end: int


def parse_tag(s: str, i: int) -> Tag | None:
    if i + 1 >= len(s):
        return None
    c = s[i + 1]
    if c == "!" and s.startswith("<!--", i):
        p = s.find("-->", i + 4)
        return Tag("other", (i, i), (i, i), len(s) if p == -1 else p + 3)
    if c in "!?":
        p = s.find(">", i)
        return Tag("other", (i, i), (i, i), len(s) if p == -1 else p + 1)
    if c == "/":
        start = i + 2
        end = name_end(s, start)
        if end == start or not is_alpha(s[start]):
            return None
        close = tag_end(s, end)
        return None if close is None else Tag("close", (start, end), (end, end), close)
    if is_alpha(c):
        end = name_end(s, i + 1)
        close = tag_end(s, end)
        return None if close is None else Tag("open", (i + 1, end), (end, close - 1), close)
    return None


def skip_element(s: str, i: int, name: str) -> int:
    while (p := s.find("</", i)) != -1:
        at, after = p + 2, p + 2 + len(name)
        word = s[at:after]
        if (
            len(s) >= after
            and word.isascii()
            and word.lower() == name.lower()
            and not (after < len(s) and (is_alnum(s[after]) or s[after] == "-"))
        ):
            end = tag_end(s, after)
            return len(s) if end is None else end
        i = at
    return len(s)


def attrs(s: str, i: int, to: int) -> list[tuple[tuple[int, int], tuple[int, int], str | None]]:
    out: list[tuple[tuple[int, int], tuple[int, int], str | None]] = []
    while True:
        while i < to and (s[i] in ASCII_WS or s[i] == "/"):
            i += 1
        if i >= to:
            return out
        start = i
        while i < to and s[i] not in ASCII_WS and s[i] not in "=/":
            i += 1
        name = (start, i)
        while i < to and s[i] in ASCII_WS:
            i += 1
        quote = None
        if i < to and s[i] == "=":
            i += 1
            while i < to and s[i] in ASCII_WS:
                i += 1
            if i < to and s[i] in "\"'":
                quote = s[i]
                close = s.find(quote, i + 1, to)
                close = to if close == -1 else close
                value = (i + 1, close)
                i = min(close + 1, to)
            else:
                start = i
                while i < to and s[i] not in ASCII_WS:
                    i += 1
                value = (start, i)
        else:
            value = (i, i)
        out.append((name, value, quote))


ENTITY_RE = re.compile(r"&(?:(amp|lt|gt|quot|nbsp);|#([0-9]{1,8});|#[xX]([0-9a-fA-F]{1,8});)")
NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "nbsp": "\xa0"}


def decode_entity(s: str, i: int) -> tuple[str, int] | None:
    """The character reference at ``s[i]`` ("&"), as engine/core/src/text.rs decodes it."""
    m = ENTITY_RE.match(s, i)
    if m is None:
        return None
    if m[1]:
        return NAMED[m[1]], m.end()
    code = int(m[2]) if m[2] is not None else int(m[3], 16)
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code), m.end()


def decode_entities(s: str) -> str:
    out, pos = [], 0
    while (amp := s.find("&", pos)) != -1:
        out.append(s[pos:amp])
        decoded = decode_entity(s, amp)
        if decoded is None:
            out.append("&")
            pos = amp + 1
        else:
            out.append(decoded[0])
            pos = decoded[1]
    out.append(s[pos:])
    return "".join(out)


def ascii_lower(s: str) -> str:
    return "".join(c.lower() if c.isascii() else c for c in s)


def url_start(value: str, after: str) -> str:
    """``value``, or BLOCKED_URL when value (non-empty) + after has a scheme that is not
    allowed."""
    if not value:
        return value
    scheme: list[str] = []
    started = False
    for c, in_after in [(c, False) for c in value] + [(c, True) for c in after]:
        if c in "\t\n\r" or (not started and c <= " "):
            continue
        started = True
        if c in "/?#":
            return value
        if c == ":" or (c == "&" and in_after):
            ok = ascii_lower("".join(scheme)) in ALLOWED_SCHEMES
            return value if ok else BLOCKED_URL
        scheme.append(c)
    return value


def comment_end(s: str, at: int) -> int:
    body = at + 4
    if s.startswith(">", body):
        return body + 1
    if s.startswith("->", body):
        return body + 2
    ends = [p + n for p, n in ((s.find("-->", body), 3), (s.find("--!>", body), 4)) if p != -1]
    return min(ends) if ends else len(s)


UNSET = object()


def ref_scan(s: str, marks: list[int]) -> tuple[list[str | None], list[int]]:
    """Contexts of the marks (None: plain HTML, else the URL's text after the field) and the
    offsets of inserted quotes; raises ValueError(mark, message) on an unsafe context."""
    ctx: list[object] = [UNSET] * len(marks)
    quotes: list[int] = []

    def index(at: int) -> int:
        return next((k for k, m in enumerate(marks) if m >= at), len(marks))

    def marks_in(a: int, b: int) -> range:
        return range(index(a), index(b))

    def fail(k: int, message: str) -> ValueError:
        return ValueError(marks[k], message)

    i = 0
    while (at := s.find("<", i)) != -1:
        for k in marks_in(i, at):
            ctx[k] = None
        nxt, after_slash = s[at + 1 : at + 2], s[at + 2 : at + 3]
        if at + 1 in marks or (nxt == "/" and at + 2 in marks):
            raise fail(index(at), "merge tag right after '<'")
        if s.startswith("<!--", at):
            end = comment_end(s, at)
            for k in marks_in(at, end):
                ctx[k] = None
            i = end
            continue
        tag = parse_tag(s, at)
        if tag is None:
            starts_tag = (nxt != "" and is_alpha(nxt)) or (
                nxt == "/" and after_slash != "" and is_alpha(after_slash)
            )
            if starts_tag and index(at) < len(marks):
                raise fail(index(at), "merge tag after a tag that never ends")
            i = at + 1
            continue
        if tag.kind == "other":
            for k in marks_in(at, tag.end):
                ctx[k] = None
        elif tag.kind == "close":
            if len(marks_in(at, tag.end)):
                raise fail(index(at), "merge tag inside an end tag")
        else:
            scan_attributes(s, marks, tag, ctx, quotes, marks_in, fail)
        i = tag.end
        if tag.kind == "open":
            name = ascii_lower(s[tag.name[0] : tag.name[1]])
            if name in ("script", "style", "title", "textarea"):
                end = skip_element(s, tag.end, name)
                for k in marks_in(tag.end, end):
                    if name in ("script", "style"):
                        raise fail(k, f"merge tag inside <{name}>")
                    ctx[k] = None
                i = end
    for k in marks_in(i, len(s) + 1):
        ctx[k] = None
    return [c if isinstance(c, str) else None for c in ctx], sorted(quotes)


def scan_attributes(
    s: str,
    marks: list[int],
    tag: Tag,
    ctx: list[object],
    quotes: list[int],
    marks_in: Callable[[int, int], range],
    fail: Callable[[int, str], ValueError],
) -> None:
    in_tag = marks_in(tag.name[0], tag.end)
    if not len(in_tag):
        return
    for (n0, n1), (v0, v1), quote in attrs(s, *tag.attrs):
        inside = marks_in(v0, v1)
        if not len(inside):
            continue
        name = ascii_lower(s[n0:n1])
        if name.startswith("on"):
            raise fail(inside[0], f"merge tag in the event-handler attribute '{name}'")
        if quote is None:
            if any(q in s[v0:v1] for q in "\"'`"):
                raise fail(inside[0], "merge tag in an unquoted attribute value with a quote")
            quotes += [v0, v1]
        scheme_open = name in URL_ATTRIBUTES
        blank, lit = True, v0
        for k in inside:
            before = decode_entities(s[lit : marks[k]])
            if scheme_open and any(c in before for c in ":/?#"):
                scheme_open = False
            blank = blank and all(c <= " " for c in before)
            if not scheme_open:
                ctx[k] = None
            elif blank:
                nxt = min(marks[k + 1] if k + 1 < len(marks) else v1, v1)
                ctx[k] = decode_entities(s[marks[k] + len(MARK) : nxt])
                blank = False
            else:
                raise fail(k, f"merge tag that could change the scheme of the URL in '{name}'")
            lit = marks[k] + len(MARK)
    for k in in_tag:
        if ctx[k] is UNSET:
            raise fail(k, "merge tag inside an HTML tag but not in an attribute value")


def ref_compile_html(src: str) -> list[str | HtmlField]:
    segments = ref_compile(src)
    scanned, marks, opens = "", [], []
    at = 0
    for seg in segments:
        if isinstance(seg, str):
            scanned += seg
            at += len(seg)
        else:
            marks.append(len(scanned))
            scanned += MARK
            opens.append(at)
            at = ref_tag(src, at)[1]
    try:
        contexts, quotes = ref_scan(scanned, marks)
    except ValueError as e:
        mark, message = e.args
        k = marks.index(mark)
        field = [s for s in segments if isinstance(s, Field)][k]
        message = message.replace("merge tag", f"merge tag '{field.path}'", 1)
        raise RefError(f"{message} at offset {opens[k]}", field.path, opens[k]) from None
    out: list[str | HtmlField] = []
    pos, k = 0, 0
    for seg in segments:
        if isinstance(seg, str):
            end, done = pos + len(seg), 0
            while quotes and quotes[0] <= end:
                q = quotes.pop(0)
                out += [seg[done : q - pos], '"']
                done = q - pos
            out.append(seg[done:])
            pos = end
        else:
            out.append(HtmlField(seg.path, seg.default, contexts[k]))
            k += 1
            pos += len(MARK)
    return out + ['"'] * len(quotes)


def ref_render_html(segments: list[str | HtmlField], values: dict[str, str]) -> str:
    out: list[str] = []
    for seg in segments:
        if isinstance(seg, str):
            out.append(seg)
            continue
        value = values.get(seg.path) or seg.default or ""
        if seg.url_after is not None:
            value = url_start(value, seg.url_after)
        out.append(html_lib.escape(value, quote=True))
    return "".join(out)


def engine_html_outcome(src: str, values: dict[str, str]) -> tuple[object, ...]:
    try:
        t = eng.Template(src, html=True)
    except eng.TemplateError as e:
        return ("error", str(e), e.field, e.offset)
    return ("ok", t.fields, t.render(values, html=True))


def ref_html_outcome(src: str, values: dict[str, str]) -> tuple[object, ...]:
    try:
        segments = ref_compile_html(src)
    except RefError as e:
        return ("error", e.message, e.field, e.offset)
    fields = list(dict.fromkeys(s.path for s in segments if isinstance(s, HtmlField)))
    return ("ok", fields, ref_render_html(segments, values))


# ---------------------------------------------------------------- HTML contexts: tests


def test_html_contexts_examples() -> None:
    evil = "\"'><script>alert(1)</script>"
    esc = html_lib.escape(evil, quote=True)
    t = eng.Template(
        '<p title="{{ email }}" class=x{{ firstName }}>{{ email }}</p>'
        '<a href="{{ lastName }}">a</a><a href="https://x.io/?q={{ lastName }}">b</a>',
        html=True,
    )
    out = t.render(
        {"email": evil, "firstName": " onclick=alert(1)", "lastName": "javascript:alert(1)"},
        html=True,
    )
    assert out == (
        f'<p title="{esc}" class="x onclick=alert(1)">{esc}</p>'
        f'<a href="{BLOCKED_URL}">a</a><a href="https://x.io/?q=javascript:alert(1)">b</a>'
    )
    # compiled without html=True: no contexts, every value escaped the same way
    plain = eng.Template('<a href="{{ lastName }}">', html=False)
    assert plain.render({"lastName": "javascript:x"}, html=True) == '<a href="javascript:x">'


@pytest.mark.parametrize(
    ("src", "message", "field", "offset"),
    [
        ("<a {{ email }}>", "merge tag inside an HTML tag but not in an attribute value",
         "email", 3),
        ("<{{ email }}>", "merge tag right after '<'", "email", 1),
        ("<script>x = '{{ email }}'</script>", "merge tag inside <script>", "email", 13),
        ("<p style=x><style>{{ email }}</style>", "merge tag inside <style>", "email", 18),
        ('<b onclick="f({{ email }})">', "merge tag in the event-handler attribute 'onclick'",
         "email", 14),
        ('<a href="java{{ email }}">', "merge tag that could change the scheme of the URL in "
         "'href'", "email", 13),
        ("<p title='x {{ email }}", "merge tag after a tag that never ends", "email", 12),
    ],
)  # fmt: skip
def test_unsafe_html_contexts_are_errors(src: str, message: str, field: str, offset: int) -> None:
    with pytest.raises(eng.TemplateError) as info:
        eng.Template(src, html=True)
    named = message.replace("merge tag", f"merge tag '{field}'", 1)
    assert str(info.value) == f"{named} at offset {offset}"
    assert (info.value.field, info.value.offset) == (field, offset)
    assert engine_html_outcome(src, {}) == ref_html_outcome(src, {})
    eng.Template(src)  # fine as plain text


html_tokens = st.sampled_from(
    ["<", ">", "</", "<p>", "</p>", "<a ", "<A ", "<img ", "<td ", "<b", "href=", "HREF=", "src=",
     "title=", "class=", "onclick=", "data-x=", "style=", '"', "'", "`", "=", " ", "\n", "/",
     ":", "?", "#", "&", "&#58;", "&colon;", "&amp;", "java", "script", "https", "mailto:",
     "http://x.io/", "<!--", "-->", "--!>", "<!-->", "<!DOCTYPE html>", "<script>", "</script>",
     "<style>", "</style>", "<title>", "</title>", "<textarea>", "</textarea>", "é", "{", "}",
     "<body>", "x", "{{ email }}", "{{ firstName }}", '{{ lastName | default: "d" }}',
     "{{ customFields.url }}"]
)  # fmt: skip
value_parts = st.sampled_from(
    ["{{ email }}", "{{ customFields.url }}", "java", "script", ":", "/", "?", "#", "&#58;",
     "&colon;", "&", " ", "\t", "https", "x", "&amp;", "'", '"', "`", "=", ">"]
)  # fmt: skip


@st.composite
def html_element(draw: st.DrawFn) -> str:
    """A start tag whose attribute values mix fields, scheme pieces and quotes."""
    tag = draw(st.sampled_from(["a", "A", "img", "td", "form", "p", "b"]))
    attributes = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(
            st.sampled_from(
                ["href", "HREF", "src", "title", "class", "onclick", "OnLoad", "action", "data-x",
                 "xlink:href", "style"]
            )
        )  # fmt: skip
        quote = draw(st.sampled_from(['"', "'", ""]))
        value = "".join(draw(st.lists(value_parts, max_size=4)))
        gap = draw(st.sampled_from(["", " ", "\n"]))
        attributes.append(f"{name}{gap}={gap}{quote}{value}{quote}")
    seps = [draw(st.sampled_from([" ", "  ", "\t", "/"])) for _ in attributes]
    end = draw(st.sampled_from([">", "/>", ">", ""]))
    return f"<{tag}" + "".join(s + a for s, a in zip(seps, attributes, strict=True)) + end


html_template_st = st.lists(
    st.one_of(html_element(), html_element(), html_tokens, any_text), max_size=10
).map("".join)
hostile = st.sampled_from(
    ["", "x", "javascript:alert(1)", " JaVa\tScript:x", "data:text/html,x", "https://ok.io/",
     "mailto:a@b.io", "tel:+1", "#frag", "/path:x", "a b", '"><b>', "' onmouseover='x", "`",
     "&amp;", "--><b>", "</title><b>", "\x00:x", "vbscript:x", "é:x"]
)  # fmt: skip
html_values_st = st.dictionaries(
    st.sampled_from(["email", "firstName", "lastName", "customFields.url"]),
    hostile | any_text,
    max_size=4,
)


@settings(max_examples=600)
@given(html_template_st, html_values_st)
def test_html_templates_match_reference(src: str, values: dict[str, str]) -> None:
    assert engine_html_outcome(src, values) == ref_html_outcome(src, values)


class Structure(HTMLParser):
    """What a browser-like parser sees: tags, attribute names and URL attribute values."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[tuple[str, ...]] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.events.append(("start", tag, *(name for name, _ in attrs)))
        self.urls += [v or "" for name, v in attrs if name in URL_ATTRIBUTES]

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        self.events.append(("end", tag))

    def handle_comment(self, data: str) -> None:
        self.events.append(("comment",))


def structure(page: str) -> Structure:
    parser = Structure()
    parser.feed(page)
    parser.close()
    return parser


def url_scheme(url: str) -> str | None:
    """The scheme a browser gives ``url`` (None: relative)."""
    url = re.sub("[\t\n\r]", "", url).lstrip("".join(map(chr, range(0x21))))
    m = re.match(r"([^:/?#]*):", url)
    return None if m is None else m[1].lower()


# Fields in every context a template may put them in; each renders to the same structure
# with any value, and no URL gets a scheme outside the allow-list.
CONTEXT_PAGE = (
    "<html><head><title>{{ email }}</title></head><body>"
    "<p title=\"{{ email }}\" data-x='{{ firstName }}' class={{ lastName }}>{{ email }}</p>"
    "<!-- {{ firstName }} --><textarea>{{ lastName }}</textarea>"
    '<a href="{{ customFields.url }}">1</a><a href={{ customFields.url }}>2</a>'
    "<img src='{{ customFields.url }}' alt={{ email }}>"
    '<a href="https://x.io/p?q={{ email }}#{{ lastName }}">3</a>'
    '<a href="mailto:{{ email }}">4</a><form action="/s/{{ firstName }}"></form>'
    "</body></html>"
)


@settings(max_examples=300)
@given(
    st.fixed_dictionaries(
        {},
        optional=dict.fromkeys(
            ["email", "firstName", "lastName", "customFields.url"], hostile | any_text
        ),
    )
)
def test_values_cannot_break_out_of_their_context(values: dict[str, str]) -> None:
    t = eng.Template(CONTEXT_PAGE, html=True)
    benign = structure(t.render(dict.fromkeys(t.fields, "x"), html=True))
    seen = structure(t.render(values, html=True))
    assert seen.events == benign.events
    for url in seen.urls:
        scheme = url_scheme(url)
        assert scheme in (None, "http", "https", "mailto", "tel") or url.startswith(BLOCKED_URL), (
            url
        )
    assert engine_html_outcome(CONTEXT_PAGE, values) == ref_html_outcome(CONTEXT_PAGE, values)
