"""mailcore._engine.MessageRenderer open and click tracking."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcore import _engine as eng

from .test_mime import DATE, UNSUB, check_message, parse, parts, renderer

BASE = "https://t.acme.test/t"
PIXEL_REST = '" width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0" />'
VALUES = {"email": "ann@x.io", "firstName": "Ann & <Co>", "customFields.plan": "Pro"}


def pixel(token: str) -> str:
    return f'<img src="{BASE}/o/{token}{PIXEL_REST}'


def tracked(token: str, link_id: int) -> str:
    return f"{BASE}/c/{token}/{link_id}"


def tracking_renderer(
    page: str, *, opens: bool = True, clicks: bool = True, **kw: Any
) -> eng.MessageRenderer:
    return renderer(
        html=page,
        preheader="",
        track_opens=opens,
        track_clicks=clicks,
        tracking_base=BASE,
        **kw,
    )


def render(r: eng.MessageRenderer, token: str | None, values: dict[str, str] = VALUES) -> bytes:
    return r.render(
        values, message_id="m1@x", unsubscribe_url=UNSUB, date=DATE, tracking_token=token
    )


class Anchors(HTMLParser):
    """The (entity-decoded) href of every <a>, in order (None without one)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.append(next((v for k, v in attrs if k == "href"), None))


def hrefs(page: str) -> list[str | None]:
    parser = Anchors()
    parser.feed(page)
    parser.close()
    return parser.hrefs


# ---------------------------------------------------------------- examples

PAGE = (
    "<html><head><title>T</title></head><body>\n"
    '<a href="https://acme.com/a?x=1&amp;y=2">A</a>\n'
    "<A class='btn' HREF='http://acme.com/b' target=_blank>B</A>\n"
    '<a title="t" href = https://acme.com/c>C</a>\n'
    '<a href="https://acme.com/{{ customFields.plan }}">merge</a>\n'
    '<a href="mailto:x@acme.com">m</a> <a href="tel:+1555">t</a> <a href="#top">h</a>\n'
    '<a href="/relative">r</a> <a href="ftp://acme.com/f">f</a>\n'
    '<a data-mc-notrack href="https://acme.com/raw">n</a>\n'
    '<a href="https://acme.com/a?x=1&#38;y=2">again</a>\n'
    f'<a href="{BASE}/u/own">own</a>\n'
    '<!-- <a href="https://acme.com/comment">c</a> -->\n'
    "</body></html>"
)


def test_links_rewritten_pixel_and_text() -> None:
    r = tracking_renderer(PAGE)
    assert r.links == ["https://acme.com/a?x=1&y=2", "http://acme.com/b", "https://acme.com/c"]
    assert r.links is not r.links  # a fresh list each time; the table cannot be changed
    with pytest.raises(AttributeError):
        r.links = []  # type: ignore[misc]
    msg = parse(render(r, "tok_A-9"))
    plain, page = parts(msg)
    _, untracked = parts(parse(render(tracking_renderer(PAGE, opens=False, clicks=False), None)))
    a, b, c = (tracked("tok_A-9", i) for i in range(3))
    assert page == (
        untracked.replace('"https://acme.com/a?x=1&amp;y=2"', f'"{a}"')
        .replace("'http://acme.com/b'", f"'{b}'")
        .replace("https://acme.com/c>", f'"{c}">')
        .replace('"https://acme.com/a?x=1&#38;y=2"', f'"{a}"')
        .replace("</body>", pixel("tok_A-9") + "</body>")
    )
    assert page.count("<img") == 1
    assert hrefs(page) == [
        a,
        b,
        c,
        "https://acme.com/Pro",
        "mailto:x@acme.com",
        "tel:+1555",
        "#top",
        "/relative",
        "ftp://acme.com/f",
        "https://acme.com/raw",
        a,
        f"{BASE}/u/own",
    ]
    assert plain.startswith(f"A ({a}) B ({b}) C ({c}) merge (https://acme.com/Pro) m (mailto:")
    assert f"n (https://acme.com/raw) again ({a}) own ({BASE}/u/own)" in plain


def test_given_text_is_left_as_is() -> None:
    text = "Visit https://acme.com/a?x=1&y=2 {{ firstName }}"
    plain, page = parts(parse(render(tracking_renderer(PAGE, text=text), "t")))
    assert plain == "Visit https://acme.com/a?x=1&y=2 Ann & <Co>"
    assert tracked("t", 0) in page


