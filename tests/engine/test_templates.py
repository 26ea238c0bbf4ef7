"""mailcore._engine.Template vs a small pure-Python reference of the merge-tag grammar."""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass

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
