"""mailcore._engine.MessageRenderer: every rendered message parses with ``email`` and is safe."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcore import _engine as eng

from .test_templates import (
    BLOCKED_URL,
    ref_compile,
    ref_compile_html,
    ref_render,
    ref_render_html,
    structure,
    url_scheme,
    url_start,
)

DATE = "Tue, 07 Jan 2025 10:00:00 +0000"
UNSUB = "https://acme.com/u/tok_123?c=cmp_x"
PRE_OPEN = '<div style="display:none;max-height:0;overflow:hidden;mso-hide:all" aria-hidden="true">'

SUBJECT = '{{ firstName | default: "Hi" }} {{ lastName }}: {{ customFields.plan }} ✓ deal'
PREHEADER = "Preview {{ customFields.plan }}"
HTML = (
    '<html><head><style>p {color: red}</style></head>\n<body class="m">\n'
    '<h1>Hello {{ firstName | default: "there" }}</h1>\n'
    "<p>Plan: {{ customFields.plan }} &amp; more</p>\n"
    "<ul><li>{{ lastName }}</li><li>Item</li></ul>\n"
    '<p><a href="https://acme.com/p?x={{ customFields.plan }}">Open {{ customFields.plan }}</a>'
    '</p>\n<p><a href="https://acme.com/same">https://acme.com/same</a></p>\n</body></html>'
)
TEXT = "Hello {{ firstName }}\n.{{ customFields.plan }}\r\nFrom {{ lastName }}\n"
EXTRA = [("X-Mailcore-Campaign", "cmp_x")]
KNOWN_HEADERS = [
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
    "Content-Type",
]

# ---------------------------------------------------------------- references

CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
HTML_WS = re.compile("[ \t\r\n\x0c\xa0]+")


def sanitize(s: str) -> str:
    """Header value as the engine writes it: controls become spaces."""
    return CONTROLS.sub(" ", s)


def norm_ws(s: str) -> str:
    return " ".join(s.split())


def norm_breaks(s: str) -> str:
    return s.replace("\r\n", "\n").replace("\r", "\n")


def render(src: str, values: Mapping[str, str], html: bool) -> str:
    """A template as the renderer renders it: HTML parts are HTML templates (contexts)."""
    if html:
        return ref_render_html(ref_compile_html(src), dict(values))
    return ref_render(ref_compile(src), dict(values), False)


def display_name(values: Mapping[str, str]) -> str:
    parts = [sanitize(values.get(k, "")).strip(" \t") for k in ("firstName", "lastName")]
    return " ".join(p for p in parts if p)


def assert_name_round_trips(parsed: str, expected: str) -> None:
    """Python's phrase parser (3.11) keeps the folding space between adjacent encoded words,
    against RFC 2047 §6.2. The engine splits encoded words before whitespace, so this only
    shows when a run without space/tab is longer than one encoded word (> 40 bytes): then
    compare ignoring whitespace."""
    if all(len(w.encode()) <= 40 for w in re.split("[ \t]+", expected)):
        assert norm_ws(parsed) == norm_ws(expected)
    else:
        assert "".join(parsed.split()) == "".join(expected.split())


def html_line(s: str) -> str:
    """One line of derived text: HTML whitespace collapsed, trimmed."""
    return HTML_WS.sub(" ", s).strip(" ")


def expected_text(values: Mapping[str, str]) -> str:
    """The plain text the engine derives from HTML (rules of engine/core/src/text.rs)."""
    first = values.get("firstName") or "there"
    last = values.get("lastName", "")
    plan = values.get("customFields.plan", "")
    link_text = html_line(f"Open {plan}")
    href = html_line(f"https://acme.com/p?x={plan}")
    link = f"{link_text} ({href})" if link_text != href else href
    lines = [
        html_line(f"Hello {first}"),
        "",
        html_line(f"Plan: {plan} & more"),
        "",
        html_line(f"- {last}"),
        "- Item",
        "",
        link,
        "",
        "https://acme.com/same",
    ]
    return "\n".join(lines)


def renderer(**overrides: Any) -> eng.MessageRenderer:
    kwargs: dict[str, Any] = {
        "subject": SUBJECT,
        "preheader": PREHEADER,
        "html": HTML,
        "text": None,
        "from_email": "sarah@acme.com",
        "from_name": "Sarah at Acme",
        "reply_to": "help@acme.com",
        "headers": EXTRA,
    }
    kwargs.update(overrides)
    return eng.MessageRenderer(**kwargs)


def render_one(r: eng.MessageRenderer, values: Mapping[str, str], mid: str = "m1@x") -> bytes:
    return r.render(values, message_id=mid, unsubscribe_url=UNSUB, date=DATE)


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def parts(msg: EmailMessage) -> tuple[str, str]:
    assert msg.get_content_type() == "multipart/alternative"
    plain, html = list(msg.iter_parts())
    assert plain.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    return norm_breaks(plain.get_content()), norm_breaks(html.get_content())


def check_raw(raw: bytes, *, reply_to: bool = True) -> list[str]:
    """Structural checks on the raw bytes; returns the header names in order."""
    assert raw.endswith(b"\r\n")
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", raw) is None, "bare CR or LF"
    lines = raw[:-2].split(b"\r\n")
    end = lines.index(b"")
    names: list[str] = []
    for line in lines[:end]:
        assert len(line) <= 78, line
        if line[:1] in (b" ", b"\t"):
            assert names, "continuation before the first header"
            assert line.strip(), "whitespace-only continuation line"
            continue
        name = line.split(b":", 1)[0].decode()
        assert name in KNOWN_HEADERS, line
        names.append(name)
    expected = [n for n in KNOWN_HEADERS if reply_to or n != "Reply-To"]
    assert names == expected
    for line in lines[end + 1 :]:
        assert len(line) <= 76, line
    for line in lines:
        assert len(line) <= 998
        assert not line.startswith(b"."), line
        assert not line.startswith(b"From "), line
    return names


def check_message(
    values: Mapping[str, str],
    raw: bytes,
    *,
    text_src: str | None = None,
    from_name: str = "Sarah at Acme",
) -> EmailMessage:
    check_raw(raw)
    msg = parse(raw)
    subject = render(SUBJECT, values, False)
    assert norm_ws(msg["Subject"]) == norm_ws(sanitize(subject))
    (frm,) = msg["From"].addresses
    assert frm.addr_spec == "sarah@acme.com"
    assert_name_round_trips(frm.display_name, sanitize(from_name))
    (to,) = msg["To"].addresses
    assert to.addr_spec == values["email"]
    assert_name_round_trips(to.display_name, display_name(values))
    assert msg["Reply-To"].addresses[0].addr_spec == "help@acme.com"
    assert msg["Date"] == DATE
    assert msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith(">")
    assert msg["List-Unsubscribe"] == f"<{UNSUB}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["X-Mailcore-Campaign"] == "cmp_x"
    assert msg.get_boundary().startswith("=_mc_")  # type: ignore[union-attr]
    plain, html = parts(msg)
    rendered = norm_breaks(render(HTML, values, True))
    preheader = norm_breaks(render(PREHEADER, values, True))
    assert html == rendered.replace(
        '<body class="m">', f'<body class="m">{PRE_OPEN}{preheader}</div>'
    )
    if text_src is None:
        assert plain == expected_text(values)
    else:
        assert plain == norm_breaks(render(text_src, values, False))
    return msg


# ---------------------------------------------------------------- examples


def test_basic_message() -> None:
    r = renderer()
    values = {
        "email": "ann@x.io",
        "firstName": "Ann",
        "lastName": "Lee",
        "customFields.plan": "Pro & <Co>",
    }
    raw = render_one(r, values, "cmp_x.con_y@mail.example")
    msg = check_message(values, raw)
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith('From: "Sarah at Acme" <sarah@acme.com>\r\nTo: "Ann Lee" <ann@x.io>\r\n')
    assert "\r\nReply-To: <help@acme.com>\r\n" in head
    assert "\r\nMessage-ID: <cmp_x.con_y@mail.example>\r\n" in head
    assert msg["Subject"] == "Ann Lee: Pro & <Co> ✓ deal"
    plain, html = parts(msg)
    assert "Preview Pro &amp; &lt;Co&gt;</div><h1>" not in html  # newline after <body> kept
    assert f'<body class="m">{PRE_OPEN}Preview Pro &amp; &lt;Co&gt;</div>\n<h1>' in html
    assert plain == (
        "Hello Ann\n\nPlan: Pro & <Co> & more\n\n- Lee\n- Item\n\n"
        "Open Pro & <Co> (https://acme.com/p?x=Pro & <Co>)\n\nhttps://acme.com/same"
    )


def test_minimal_message_without_optional_headers() -> None:
    r = renderer(
        subject="Plain {{ firstName }}",
        from_name=None,
        reply_to=None,
        headers=(),
        preheader="",
        html="<p>x</p>",
    )
    raw = render_one(r, {"email": "b@x.io"})
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("From: sarah@acme.com\r\nTo: b@x.io\r\nSubject: Plain\r\nDate: ")
    assert "Reply-To" not in head and "X-Mailcore" not in head
    msg = parse(raw)
    plain, html = parts(msg)
    assert (plain, html) == ("x", "<p>x</p>")


def test_given_text_template_and_dot_from_lines() -> None:
    r = renderer(text=TEXT)
    values = {"email": "a@x.io", "firstName": "A", "customFields.plan": "plan", "lastName": "L"}
    raw = render_one(r, values)
    check_message(values, raw, text_src=TEXT)
    assert b"\r\n=2Eplan\r\n=46rom L\r\n" in raw


def test_non_ascii_names_and_smtputf8_address() -> None:
    r = renderer(from_name="Zoë «Acme»", subject="Grüße {{ firstName }}")
    values = {"email": "zoë@exämple.com", "firstName": "Jürgen", "lastName": "Ü"}
    raw = render_one(r, values)
    assert b"To: =?utf-8?b?" in raw
    assert "<zoë@exämple.com>".encode() in raw  # raw UTF-8 (RFC 6532)
    msg = email.message_from_string(raw.decode(), policy=email.policy.default)
    assert msg["Subject"] == "Grüße Jürgen"
    assert msg["From"].addresses[0].display_name == "Zoë «Acme»"
    (to,) = msg["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Jürgen Ü", "zoë@exämple.com")


def test_header_injection_is_neutralised() -> None:
    evil = "x\r\nBcc: victim@evil.io\r\n\r\nInjected body\n.\nFrom evil"
    r = renderer(from_name="Evil\nBcc: a@b.c")
    values = {"email": "a@x.io", "firstName": evil, "lastName": evil, "customFields.plan": evil}
    raw = render_one(r, values)
    names = check_raw(raw)
    assert "Bcc" not in names
    msg = parse(raw)
    assert msg["Bcc"] is None
    assert msg["From"].addresses[0].display_name == "Evil Bcc: a@b.c"
    check_message(values, raw, from_name="Evil\nBcc: a@b.c")


@pytest.mark.parametrize(
    "email_addr",
    ["", "plain", "a b@x.io", "a@x.io\r\nBcc: y@z", "<a@x.io>", "a@b@c", "a@x.io>"],
)
def test_invalid_recipient_email(email_addr: str) -> None:
    with pytest.raises(eng.EngineError):
        render_one(renderer(), {"email": email_addr})


def test_missing_email() -> None:
    with pytest.raises(eng.EngineError, match="no email"):
        render_one(renderer(), {"firstName": "x"})


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"from_email": "not an address"}, eng.EngineError),
        ({"from_email": "a@b\r\nBcc: c@d"}, eng.EngineError),
        ({"reply_to": "<x@y>"}, eng.EngineError),
        ({"headers": [("X-Bad Name", "v")]}, eng.EngineError),
        ({"headers": [("X-A:", "v")]}, eng.EngineError),
        ({"headers": [("X-A", "v\r\nBcc: x@y")]}, eng.EngineError),
        ({"headers": [("X-A", "v\nw")]}, eng.EngineError),
        ({"headers": [("Subject", "dup")]}, eng.EngineError),
    ],
)
def test_invalid_constructor_inputs(kwargs: dict[str, Any], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        renderer(**kwargs)


@pytest.mark.parametrize(
    ("part", "src", "offset"),
    [("subject", "Hi {{ nope }}", 3), ("preheader", "{{ x }}", 0), ("html", "<p>{{ y }}", 3)],
)
def test_template_errors_are_prefixed(part: str, src: str, offset: int) -> None:
    with pytest.raises(eng.TemplateError) as info:
        renderer(**{part: src})
    field = src.split("{{ ")[1].split(" }}")[0]
    assert str(info.value) == f"{part}: unknown field '{field}' at offset {offset}"
    assert info.value.field == field
    assert info.value.offset == offset
    with pytest.raises(eng.TemplateError, match=r"^text: unterminated tag"):
        renderer(text="{{ email")


@pytest.mark.parametrize(
    ("message_id", "url", "date"),
    [
        ("a b@x", UNSUB, DATE),
        ("<a@x>", UNSUB, DATE),
        ("", UNSUB, DATE),
        ("a@x\r\nBcc: y", UNSUB, DATE),
        ("a@x", "ftp://x", DATE),
        ("a@x", "https://x y", DATE),
        ("a@x", "https://x>\r\nBcc: y", DATE),
        ("a@x", UNSUB, "Tue\r\nBcc: y"),
        ("a@x", UNSUB, ""),
    ],
)
def test_invalid_render_arguments(message_id: str, url: str, date: str) -> None:
    r = renderer()
    with pytest.raises(eng.EngineError):
        r.render({"email": "a@x.io"}, message_id=message_id, unsubscribe_url=url, date=date)
    with pytest.raises(eng.EngineError):
        r.render_batch(
            [{"email": "a@x.io"}], message_ids=[message_id], unsubscribe_urls=[url], date=date
        )


def test_values_types_and_mappings() -> None:
    r = renderer()
    with pytest.raises(TypeError):
        render_one(r, {"email": "a@x.io", "firstName": 5})  # type: ignore[dict-item]

    class Lookup(Mapping[str, str]):
        def __init__(self, d: dict[str, str]) -> None:
            self.d = d

        def __getitem__(self, k: str) -> str:
            return self.d[k]

        def __iter__(self) -> Any:
            return iter(self.d)

        def __len__(self) -> int:
            return len(self.d)

    values = {"email": "a@x.io", "firstName": "F"}
    assert render_one(r, Lookup(values)) == render_one(r, values)


def test_boundaries_are_per_message_and_deterministic() -> None:
    r = renderer()
    a1, a2, b = (render_one(r, {"email": "a@x.io"}, mid) for mid in ("a@x", "a@x", "b@x"))
    assert a1 == a2
    ba, bb = parse(a1).get_boundary(), parse(b).get_boundary()
    assert ba and bb and ba != bb and ba.startswith("=_mc_") and len(ba) == 37


def test_batch_matches_single_and_is_threaded() -> None:
    r = renderer()
    n = 600  # above the parallel threshold (256)
    values = [
        {"email": f"u{i}@x.io", "firstName": f"N{i}", "customFields.plan": "é" * (i % 7)}
        for i in range(n)
    ]
    ids = [f"cmp_x.con_{i}@mail.example" for i in range(n)]
    urls = [f"{UNSUB}&r={i}" for i in range(n)]
    batch = r.render_batch(values, message_ids=ids, unsubscribe_urls=urls, date=DATE)
    assert len(batch) == n
    for i in range(0, n, 37):
        assert batch[i] == r.render(
            values[i], message_id=ids[i], unsubscribe_url=urls[i], date=DATE
        )
    head = r.render_batch(values[:5], message_ids=ids[:5], unsubscribe_urls=urls[:5], date=DATE)
    assert head == batch[:5]  # below the threshold: single-threaded, same bytes
    assert r.render_batch([], message_ids=[], unsubscribe_urls=[], date=DATE) == []


def test_batch_errors() -> None:
    r = renderer()
    with pytest.raises(eng.EngineError, match="length mismatch"):
        r.render_batch([{"email": "a@x.io"}], message_ids=[], unsubscribe_urls=[UNSUB], date=DATE)
    with pytest.raises(eng.EngineError, match="length mismatch"):
        r.render_batch([], message_ids=["a"], unsubscribe_urls=[], date=DATE)
    values = [{"email": f"u{i}@x.io"} for i in range(300)]
    values[290] = {"email": "broken"}
    with pytest.raises(eng.EngineError, match="broken"):
        r.render_batch(values, message_ids=["m@x"] * 300, unsubscribe_urls=[UNSUB] * 300, date=DATE)


# ---------------------------------------------------------------- property tests

specials = st.sampled_from(
    ["\r", "\n", "\r\n", "\x00", "\x0b", "\x1b", "\x7f", "\x85", "\u2028", "\xa0", ".", "..",
     "From ", "\nFrom ", "\n.", "=", "=?utf-8?b?QQ==?=", " ", "  ", "\t", "<", ">", "&", "&amp;",
     '"', "\\", "é", "😀", "Bcc: x@y", ":", ";", ",", "(", ")"]
)  # fmt: skip
chunk = st.text(st.characters(exclude_categories=["Cs"]), max_size=12) | specials
short_value = st.lists(chunk, max_size=6).map("".join)
long_value = st.tuples(short_value, st.integers(1, 300)).map(lambda t: t[0] * t[1])
value_st = short_value | long_value
local = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,20}", fullmatch=True)
email_st = st.builds("{}@{}.example".format, local, st.from_regex(r"[a-z]{1,12}", fullmatch=True))
values_st = st.fixed_dictionaries(
    {"email": email_st},
    optional={"firstName": value_st, "lastName": value_st, "customFields.plan": value_st},
)


@settings(max_examples=250, deadline=None)
@given(values_st, st.booleans())
def test_arbitrary_values_render_safe_parseable_messages(
    values: dict[str, str], given_text: bool
) -> None:
    text_src = TEXT if given_text else None
    r = renderer(text=text_src)
    raw = render_one(r, values)
    check_message(values, raw, text_src=text_src)


@settings(max_examples=40, deadline=None)
@given(st.lists(values_st, max_size=6))
def test_batch_equals_individual_renders(batch_values: list[dict[str, str]]) -> None:
    r = renderer()
    ids = [f"m{i}@x" for i in range(len(batch_values))]
    urls = [UNSUB] * len(batch_values)
    batch = r.render_batch(batch_values, message_ids=ids, unsubscribe_urls=urls, date=DATE)
    assert batch == [render_one(r, v, mid) for v, mid in zip(batch_values, ids, strict=True)]


@settings(max_examples=150, deadline=None)
@given(value_st, value_st)
def test_arbitrary_from_name_and_extra_header(from_name: str, header_value: str) -> None:
    header_value = header_value.replace("\r", "").replace("\n", "")
    r = renderer(from_name=from_name, headers=[("X-Mailcore-Campaign", header_value)])
    raw = render_one(r, {"email": "a@x.io"})
    check_raw(raw)
    msg = parse(raw)
    (frm,) = msg["From"].addresses
    assert frm.addr_spec == "sarah@acme.com"
    assert_name_round_trips(frm.display_name, sanitize(from_name))
    assert norm_ws(msg["X-Mailcore-Campaign"]) == norm_ws(sanitize(header_value))


URL_HTML = (
    '<html><body><p>Hi {{ firstName }}</p><a href="{{ customFields.url }}">Your page</a>'
    "<img src={{ customFields.url }}><p>{{ customFields.url }}</p></body></html>"
)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(
        ["javascript:alert(1)", " JAVA\tscript:x", "data:text/html,<b>", "https://ok.example/p",
         "page.html", "mailto:a@b.io"]
    )
    | value_st
)  # fmt: skip
def test_url_fields_cannot_set_a_dangerous_scheme(url: str) -> None:
    r = renderer(html=URL_HTML, preheader="")
    values = {"email": "a@x.io", "firstName": "Ann", "customFields.url": url}
    raw = render_one(r, values)
    check_raw(raw)
    plain, page = parts(parse(raw))
    assert page == norm_breaks(render(URL_HTML, values, True))
    seen = structure(page)
    benign = structure(render(URL_HTML, {**values, "customFields.url": "x"}, True))
    assert seen.events == benign.events
    for href in seen.urls:
        assert url_scheme(href) in (None, "http", "https", "mailto", "tel") or href == BLOCKED_URL
    # the text part shows the URL the HTML links to
    href = html_line(url_start(url, "")) if url else ""
    if href and href != "Your page":
        assert f"Your page ({href})" in plain


def test_soft_break_before_literal_text_after_a_value() -> None:
    long_literal = "Literal text long enough to be encoded once when the campaign compiles. "
    r = renderer(html=f"<p>{{{{ firstName }}}}{long_literal}</p>", preheader="")
    raw = render_one(r, {"email": "a@x.io", "firstName": "Ann"})
    body = raw.split(b"text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
                     b"\r\n\r\n", 1)[1]  # fmt: skip
    assert body.startswith(b"<p>Ann=\r\nLiteral text long enough")
    assert parts(parse(raw))[1] == f"<p>Ann{long_literal}</p>"