def test_tracking_off_is_byte_identical() -> None:
    values = {"email": "a@x.io", "firstName": "Zoë", "customFields.plan": "P&Q"}
    before = renderer()  # the test_mime campaign, no tracking arguments at all
    raw = before.render(values, message_id="m@x", unsubscribe_url=UNSUB, date=DATE)
    check_message(values, raw)  # matches the reference model of test_mime
    assert before.links == []
    for kwargs in (
        {"track_opens": False, "track_clicks": False, "tracking_base": ""},
        {"tracking_base": BASE},
        {"tracking_base": "not a url"},  # ignored while tracking is off
    ):
        r = renderer(**kwargs)
        assert r.links == []
        for token in (None, "ignored_token"):
            out = r.render(
                values, message_id="m@x", unsubscribe_url=UNSUB, date=DATE, tracking_token=token
            )
            assert out == raw
        batch = r.render_batch([values], message_ids=["m@x"], unsubscribe_urls=[UNSUB], date=DATE)
        assert batch == [raw]
    # the same campaign with click tracking on does have a link to rewrite
    on = renderer(track_clicks=True, tracking_base=BASE)
    assert on.links == ["https://acme.com/same"]
    assert (
        on.render(values, message_id="m@x", unsubscribe_url=UNSUB, date=DATE, tracking_token="t")
        != raw
    )


def test_opens_only_and_clicks_only() -> None:
    opens = parts(parse(render(tracking_renderer(PAGE, clicks=False), "tok")))[1]
    assert tracking_renderer(PAGE, clicks=False).links == []
    assert opens.count(pixel("tok")) == 1 and "/c/" not in opens
    clicks = parts(parse(render(tracking_renderer(PAGE, opens=False), "tok")))[1]
    assert "<img" not in clicks and clicks.count(tracked("tok", 0)) == 2


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("<p>x</p>", "<p>x</p>{pixel}"),
        ("", "{pixel}"),
        ("<body>a</body>b</BODY\n>c", "<body>a</body>b{pixel}</BODY\n>c"),
        (
            "<body><script>'</body>'</script></body >",
            "<body><script>'</body>'</script>{pixel}</body >",
        ),
    ],
)
def test_pixel_placement(page: str, expected: str) -> None:
    _, out = parts(parse(render(tracking_renderer(page, clicks=False), "P")))
    assert out == expected.format(pixel=pixel("P"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"track_opens": True},
        {"track_clicks": True},
        {"track_clicks": True, "tracking_base": ""},
        {"track_opens": True, "tracking_base": "https://t.io/"},
        {"track_opens": True, "tracking_base": "t.io"},
        {"track_opens": True, "tracking_base": "ftp://t.io"},
        {"track_opens": True, "tracking_base": "https://t.io/?q=1"},
        {"track_opens": True, "tracking_base": "https://t.io/#f"},
        {"track_opens": True, "tracking_base": 'https://t.io/"x'},
        {"track_opens": True, "tracking_base": "https://t.io/a b"},
        {"track_opens": True, "tracking_base": "https://t.io\r\nX-A: b"},
    ],
)
def test_invalid_tracking_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(eng.EngineError, match="tracking_base"):
        renderer(**kwargs)


@pytest.mark.parametrize(
    "token", ["", "a b", "a/b", "a.b", "tok=", "é", "a\r\nb", "<t>", "x" * 257]
)
def test_tokens_are_required_and_validated(token: str) -> None:
    r = tracking_renderer(PAGE, clicks=False)
    with pytest.raises(eng.EngineError, match="tracking token"):
        render(r, token)
    with pytest.raises(eng.EngineError, match="tracking token"):
        r.render_batch(
            [VALUES],
            message_ids=["m@x"],
            unsubscribe_urls=[UNSUB],
            date=DATE,
            tracking_tokens=[token],
        )
    with pytest.raises(eng.EngineError, match="tracking token is required"):
        render(r, None)
    with pytest.raises(eng.EngineError, match="tracking token is required"):
        r.render_batch([VALUES], message_ids=["m@x"], unsubscribe_urls=[UNSUB], date=DATE)
    assert render(r, "x" * 256)


