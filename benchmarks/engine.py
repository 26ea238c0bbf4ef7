"""The engine benchmark: ``python -m benchmarks.engine [--quick] [--write-results]``.

1. Render: a ~20 KB HTML newsletter (5 merge fields, 10 links, open and click tracking
   on) into complete MIME messages with ``MessageRenderer.render_batch`` (batches of
   1,000 built up front, the binding called as is). "Both cores" is the normal call (the
   engine splits batches of >= 256 across the cores it may run on); "one core" is the same
   measurement in a child process under ``taskset -c 0``. Side by side, single-threaded
   Python: Jinja2 and minijinja rendering the HTML body alone, and Jinja2 + the stdlib
   ``email`` package building the full message (``EmailMessage``, ``set_content`` +
   ``add_alternative``, quoted-printable, ``as_bytes``). The Jinja templates are the
   engine's output with ``{{ token }}`` where the engine writes the tracking token, so all
   produce the same HTML. The floor: batches of new ``bytes`` objects, each a copy of one
   engine message (no rendering: what writing the output alone costs).
2. Audience: 1,000,000 and 10,000,000 contacts (``--quick``: 250,000), 50 tags, each
   contact 0-5 random tags, ~90 % subscribed. ``AudienceIndex`` build time (``upsert_many``
   in batches of 100,000), ``count`` and ``members`` (ids handed to Python as
   ``array('I')``) for any-of, all-of and none-of two tags among subscribed contacts;
   side by side on the 1 M set, SQLite (``contact_tags(tag, contact_id)`` indexed,
   in memory) and pyroaring doing the same set algebra.
   First load from storage: a SQLite store (file) holding the first size's contacts
   (``--quick``: 250,000) in one account; a fresh ``AudienceIndexes.current`` (what a new
   process does on its first audience query): the store's chunked read, then
   ``upsert_packed``. Wall and CPU time, and each half.
3. Peak memory (VmHWM of a child process) while rendering a 1,000,000-recipient campaign
   in batches of 1,000, inputs built per batch as the sender does (``--quick``: 20,000).
4. DKIM signs/s of that message on one thread (RSA-2048, Ed25519 keys made with
   ``cryptography``); skipped when ``mailcore._engine`` has no ``DkimSigner``.

Figures are medians of ``--repeats`` repetitions, alternating between contenders.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from mailcore import _engine

from . import api, results, servers

RESULTS = results.RESULTS
SECTION = "## Engine (`python -m benchmarks.engine`)"

# Targets from the issue.
TARGET_ONE_CORE = 300_000  # msg/s
TARGET_VS_JINJA = 2.5
TARGET_VS_JINJA_EMAIL = 200.0
TARGET_COUNT_MS = 0.2
TARGET_VS_SQLITE = 250.0
TARGET_IDS_PER_S = 50_000_000

BATCH = 1_000
DATE = "Tue, 07 Jan 2025 10:00:00 +0000"
DOMAIN = "acme-news.example"
TRACKING_BASE = f"https://t.{DOMAIN}"
SUBJECT = "{{ firstName }}, the winter issue is here"
PREHEADER = "Ten stories picked for you this month"
FROM_EMAIL, FROM_NAME, REPLY_TO = f"news@{DOMAIN}", "Acme News", f"help@{DOMAIN}"
CAMPAIGN = "cmp_bench"
FIRST = ("Sarah", "Amir", "Léna", "Kofi", "Mei", "Jonas", "Ana", "Ravi", "Zoë", "Frédéric")
LAST = ("Chen", "Haddad", "Novak", "Mensah", "Tanaka", "Berg", "Silva", "O'Brien", "Dupont")
PLANS = ("free", "pro", "enterprise")
CITIES = ("Montréal", "Berlin", "São Paulo", "Zürich", "Lagos", "Tokyo", "Austin")
SLUGS = (
    "product-roadmap",
    "customer-story-globex",
    "winter-webinar",
    "pricing-update",
    "api-v2-launch",
    "security-report",
    "team-spotlight",
    "events-near-you",
    "tips-and-tricks",
    "community-forum",
)
LINKS = tuple(f"https://www.{DOMAIN}/2025/01/{slug}" for slug in SLUGS)
LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure "
    "dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. "
)

# Audience workload.
TAGS = tuple(f"tag{i:02d}" for i in range(50))
STATUSES, STATUS_WEIGHTS = (0, 1, 2, 3), (90, 6, 3, 1)  # 0 = subscribed (mailcore.audience)
SUBSCRIBED = [0]
UPSERT_BATCH = 100_000
QUERIES: dict[str, dict[str, list[str]]] = {
    "any-of": {"any_tags": ["tag00", "tag01"]},
    "all-of": {"all_tags": ["tag02", "tag03"]},
    "none-of": {"none_tags": ["tag04", "tag05"]},
}


# -- 1. the newsletter and its recipients ---------------------------------------------


def _article(i: int, href: str, body_len: int) -> str:
    body = (LOREM * (body_len // len(LOREM) + 1))[:body_len].rstrip() + "."
    return (
        '<tr><td style="padding:16px 24px;font-family:Arial,Helvetica,sans-serif;'
        'font-size:15px;line-height:22px;color:#333333">'
        f'<h2 style="margin:0 0 8px;font-size:20px;color:#111111">'
        f"{SLUGS[i].replace('-', ' ').capitalize()}</h2><p>{body}</p>"
        f'<p><a href="{href}" style="color:#0b6bcb;text-decoration:underline">'
        "Read the full story &rarr;</a></p></td></tr>\n"
    )


def newsletter_html(
    href: Callable[[int], str], after_body: str = "", before_end: str = "", size: int = 20_000
) -> str:
    """The newsletter: ~``size`` bytes, 5 merge fields, 10 links (``href(i)``)."""

    def build(body_len: int) -> str:
        return (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            "<title>Acme News</title><style>body{margin:0;padding:0;background:#f4f4f4}"
            "a{color:#0b6bcb}</style></head><body>"
            + after_body
            + '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
            'style="max-width:640px;margin:0 auto;background:#ffffff">\n'
            '<tr><td style="padding:24px;font-family:Arial,Helvetica,sans-serif">'
            "<p>Hi {{ firstName }} {{ lastName }},</p><p>Here is what is new for "
            "{{ customFields.plan }} members in {{ customFields.city }} this month.</p>"
            "</td></tr>\n"
            + "".join(_article(i, href(i), body_len) for i in range(len(LINKS)))
            + '<tr><td style="padding:24px;font-size:12px;color:#777777">'
            "<p>This email was sent to {{ email }}. Acme News, 1 Main St, Springfield.</p>"
            "</td></tr>\n</table>" + before_end + "</body></html>"
        )

    skeleton = len(build(0).encode())
    return build(max(0, (size - skeleton) // len(LINKS)))


def engine_html() -> str:
    return newsletter_html(lambda i: LINKS[i])


def jinja_html() -> str:
    """What the engine writes for the HTML part, with ``{{ token }}`` for the token."""
    preheader = (
        '<div style="display:none;max-height:0;overflow:hidden;mso-hide:all" '
        f'aria-hidden="true">{PREHEADER}</div>'
    )
    pixel = (
        f'<img src="{TRACKING_BASE}/o/{{{{ token }}}}" width="1" height="1" alt="" '
        'style="display:block;border:0">'
    )
    return newsletter_html(lambda i: f"{TRACKING_BASE}/c/{{{{ token }}}}/{i}", preheader, pixel)


def jinja_text() -> str:
    """A plain-text part like the one the engine derives from the HTML."""
    lines = [
        "Hi {{ firstName }} {{ lastName }},",
        "",
        "Here is what is new for {{ customFields.plan }} members in {{ customFields.city }}.",
        "",
    ]
    for i, slug in enumerate(SLUGS):
        lines += [
            slug.replace("-", " ").capitalize(),
            "",
            LOREM * 4,
            "",
            f"Read the full story → ({TRACKING_BASE}/c/{{{{ token }}}}/{i})",
            "",
        ]
    lines.append("This email was sent to {{ email }}. Acme News, 1 Main St, Springfield.")
    return "\n".join(lines)


def make_renderer() -> _engine.MessageRenderer:
    return _engine.MessageRenderer(
        subject=SUBJECT,
        preheader=PREHEADER,
        html=engine_html(),
        text=None,
        from_email=FROM_EMAIL,
        from_name=FROM_NAME,
        reply_to=REPLY_TO,
        headers=[("X-Mailcore-Campaign", CAMPAIGN)],
        track_opens=True,
        track_clicks=True,
        tracking_base=TRACKING_BASE,
    )


@dataclass(frozen=True)
class Batch:
    """One batch of recipients, in the engine's and in Jinja's shape."""

    values: list[dict[str, str]]
    message_ids: list[str]
    unsubscribe_urls: list[str]
    tokens: list[str]

    def contexts(self) -> list[dict[str, Any]]:
        return [
            {
                "email": v["email"],
                "firstName": v["firstName"],
                "lastName": v["lastName"],
                "customFields": {"plan": v["customFields.plan"], "city": v["customFields.city"]},
                "token": token,
            }
            for v, token in zip(self.values, self.tokens, strict=True)
        ]


def make_batch(start: int, size: int = BATCH) -> Batch:
    seqs = range(start, start + size)
    return Batch(
        values=[
            {
                "email": f"user{i}@example.com",
                "firstName": FIRST[i % len(FIRST)],
                "lastName": LAST[i % len(LAST)],
                "customFields.plan": PLANS[i % len(PLANS)],
                "customFields.city": CITIES[i % len(CITIES)],
            }
            for i in seqs
        ],
        message_ids=[f"{CAMPAIGN}.{i}@{DOMAIN}" for i in seqs],
        unsubscribe_urls=[f"https://{DOMAIN}/u/v1.{i:012x}.Zm9vYmFyYmF6cXV4" for i in seqs],
        tokens=[f"v1-{i:012x}-AbCdEfGhIjKlMnOpQrStUvWx" for i in seqs],
    )


def engine_render(renderer: _engine.MessageRenderer, batch: Batch) -> list[bytes]:
    return renderer.render_batch(
        batch.values,
        message_ids=batch.message_ids,
        unsubscribe_urls=batch.unsubscribe_urls,
        date=DATE,
        tracking_tokens=batch.tokens,
    )


def items_per_s(fn: Callable[[], int], seconds: float) -> float:
    """Call ``fn`` (which returns the items it did) until ``seconds`` have passed."""
    fn()  # warm-up
    done, start = 0, time.perf_counter()
    while True:
        done += fn()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


class Contenders:
    """The render contenders, compiled once."""

    def __init__(self) -> None:
        import jinja2
        import minijinja

        self.renderer = make_renderer()
        self.batch = make_batch(1)
        self.contexts = self.batch.contexts()
        env = jinja2.Environment(autoescape=True)
        self.jinja_html = env.from_string(jinja_html())
        self.jinja_text = jinja2.Environment(autoescape=False).from_string(jinja_text())
        self.jinja_subject = jinja2.Environment(autoescape=False).from_string(SUBJECT)
        self.mini = minijinja.Environment(templates={"body.html": jinja_html()})
        self.message = engine_render(self.renderer, make_batch(1, 1))[0]

    def engine(self) -> int:
        return len(engine_render(self.renderer, self.batch))

    def copy_floor(self) -> int:
        """No rendering: a batch of new ``bytes`` objects, each a copy of one engine message
        (what only writing the engine's output costs)."""
        message = self.message
        return len([message[1:] for _ in range(BATCH)])

    def jinja2_body(self) -> int:
        render = self.jinja_html.render
        for ctx in self.contexts:
            render(ctx)
        return len(self.contexts)

    def minijinja_body(self) -> int:
        render = self.mini.render_template
        for ctx in self.contexts:
            render("body.html", **ctx)
        return len(self.contexts)

    def jinja2_email_one(self, i: int) -> bytes:
        ctx = self.contexts[i]
        msg = EmailMessage()
        msg["From"] = f"{FROM_NAME} <{FROM_EMAIL}>"
        msg["To"] = ctx["email"]
        msg["Reply-To"] = REPLY_TO
        msg["Subject"] = self.jinja_subject.render(ctx)
        msg["Date"] = DATE
        msg["Message-ID"] = f"<{self.batch.message_ids[i]}>"
        msg["List-Unsubscribe"] = f"<{self.batch.unsubscribe_urls[i]}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg["X-Mailcore-Campaign"] = CAMPAIGN
        msg.set_content(self.jinja_text.render(ctx), cte="quoted-printable")
        msg.add_alternative(self.jinja_html.render(ctx), subtype="html", cte="quoted-printable")
        return msg.as_bytes()

    def jinja2_email(self) -> int:
        n = 100  # ~1,000 msg/s: keep each call short
        for i in range(n):
            self.jinja2_email_one(i)
        return n

    def sizes(self) -> dict[str, float]:
        """Average output size (KB) of each contender, to show they do comparable work."""
        k = 50
        engine = sum(map(len, engine_render(self.renderer, make_batch(1, k)))) / k
        body = sum(len(self.jinja_html.render(c).encode()) for c in self.contexts[:k]) / k
        mime = sum(len(self.jinja2_email_one(i)) for i in range(k)) / k
        return {"engine": engine / 1000, "body": body / 1000, "mime": mime / 1000}


RENDER_KEYS = {
    "engine2": "mailcore engine, both cores (`render_batch`)",
    "engine1": "mailcore engine, one core (`taskset -c 0`)",
    "jinja2": "Jinja2, HTML body only",
    "minijinja": "minijinja, HTML body only",
    "jinja2_email": "Jinja2 + `email` (full MIME message)",
    "floor": "floor: copying an engine message into new `bytes` (no rendering)",
}


def engine_one_core(seconds: float) -> float:
    """The engine's rate in a child process pinned to CPU 0."""
    out = run_child(["render", "--seconds", str(seconds)], pin=True)
    if out["cpus"] != 1:
        raise RuntimeError(f"one-core child saw {out['cpus']} CPUs")
    return float(out["rate"])


def bench_render(opts: Options) -> tuple[dict[str, list[float]], dict[str, float]]:
    c = Contenders()
    sizes = c.sizes()
    measures: dict[str, Callable[[], float]] = {
        "engine2": lambda: items_per_s(c.engine, opts.seconds),
        "engine1": lambda: engine_one_core(opts.seconds),
        "jinja2": lambda: items_per_s(c.jinja2_body, opts.seconds),
        "minijinja": lambda: items_per_s(c.minijinja_body, opts.seconds),
        "jinja2_email": lambda: items_per_s(c.jinja2_email, opts.seconds),
        "floor": lambda: items_per_s(c.copy_floor, opts.seconds),
    }
    runs: dict[str, list[float]] = {k: [] for k in measures}
    for rep in range(opts.repeats):
        for key, measure in measures.items():
            runs[key].append(measure())
        print(
            f"  rep {rep + 1}: " + "  ".join(f"{k} {v[-1]:,.0f}/s" for k, v in runs.items()),
            flush=True,
        )
    return runs, sizes


# -- 2. audience ----------------------------------------------------------------------

AudienceBatch = tuple[range, list[int], list[tuple[str, ...]]]


def audience_batches(n: int, seed: int = 11) -> Iterator[AudienceBatch]:
    """Contacts 1..n in batches: each 0-5 distinct random tags, ~90 % subscribed. Tag sets
    are drawn from a pool of 65,536 random sets (fast to generate, still random per id)."""
    rng = random.Random(seed)
    pool = [tuple(rng.sample(TAGS, rng.randint(0, 5))) for _ in range(65_536)]
    for start in range(1, n + 1, UPSERT_BATCH):
        size = min(UPSERT_BATCH, n + 1 - start)
        statuses = rng.choices(STATUSES, weights=STATUS_WEIGHTS, k=size)
        yield range(start, start + size), statuses, rng.choices(pool, k=size)


def build_index(batches: Iterator[AudienceBatch] | list[AudienceBatch]) -> tuple[Any, float]:
    """An ``AudienceIndex`` and the seconds spent in ``upsert_many`` (not generating)."""
    index = _engine.AudienceIndex()
    spent = 0.0
    for ids, statuses, tags in batches:
        start = time.perf_counter()
        index.upsert_many(ids, statuses, tags)
        spent += time.perf_counter() - start
    return index, spent


def per_call_s(fn: Callable[[], object], seconds: float) -> float:
    """Seconds per call: the first call alone if it takes ``seconds`` (SQLite), else the
    mean of the calls after it within ``seconds``."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    if first >= seconds:
        return first
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / calls


@dataclass
class QueryRuns:
    count_s: list[float] = field(default_factory=list)
    members_s: list[float] = field(default_factory=list)
    ids: int = 0

    @property
    def count(self) -> float:
        return statistics.median(self.count_s)

    @property
    def members(self) -> float:
        return statistics.median(self.members_s)

    @property
    def ids_per_s(self) -> float:
        return self.ids / self.members if self.members else float("inf")


@dataclass
class AudienceFigures:
    size: int
    build_s: list[float] = field(default_factory=list)
    queries: dict[tuple[str, str], QueryRuns] = field(default_factory=dict)  # (who, query)
    baseline_build_s: dict[str, float] = field(default_factory=dict)  # one build each


def _engine_ops(index: Any, q: dict[str, list[str]]) -> tuple[Callable[[], int], Callable[[], int]]:
    def count() -> int:
        return int(index.count(**q, statuses=SUBSCRIBED))

    def members() -> int:
        ids = array("I")
        ids.frombytes(index.members(**q, statuses=SUBSCRIBED))
        return len(ids)

    return count, members


class Roaring:
    """pyroaring doing the same set algebra as the engine."""

    def __init__(self, batches: list[AudienceBatch]) -> None:
        from pyroaring import BitMap

        by_tag: dict[str, list[int]] = {t: [] for t in TAGS}
        subscribed: list[int] = []
        for ids, statuses, tags in batches:
            for cid, status, ts in zip(ids, statuses, tags, strict=True):
                if status == 0:
                    subscribed.append(cid)
                for t in ts:
                    by_tag[t].append(cid)
        self.tags = {t: BitMap(v) for t, v in by_tag.items()}
        self.subscribed = BitMap(subscribed)

    def select(self, q: dict[str, list[str]]) -> Any:
        t = self.tags
        s = self.subscribed
        if "any_tags" in q:
            a, b = q["any_tags"]
            return (t[a] | t[b]) & s
        if "all_tags" in q:
            a, b = q["all_tags"]
            return s & t[a] & t[b]
        a, b = q["none_tags"]
        return s - (t[a] | t[b])

    def ops(self, q: dict[str, list[str]]) -> tuple[Callable[[], int], Callable[[], int]]:
        return (lambda: len(self.select(q))), (lambda: len(self.select(q).to_array()))


SQL_COUNT = {
    "any-of": "SELECT COUNT(DISTINCT ct.contact_id) FROM contact_tags ct "
    "JOIN contacts c ON c.id = ct.contact_id WHERE ct.tag IN (?, ?) AND c.status = ?",
    "all-of": "SELECT COUNT(*) FROM contact_tags a "
    "JOIN contact_tags b ON b.contact_id = a.contact_id AND b.tag = ? "
    "JOIN contacts c ON c.id = a.contact_id WHERE a.tag = ? AND c.status = ?",
    "none-of": "SELECT COUNT(*) FROM contacts c WHERE c.status = ? AND NOT EXISTS "
    "(SELECT 1 FROM contact_tags ct WHERE ct.tag IN (?, ?) AND ct.contact_id = c.id)",
}
SQL_MEMBERS = {
    "any-of": "SELECT DISTINCT ct.contact_id FROM contact_tags ct "
    "JOIN contacts c ON c.id = ct.contact_id WHERE ct.tag IN (?, ?) AND c.status = ? "
    "ORDER BY ct.contact_id",
    "all-of": "SELECT a.contact_id FROM contact_tags a "
    "JOIN contact_tags b ON b.contact_id = a.contact_id AND b.tag = ? "
    "JOIN contacts c ON c.id = a.contact_id WHERE a.tag = ? AND c.status = ? "
    "ORDER BY a.contact_id",
    "none-of": "SELECT c.id FROM contacts c WHERE c.status = ? AND NOT EXISTS "
    "(SELECT 1 FROM contact_tags ct WHERE ct.tag IN (?, ?) AND ct.contact_id = c.id) "
    "ORDER BY c.id",
}


class Sqlite:
    """In-memory SQLite: contacts(id, status), contact_tags(tag, contact_id) indexed on
    (tag, contact_id)."""

    def __init__(self, batches: list[AudienceBatch]) -> None:
        self.db = sqlite3.connect(":memory:")
        self.db.executescript(
            "CREATE TABLE contacts (id INTEGER PRIMARY KEY, status INTEGER NOT NULL);"
            "CREATE TABLE contact_tags (tag TEXT NOT NULL, contact_id INTEGER NOT NULL);"
        )
        for ids, statuses, tags in batches:
            self.db.executemany(
                "INSERT INTO contacts VALUES (?, ?)", zip(ids, statuses, strict=True)
            )
            self.db.executemany(
                "INSERT INTO contact_tags VALUES (?, ?)",
                ((t, cid) for cid, ts in zip(ids, tags, strict=True) for t in ts),
            )
        self.db.execute("CREATE INDEX contact_tags_tag ON contact_tags (tag, contact_id)")
        self.db.execute("ANALYZE")
        self.db.commit()

    @staticmethod
    def params(name: str, q: dict[str, list[str]]) -> tuple[Any, ...]:
        tags = next(iter(q.values()))
        if name == "none-of":
            return (0, *tags)
        if name == "all-of":
            return (tags[1], tags[0], 0)
        return (*tags, 0)

    def ops(self, name: str, q: dict[str, list[str]]) -> tuple[Callable[[], int], ...]:
        args = self.params(name, q)

        def count() -> int:
            return int(self.db.execute(SQL_COUNT[name], args).fetchone()[0])

        def members() -> int:
            return len(array("I", [r for (r,) in self.db.execute(SQL_MEMBERS[name], args)]))

        return count, members


def _time_query(
    runs: QueryRuns, count: Callable[[], int], members: Callable[[], int], seconds: float
) -> None:
    if not runs.count_s:  # check once that count and members agree
        runs.ids = members()
        if count() != runs.ids:
            raise RuntimeError(f"count {count()} != members {runs.ids}")
    runs.count_s.append(per_call_s(count, seconds))
    runs.members_s.append(per_call_s(members, seconds))


def bench_audience(opts: Options, size: int, baselines: bool) -> AudienceFigures:
    fig = AudienceFigures(size)
    batches = list(audience_batches(size)) if baselines else None
    index: Any = None
    for rep in range(opts.repeats):
        del index  # free the previous index before building the next
        index, seconds = build_index(batches if batches is not None else audience_batches(size))
        fig.build_s.append(seconds)
        print(f"  {size:,}: build rep {rep + 1}: {seconds:.2f} s", flush=True)
    contenders: dict[str, Callable[[str, dict[str, list[str]]], tuple[Callable[[], int], ...]]]
    contenders = {"engine": lambda _name, q: _engine_ops(index, q)}
    if batches is not None:
        start = time.perf_counter()
        roaring = Roaring(batches)
        fig.baseline_build_s["pyroaring"] = time.perf_counter() - start
        start = time.perf_counter()
        sql = Sqlite(batches)
        fig.baseline_build_s["sqlite"] = time.perf_counter() - start
        print(
            f"  baselines built: pyroaring {fig.baseline_build_s['pyroaring']:.1f} s, "
            f"SQLite {fig.baseline_build_s['sqlite']:.1f} s",
            flush=True,
        )
        contenders["pyroaring"] = lambda _name, q: roaring.ops(q)
        contenders["sqlite"] = sql.ops
    for _rep in range(opts.repeats):
        for name, q in QUERIES.items():
            for who, ops in contenders.items():
                count, members = ops(name, q)
                runs = fig.queries.setdefault((who, name), QueryRuns())
                _time_query(runs, count, members, opts.query_seconds)
    for (who, name), runs in fig.queries.items():
        print(
            f"  {size:,} {who:<9} {name:<7} count {runs.count * 1e3:9.3f} ms  "
            f"members {runs.members * 1e3:9.3f} ms  {runs.ids:>9,} ids",
            flush=True,
        )
    if batches is not None:
        for name in QUERIES:
            ids = {fig.queries[(w, name)].ids for w in contenders}
            if len(ids) != 1:
                raise RuntimeError(f"{name}: contenders disagree on the audience: {ids}")
    return fig


# -- 2b. audience first load from storage ---------------------------------------------

STATUS_NAMES = {0: "subscribed", 1: "unsubscribed", 2: "bounced", 3: "complained"}
ACCOUNT = "acc_bench"


def contacts_db(size: int, directory: Path) -> Path:
    """A SQLite store (the real schema) holding ``size`` contacts of one account, drawn as
    ``audience_batches`` draws them; rows inserted directly (the import path is benchmarked
    by ``benchmarks.api``)."""
    import anyio

    from mailcore.store.sqlite import SqliteStore

    path = directory / f"contacts-{size}.db"

    async def schema() -> None:
        store = SqliteStore(str(path))
        await store.open()
        await store.close()

    anyio.run(schema)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO accounts (id, name, created_at) VALUES (?, 'bench', ?)", (ACCOUNT, DATE)
    )
    rev = 0
    for ids, statuses, tags in audience_batches(size):
        rev += 1  # one revision per batch, as an import writes
        conn.executemany(
            "INSERT INTO contacts (seq, id, account_id, email, first_name, last_name, tags, "
            "custom_fields, status, created_at, updated_at, rev) "
            "VALUES (?, ?, ?, ?, 'Ann', 'Lee', ?, '{\"plan\":\"pro\"}', ?, ?, ?, ?)",
            (
                (i, f"con_{i:012x}", ACCOUNT, f"user{i}@example.com",
                 json.dumps(list(t), separators=(",", ":")), STATUS_NAMES[st], DATE, DATE, rev)
                for i, st, t in zip(ids, statuses, tags, strict=True)
            ),
        )  # fmt: skip
    conn.execute("INSERT INTO contact_revisions (account_id, rev) VALUES (?, ?)", (ACCOUNT, rev))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


@dataclass
class FirstLoad:
    size: int
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    read_s: list[float] = field(default_factory=list)
    engine_s: list[float] = field(default_factory=list)


def bench_first_load(opts: Options, size: int) -> FirstLoad:
    import tempfile

    import anyio

    from mailcore.audience import AudienceIndexes
    from mailcore.store.sqlite import SqliteStore

    fig = FirstLoad(size)
    with tempfile.TemporaryDirectory(prefix="mailcore-bench-") as tmp:
        start = time.perf_counter()
        path = contacts_db(size, Path(tmp))
        print(
            f"  store of {size:,} contacts built in {time.perf_counter() - start:.0f} s", flush=True
        )

        async def measure() -> None:
            store = SqliteStore(str(path))
            await store.open()
            try:
                for rep in range(opts.repeats):
                    cpu, wall = time.process_time(), time.perf_counter()
                    index = await AudienceIndexes(store).current(ACCOUNT)
                    fig.wall_s.append(time.perf_counter() - wall)
                    fig.cpu_s.append(time.process_time() - cpu)
                    if len(index) != size:
                        raise RuntimeError(f"loaded {len(index)} contacts, expected {size}")
                    del index
                    # The two halves, timed apart.
                    wall = time.perf_counter()
                    changes = await store.contact_changes(ACCOUNT, 0)
                    fig.read_s.append(time.perf_counter() - wall)
                    wall = time.perf_counter()
                    index = _engine.AudienceIndex()
                    for chunk in changes.chunks:
                        index.upsert_packed(chunk.seqs, chunk.statuses, chunk.tags_json)
                    fig.engine_s.append(time.perf_counter() - wall)
                    del index, changes
                    print(
                        f"  first load rep {rep + 1}: {fig.wall_s[-1]:.2f} s "
                        f"(CPU {fig.cpu_s[-1]:.2f} s; read {fig.read_s[-1]:.2f} s, "
                        f"engine {fig.engine_s[-1]:.2f} s)",
                        flush=True,
                    )
            finally:
                await store.close()

        anyio.run(measure)
    return fig


# -- 3. peak memory -------------------------------------------------------------------


def vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("VmHWM missing from /proc/self/status")


def peak_child(recipients: int) -> dict[str, Any]:
    """Render ``recipients`` messages in batches of 1,000 (inputs built per batch)."""
    renderer = make_renderer()
    before = vm_hwm_kib()
    after_10k = before
    total_bytes = 0
    start = time.perf_counter()
    for first in range(1, recipients + 1, BATCH):
        messages = engine_render(renderer, make_batch(first, min(BATCH, recipients + 1 - first)))
        total_bytes += sum(map(len, messages))
        del messages
        if first <= 10_000 < first + BATCH:
            after_10k = vm_hwm_kib()
    seconds = time.perf_counter() - start
    return {
        "recipients": recipients,
        "before_kib": before,
        "after_10k_kib": after_10k,
        "peak_kib": vm_hwm_kib(),
        "seconds": seconds,
        "bytes": total_bytes,
    }


def run_child(args: list[str], pin: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.engine", "--child", *args]
    if pin:
        taskset = shutil.which("taskset")
        if taskset is None:
            raise RuntimeError("taskset not found (util-linux): needed for the one-core figure")
        cmd = [taskset, "-c", "0", *cmd]
    proc = subprocess.run(cmd, cwd=servers.REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- 4. DKIM (placeholder until the engine has a DkimSigner) --------------------------


def bench_dkim_signing(opts: Options) -> dict[str, list[float]] | None:
    """RSA-2048 and Ed25519 signs/s on one thread (one core); ``None`` (skipped) while
    ``mailcore._engine`` has no ``DkimSigner``."""
    signer_cls = getattr(_engine, "DkimSigner", None)
    if signer_cls is None:
        return None
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    def pem(key: Any) -> str:
        return str(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode()
        )

    keys = {
        "rsa-sha256": pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "ed25519-sha256": pem(ed25519.Ed25519PrivateKey.generate()),
    }
    message = engine_render(make_renderer(), make_batch(1, 1))[0]
    runs: dict[str, list[float]] = {}
    for algorithm, key in keys.items():
        signer = signer_cls(domain=DOMAIN, selector="mc1", private_key=key, algorithm=algorithm)

        def sign(signer: Any = signer) -> int:
            for _ in range(20):
                signer.sign(message, timestamp=1_736_244_000)
            return 20

        runs[algorithm] = [items_per_s(sign, opts.seconds) for _ in range(opts.repeats)]
        print(f"  DKIM {algorithm}: {statistics.median(runs[algorithm]):,.0f} signs/s")
    return runs


# -- report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    repeats: int
    seconds: float  # per render measurement
    query_seconds: float  # per audience query measurement
    sizes: tuple[int, ...]
    campaign: int
    quick: bool


@dataclass(frozen=True)
class Figures:
    render: dict[str, list[float]]
    sizes: dict[str, float]
    audience: list[AudienceFigures]
    first_load: FirstLoad
    peak: dict[str, Any]
    dkim: dict[str, list[float]] | None


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _med(values: Sequence[float]) -> float:
    return statistics.median(values)


def render_table(opts: Options, fig: Figures) -> list[str]:
    r = {k: _med(v) for k, v in fig.render.items()}
    sizes = fig.sizes
    lines = [
        f"### Render: ~20 KB newsletter, 5 merge fields, 10 links, open + click tracking "
        f"(medians of {opts.repeats}, ≥ {opts.seconds:g} s each)",
        "",
        "| renderer | output | msg/s | µs/msg |",
        "|---|---|--:|--:|",
    ]
    output = {
        "engine2": f"MIME, {sizes['engine']:.1f} KB",
        "engine1": f"MIME, {sizes['engine']:.1f} KB",
        "jinja2": f"HTML body, {sizes['body']:.1f} KB",
        "minijinja": f"HTML body, {sizes['body']:.1f} KB",
        "jinja2_email": f"MIME, {sizes['mime']:.1f} KB",
        "floor": f"MIME, {sizes['engine']:.1f} KB",
    }
    for key, label in RENDER_KEYS.items():
        lines.append(f"| {label} | {output[key]} | {r[key]:,.0f} | {1e6 / r[key]:.2f} |")
    one, two = r["engine1"], r["engine2"]
    lines += [
        "",
        "| ratio | one core | both cores |",
        "|---|--:|--:|",
        f"| engine / Jinja2 (body only) | **{one / r['jinja2']:.1f}×** "
        f"| {two / r['jinja2']:.1f}× |",
        f"| engine / minijinja (body only) | {one / r['minijinja']:.1f}× "
        f"| {two / r['minijinja']:.1f}× |",
        f"| engine / (Jinja2 + `email`) | **{one / r['jinja2_email']:.0f}×** "
        f"| {two / r['jinja2_email']:.0f}× |",
        "",
        "Targets (one core: the Python contenders run on one):",
        f"≥ {TARGET_ONE_CORE:,} msg/s {_met(one >= TARGET_ONE_CORE)} ({one:,.0f}); "
        f"≥ {TARGET_VS_JINJA}× Jinja2 body-only {_met(one / r['jinja2'] >= TARGET_VS_JINJA)}; "
        f"≥ {TARGET_VS_JINJA_EMAIL:.0f}× Jinja2 + `email` "
        f"{_met(one / r['jinja2_email'] >= TARGET_VS_JINJA_EMAIL)}.",
        "",
        *(
            []
            if one >= TARGET_ONE_CORE
            else [
                f"Where the one-core target stops: a message is {sizes['engine']:.1f} KB (a "
                "text part and an HTML part, quoted-printable), and merely writing that much "
                f"into new `bytes` objects — the floor row: a plain copy per message, batches "
                f"of {BATCH:,}, no rendering — runs at {r['floor']:,.0f}/s in this run, so "
                f"{TARGET_ONE_CORE:,}/s would leave {1e6 / TARGET_ONE_CORE:.2f} µs per message "
                f"where the copy alone takes {1e6 / r['floor']:.2f} µs. The engine's one core "
                f"reaches {one / r['floor']:.0%} of the floor; the rest is its own work "
                "(values, headers, tokens, the text part's links) and Python's "
                "(dicts in, `bytes` and list out).",
                "",
            ]
        ),
        f"The engine renders prebuilt batches of {BATCH:,} (`render_batch` with tracking "
        "tokens; converting the dicts is inside the timing, building them is not) into "
        "complete quoted-printable `multipart/alternative` messages with a text part "
        "derived from the HTML. The Jinja templates are the engine's HTML output with "
        "`{{ token }}` in the 11 tracking slots (autoescape on); Jinja2 + `email` also "
        "renders the subject and a text template.",
    ]
    return lines


def audience_table(opts: Options, fig: Figures) -> list[str]:
    lines = [
        f"### Audience: 50 tags, 0–5 random tags per contact, ~90 % subscribed "
        f"(medians of {opts.repeats})",
        "",
        "| contacts | `AudienceIndex` build (`upsert_many`, 100k batches) | contacts/s |",
        "|--:|--:|--:|",
    ]
    for a in fig.audience:
        build = _med(a.build_s)
        lines.append(f"| {a.size:,} | {build:.2f} s | {a.size / build:,.0f} |")
    lines += [
        "",
        "| contacts | query (subscribed) | who | ids | count ms | members ms | ids/s handed over |",
        "|--:|---|---|--:|--:|--:|--:|",
    ]
    for a in fig.audience:
        for name in QUERIES:
            for who in ("engine", "pyroaring", "sqlite"):
                runs = a.queries.get((who, name))
                if runs is None:
                    continue
                lines.append(
                    f"| {a.size:,} | {name} | {who} | {runs.ids:,} | {runs.count * 1e3:,.3f} "
                    f"| {runs.members * 1e3:,.3f} | {runs.ids_per_s / 1e6:,.1f} M |"
                )
    first = fig.audience[0]
    eng = {n: first.queries[("engine", n)] for n in QUERIES}
    worst_count = max(r.count for r in eng.values()) * 1e3
    big = max(eng.values(), key=lambda r: r.ids)  # ids/s is only meaningful on many ids
    lines.append("")
    if ("sqlite", "any-of") in first.queries:
        sql = first.queries[("sqlite", "any-of")]
        roar = first.queries[("pyroaring", "any-of")]
        ratio = sql.count / eng["any-of"].count
        lines += [
            f"At {first.size:,} (any-of, count): engine / SQLite **{ratio:,.0f}×**, "
            f"engine / pyroaring {roar.count / eng['any-of'].count:.1f}×. One-off builds: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in first.baseline_build_s.items())
            + " (from Python lists; SQLite includes its index).",
            "",
        ]
        vs_sqlite = _met(ratio >= TARGET_VS_SQLITE)
    else:
        vs_sqlite = "(SQLite not run)"
    lines += [
        f"Targets at {first.size:,}: count ≤ {TARGET_COUNT_MS} ms "
        f"{_met(worst_count <= TARGET_COUNT_MS)} (slowest query {worst_count:.3f} ms); "
        f"≥ {TARGET_VS_SQLITE:.0f}× SQLite {vs_sqlite}; ≥ {TARGET_IDS_PER_S / 1e6:.0f} M ids/s "
        f"handed over {_met(big.ids_per_s >= TARGET_IDS_PER_S)} "
        f"({big.ids_per_s / 1e6:,.0f} M ids/s on the largest result, {big.ids:,} ids).",
        "",
        *first_load_lines(fig),
        "",
        "`members` is timed to an `array('I')` filled from the returned bytes "
        "(`frombytes`), as `mailcore.audience` does; pyroaring's to `BitMap.to_array()`; "
        "SQLite's from the cursor. SQLite is in memory, with an index on "
        "`contact_tags(tag, contact_id)` and `ANALYZE` run.",
    ]
    return lines


TARGET_FIRST_LOAD_S = 1.0


def first_load_lines(fig: Figures) -> list[str]:
    f = fig.first_load
    wall = _med(f.wall_s)
    return [
        f"First load from storage at {f.size:,} contacts (a fresh `AudienceIndexes.current` "
        f"on a SQLite store file, medians): **{wall:.2f} s** (CPU {_med(f.cpu_s):.2f} s): "
        f"the store's chunked read {_med(f.read_s):.2f} s, `upsert_packed` "
        f"{_med(f.engine_s):.2f} s. Target well under {TARGET_FIRST_LOAD_S:g} s "
        f"{_met(wall < TARGET_FIRST_LOAD_S)}.",
    ]


def peak_lines(fig: Figures) -> list[str]:
    p = fig.peak
    mib = 1024
    return [
        f"### Peak memory: a {p['recipients']:,}-recipient campaign rendered in batches of "
        f"{BATCH:,}",
        "",
        f"VmHWM of the child process: **{p['peak_kib'] / mib:,.0f} MiB** at the end, "
        f"{p['after_10k_kib'] / mib:,.0f} MiB after 10,000 recipients, "
        f"{p['before_kib'] / mib:,.0f} MiB before the first batch (interpreter, engine, "
        f"renderer). {p['bytes'] / 1e9:.1f} GB rendered in {p['seconds']:.1f} s "
        f"({p['recipients'] / p['seconds']:,.0f} msg/s including building each batch's "
        "inputs in Python, both cores).",
    ]


def dkim_lines(fig: Figures) -> list[str]:
    if fig.dkim is None:
        return ["### DKIM", "", "Skipped: `mailcore._engine` has no `DkimSigner` yet."]
    lines = ["### DKIM signing, one thread", "", "| algorithm | signs/s |", "|---|--:|"]
    for algorithm, runs in fig.dkim.items():
        lines.append(f"| {algorithm} | {_med(runs):,.0f} |")
    return lines


def command() -> str:
    return " ".join(["python -m benchmarks.engine", *sys.argv[1:]])


def section(opts: Options, fig: Figures, seconds: float, other_share: float) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    warning = []
    if other_share >= 0.15:
        warning = [
            "",
            f"**Warning: other processes used {other_share:.0%} of a core during this run; "
            "that depresses every figure. Re-run on a quiet machine.**",
        ]
    lines = [
        SECTION + (" — quick smoke run, not representative" if opts.quick else ""),
        "",
        f"{when}, {api.machine()}. Command: `{command()}` ({seconds:.0f} s in all; other "
        f"processes used {other_share:.0%} of a core meanwhile).",
        *warning,
        "",
        *render_table(opts, fig),
        "",
        *audience_table(opts, fig),
        "",
        *peak_lines(fig),
        "",
        *dkim_lines(fig),
    ]
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path = RESULTS) -> None:
    results.write_section(SECTION, text, path)


# -- main -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Options, bool, list[str] | None]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.engine",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run (< 40 s)")
    parser.add_argument("--repeats", type=int, help="repetitions (3)")
    parser.add_argument("--seconds", type=float, help="seconds per render measurement (1.0)")
    parser.add_argument(
        "--campaign", type=int, help="recipients of the peak-memory campaign (1,000,000)"
    )
    parser.add_argument("--write-results", action="store_true", help=f"update {RESULTS.name}")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    opts = Options(
        repeats=args.repeats or 3,
        seconds=args.seconds or (0.3 if quick else 1.0),
        query_seconds=0.05 if quick else 0.3,
        sizes=(250_000,) if quick else (1_000_000, 10_000_000),
        campaign=args.campaign or (20_000 if quick else 1_000_000),
        quick=quick,
    )
    return opts, bool(args.write_results), args.child


def child_main(argv: list[str]) -> int:
    """``--child render --seconds S`` | ``--child peak --recipients N``: one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine --child")
    parser.add_argument("what", choices=("render", "peak"))
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--recipients", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    if args.what == "render":
        renderer, batch = make_renderer(), make_batch(1)
        rate = items_per_s(lambda: len(engine_render(renderer, batch)), args.seconds)
        result: dict[str, Any] = {"rate": rate, "cpus": len(os.sched_getaffinity(0))}
    else:
        result = peak_child(args.recipients)
    print(json.dumps(result))
    return 0


def run(opts: Options) -> Figures:
    print(f"Render ({opts.repeats} × {opts.seconds:g} s per contender)", flush=True)
    render, sizes = bench_render(opts)
    audience = []
    for size in opts.sizes:
        print(f"Audience ({size:,} contacts)", flush=True)
        audience.append(bench_audience(opts, size, baselines=size == opts.sizes[0]))
    print(f"Audience first load from storage ({opts.sizes[0]:,} contacts)", flush=True)
    first_load = bench_first_load(opts, opts.sizes[0])
    print(f"Peak memory ({opts.campaign:,}-recipient campaign)", flush=True)
    peak = run_child(["peak", "--recipients", str(opts.campaign)])
    print(f"  VmHWM {peak['peak_kib'] / 1024:,.0f} MiB", flush=True)
    print("DKIM", flush=True)
    dkim = bench_dkim_signing(opts)
    if dkim is None:
        print("  skipped: mailcore._engine has no DkimSigner", flush=True)
    return Figures(render, sizes, audience, first_load, peak, dkim)


def _our_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv: Sequence[str] | None = None) -> int:
    opts, write, child = parse_args(argv)
    if child is not None:
        return child_main(child)
    machine0, ours0, start = servers.machine_busy_seconds(), _our_cpu(), time.perf_counter()
    figures = run(opts)
    seconds = time.perf_counter() - start
    other = max(0.0, servers.machine_busy_seconds() - machine0 - (_our_cpu() - ours0))
    text = section(opts, figures, seconds, other / seconds)
    print()
    print(text)
    if write:
        write_section(text)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