def test_batch_tokens() -> None:
    r = tracking_renderer(PAGE)
    n = 300  # above the parallel threshold
    values = [{"email": f"u{i}@x.io", "firstName": f"N{i}"} for i in range(n)]
    ids = [f"m{i}@x" for i in range(n)]
    tokens = [f"tok-{i}" for i in range(n)]
    batch = r.render_batch(
        values, message_ids=ids, unsubscribe_urls=[UNSUB] * n, date=DATE, tracking_tokens=tokens
    )
    for i in range(0, n, 29):
        assert batch[i] == r.render(
            values[i],
            message_id=ids[i],
            unsubscribe_url=UNSUB,
            date=DATE,
            tracking_token=tokens[i],
        )
        page = parts(parse(batch[i]))[1]
        assert page.count(pixel(tokens[i])) == 1
        assert page.count(tracked(tokens[i], 2)) == 1
    with pytest.raises(eng.EngineError, match="length mismatch"):
        r.render_batch(
            values[:2],
            message_ids=ids[:2],
            unsubscribe_urls=[UNSUB] * 2,
            date=DATE,
            tracking_tokens=tokens[:1],
        )
    with pytest.raises(TypeError):
        r.render_batch(
            values[:1],
            message_ids=ids[:1],
            unsubscribe_urls=[UNSUB],
            date=DATE,
            tracking_tokens="tok",  # a str is not a list of tokens
        )


# ---------------------------------------------------------------- property tests


@dataclass(frozen=True)
class Link:
    kind: str  # "http" (tracked unless notrack), "merge", "other" (never tracked)
    url: str  # what the href means (merge: the source text)
    markup: str  # the attribute-encoded value in the template
    quote: str
    name: str
    sep: str
    pre: str
    post: str
    notrack: bool
    text: str

    @property
    def is_tracked(self) -> bool:
        return self.kind == "http" and not self.notrack

    def tag(self, value: str) -> str:
        notrack = " data-mc-notrack" if self.notrack else ""
        return (
            f"<a{self.pre}{notrack} {self.name}{self.sep}{self.quote}{value}{self.quote}"
            f"{self.post}>{self.text}</a>"
        )


url_char = st.characters(
    exclude_categories=["Cc", "Cs", "Zl", "Zp"], exclude_characters="{}"
) | st.sampled_from([*"&\"'<>?=#%/ ;", "é", "😀", "&amp;", "&#38;", "ü", "\xa0"])
path_st = st.lists(url_char, max_size=20).map(lambda cs: "".join(cs).rstrip(" "))
http_url = st.builds(
    "{}{}.{}/{}".format,
    st.sampled_from(["https://", "http://", "HTTPS://", "Http://"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True),
    st.sampled_from(["io", "com", "example"]),
    path_st,
)
other_url = st.sampled_from(
    ["mailto:a@acme.com", "tel:+1-555", "#top", "/relative?a=1", "ftp://acme.com/f",
     "//acme.com/x", "javascript:void(0)", f"{BASE}/u/tok", f"{BASE}", "", "https://"]
)  # fmt: skip


@st.composite
def encode(draw: st.DrawFn, url: str, quote: str) -> str:
    """Attribute-encode `url` for a value quoted with `quote`, with random entity choices."""
    options = {
        "&": ["&amp;", "&#38;", "&#x26;"],
        '"': ["&quot;", "&#34;"],
        "'": ["&#39;", "&#x27;"],
        "<": ["<", "&lt;"],
        ">": [">", "&gt;"],
    }
    if quote == '"':
        options["'"].append("'")
    else:
        options['"'].append('"')
    out = []
    for ch in url:
        if ch in options:
            out.append(draw(st.sampled_from(options[ch])))
        elif draw(st.integers(0, 7)) == 0:
            out.append(draw(st.sampled_from([f"&#{ord(ch)};", f"&#x{ord(ch):X};"])))
        else:
            out.append(ch)
    return "".join(out)


@st.composite
def link_st(draw: st.DrawFn, pool: list[str]) -> Link:
    quote = draw(st.sampled_from(['"', "'"]))
    kind = draw(st.sampled_from(["http", "http", "http", "again", "merge", "other"]))
    if kind == "again" and pool:
        url = draw(st.sampled_from(pool))
        kind = "http"
    elif kind in ("http", "again"):
        url = draw(http_url)
        kind = "http"
    elif kind == "merge":
        url = draw(http_url)
        tag = draw(
            st.sampled_from(["{{ firstName }}", '?p={{ customFields.plan | default: "x" }}'])
        )
    else:
        url = draw(other_url)
    markup = draw(encode(url, quote))
    if kind == "merge":
        url, markup = url + tag, markup + tag
    if kind == "http":
        pool.append(url)
    return Link(
        kind=kind,
        url=url,
        markup=markup,
        quote=quote,
        name=draw(st.sampled_from(["href", "HREF", "Href"])),
        sep=draw(st.sampled_from(["=", " = ", "=\n"])),
        pre=draw(st.sampled_from(["", ' class="btn"', " target=_blank", " title='a > b'"])),
        post=draw(st.sampled_from(["", ' style="color:red"', ' data-x="{{ firstName }}"', " /"])),
        notrack=draw(st.booleans()) and draw(st.booleans()),
        text=draw(
            # the URL as the link's text is HTML: written escaped, as an editor would
            # (a raw "<" right before a merge tag is a compile error with html=True)
            st.sampled_from(
                ["Click", "", "{{ firstName }}", "Shop &amp; save", "é 😀", html.escape(url, False)]
            )
        ),
    )


@st.composite
def campaign_st(draw: st.DrawFn) -> list[Link]:
    pool: list[str] = []
    return draw(st.lists(link_st(pool), max_size=8))


token_st = st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True)
first_name_st = st.text(st.characters(exclude_categories=["Cs"]), max_size=10)

HEAD = '<html><head><style>a {color: red}</style></head><body class="m">\n<p>Hi</p>\n'
TAIL = "\n<p>Bye {{ firstName }}</p>\n</body></html>"


def page_of(links: list[Link], values: list[str]) -> str:
    return HEAD + "\n".join(link.tag(v) for link, v in zip(links, values, strict=True)) + TAIL


@settings(max_examples=150, deadline=None)
@given(campaign_st(), st.lists(token_st, min_size=1, max_size=3), first_name_st, st.booleans())
def test_random_links_and_tokens(
    links: list[Link], tokens: list[str], first_name: str, opens: bool
) -> None:
    source = page_of(links, [link.markup for link in links])
    r = tracking_renderer(source, opens=opens, headers=[("X-Mailcore-Campaign", "c")])
    off = tracking_renderer(source, opens=False, clicks=False)

    expected_links: list[str] = []
    for link in links:
        if link.is_tracked and link.url not in expected_links:
            expected_links.append(link.url)
    assert r.links == expected_links

    values = {"email": "a@x.io", "firstName": first_name}
    untracked_plain, untracked_page = parts(parse(render(off, None, values)))
    untracked_hrefs = hrefs(untracked_page)
    for token in tokens:
        raw = render(r, token, values)
        plain, page = parts(parse(raw))
        # every tracked href points to its link id, and the id resolves to the original URL
        got = hrefs(page)
        assert len(got) == len(links) == len(untracked_hrefs)
        for link, href, before in zip(links, got, untracked_hrefs, strict=True):
            if link.is_tracked:
                link_id = expected_links.index(link.url)
                assert href == tracked(token, link_id)
                assert r.links[link_id] == link.url == html.unescape(link.markup)
            else:
                assert href == before
        # byte-identical to the same page with the tracked URLs and the pixel written in
        variant = page_of(
            links,
            [
                tracked(token, expected_links.index(link.url)) if link.is_tracked else link.markup
                for link in links
            ],
        )
        if opens:
            variant = variant.replace("</body>", pixel(token) + "</body>")
        plain_variant = tracking_renderer(variant, opens=False, clicks=False)
        v_plain, v_page = parts(parse(render(plain_variant, None, values)))
        assert page == v_page
        assert plain == v_plain  # derived text: "T (TRACKED_URL)"
        assert page.count(f"{BASE}/o/") == int(opens)
        assert len(re.findall(r"<img\b", page)) == int(opens)
        if opens:
            assert page.count(pixel(token) + "</body>") == 1
        if not expected_links and not opens:
            assert (plain, page) == (untracked_plain, untracked_page)
