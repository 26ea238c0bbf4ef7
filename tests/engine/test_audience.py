"""mailcore._engine.AudienceIndex vs a dict/set reference."""

from __future__ import annotations

import random
import sys
from array import array
from collections.abc import Sequence

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from mailcore import _engine as eng

Ref = dict[int, tuple[int, frozenset[str]]]

TAGS = ["a", "b", "c", "vip", "é", ""]
STATUSES = [0, 1, 2, 255]
# Ids spread over several roaring containers (high 16 bits) plus the extremes.
CONTACTS = [0, 1, 2, 3, 7, 65_535, 65_536, 65_537, 1 << 20, (1 << 20) + 5, 2**32 - 2, 2**32 - 1]


def ref_query(
    ref: Ref,
    any_tags: Sequence[str] = (),
    all_tags: Sequence[str] = (),
    none_tags: Sequence[str] = (),
    statuses: Sequence[int] | None = None,
) -> list[int]:
    out = []
    for contact, (status, tags) in ref.items():
        if statuses is not None and status not in statuses:
            continue
        if any_tags and not tags.intersection(any_tags):
            continue
        if not tags.issuperset(all_tags):
            continue
        if tags.intersection(none_tags):
            continue
        out.append(contact)
    return sorted(out)


def decode(members: bytes) -> list[int]:
    ids = array("I", members)
    assert ids.itemsize == 4
    return ids.tolist()


def check_query(ix: eng.AudienceIndex, ref: Ref, **query: object) -> None:
    expected = ref_query(ref, **query)  # type: ignore[arg-type]
    got = decode(ix.members(**query))  # type: ignore[arg-type]
    assert got == expected, query
    assert got == sorted(got)
    assert ix.count(**query) == len(expected), query  # type: ignore[arg-type]


def check_invariants(ix: eng.AudienceIndex, ref: Ref) -> None:
    assert len(ix) == len(ref)
    assert ix.tags() == sorted({t for _, tags in ref.values() for t in tags})
    assert decode(ix.members()) == sorted(ref)


# ---------------------------------------------------------------- examples


def test_empty_index() -> None:
    ix = eng.AudienceIndex()
    assert len(ix) == 0
    assert ix.tags() == []
    assert ix.count() == 0
    assert ix.members() == b""
    assert 1 not in ix
    assert ix.remove(1) is False


def test_examples() -> None:
    ix = eng.AudienceIndex()
    ix.upsert(10, 1, ["a", "b"])
    ix.upsert(20, 1, ["a"])
    ix.upsert(30, 2, ["b", "c"])
    ix.upsert(40, 0, [])
    assert len(ix) == 4
    assert 30 in ix and 31 not in ix and -1 not in ix and 2**40 not in ix
    assert ix.tags() == ["a", "b", "c"]
    assert ix.count() == 4
    assert ix.count(any_tags=["a"]) == 2
    assert ix.count(any_tags=["a"], statuses=[2]) == 0
    assert ix.count(any_tags=["nope"]) == 0
    assert ix.count(all_tags=["a", "b"]) == 1
    assert ix.count(all_tags=["a", "nope"]) == 0
    assert ix.count(none_tags=["b"]) == 2
    assert ix.count(statuses=[]) == 0
    assert decode(ix.members(statuses=[1, 0])) == [10, 20, 40]
    assert decode(ix.members(any_tags=["c", "a"], none_tags=["b"])) == [20]
    assert ix.members(any_tags=["b"]) == (10).to_bytes(4, "little") + (30).to_bytes(4, "little")
    assert memoryview(ix.members()).cast("I").tolist() == [10, 20, 30, 40]

    ix.upsert(30, 1, ["a"])  # replaces status and tags
    assert ix.tags() == ["a", "b"]
    assert decode(ix.members(statuses=[2])) == []
    assert decode(ix.members(any_tags=["a"])) == [10, 20, 30]
    assert ix.remove(10) is True
    assert ix.remove(10) is False
    assert ix.tags() == ["a"]
    assert len(ix) == 3


def test_upsert_many_last_occurrence_wins_and_accepts_sequences() -> None:
    ix = eng.AudienceIndex()
    ix.upsert(5, 9, ["old"])
    ix.upsert_many((5, 6, 5), range(3), [("x",), [], ["y", "y"]])
    assert decode(ix.members(statuses=[2])) == [5]
    assert decode(ix.members(statuses=[9])) == []
    assert ix.tags() == ["y"]
    assert len(ix) == 2


def test_upsert_many_length_mismatch() -> None:
    ix = eng.AudienceIndex()
    with pytest.raises(eng.EngineError, match="length"):
        ix.upsert_many([1, 2], [0], [[], []])
    with pytest.raises(eng.EngineError):
        ix.upsert_many([1], [0], [])
    assert len(ix) == 0


def raw_columns(
    contacts: Sequence[int], statuses: Sequence[int], tags: Sequence[Sequence[str]]
) -> tuple[bytes, bytes, list[bytes]]:
    ids = array("I", contacts)
    if sys.byteorder != "little":
        ids.byteswap()
    return ids.tobytes(), bytes(statuses), [msgspec.json.encode(list(t)) for t in tags]


def same_index(a: eng.AudienceIndex, b: eng.AudienceIndex) -> None:
    assert len(a) == len(b)
    assert a.tags() == b.tags()
    assert a.members() == b.members()
    for tag in a.tags():
        assert a.members(any_tags=[tag]) == b.members(any_tags=[tag]), tag
    for status in range(256):
        assert a.members(statuses=[status]) == b.members(statuses=[status]), status


# Tags as stored: any text, including quotes, backslashes, controls and non-BMP characters.
raw_tag_st = st.sampled_from(TAGS) | st.text(max_size=6)
raw_rows_st = st.lists(
    st.tuples(
        st.sampled_from(CONTACTS) | st.integers(0, 2**32 - 1),
        st.integers(0, 255),
        st.lists(raw_tag_st, max_size=4),
    ),
    max_size=30,
)


@given(before=raw_rows_st, rows=raw_rows_st)
@settings(max_examples=200, deadline=None)
def test_upsert_raw_matches_upsert_many(
    before: list[tuple[int, int, list[str]]], rows: list[tuple[int, int, list[str]]]
) -> None:
    a, b = eng.AudienceIndex(), eng.AudienceIndex()
    for ix in (a, b):
        ix.upsert_many([r[0] for r in before], [r[1] for r in before], [r[2] for r in before])
    contacts, statuses, tags = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    a.upsert_many(contacts, statuses, tags)
    b.upsert_raw(*raw_columns(contacts, statuses, tags))
    same_index(a, b)


def test_upsert_raw_json_forms() -> None:
    ix = eng.AudienceIndex()
    json = [
        b"[]",
        b' [ "a" , "b" ] ',
        rb'["\"q\/\u00e9\ud83d\ude00\n"]',
        '["é"]'.encode(),
    ]
    ix.upsert_raw(*raw_columns(range(4), [0] * 4, [[]] * 4)[:2], json)
    assert ix.tags() == sorted(["a", "b", '"q/é😀\n', "é"])
    assert decode(ix.members(any_tags=["é"])) == [3]


@pytest.mark.parametrize(
    ("contacts", "statuses", "tags_json", "match"),
    [
        (b"\x01\x00\x00", b"", [], "multiple of 4"),
        (b"\x01\x00\x00\x00", b"", [b"[]"], "length mismatch"),
        (b"\x01\x00\x00\x00", b"\x00", [], "length mismatch"),
        (b"\x01\x00\x00\x00", b"\x00", [b'["a",]'], r"tags_json\[0\]"),
        (b"\x01\x00\x00\x00", b"\x00", [b"[1]"], "expected a string at byte 1"),
        (b"\x01\x00\x00\x00", b"\x00", [b'["\\ud800"]'], "surrogate"),
        (b"\x01\x00\x00\x00", b"\x00", [b'["\xff"]'], "UTF-8"),
    ],
)
def test_upsert_raw_rejects_bad_input(
    contacts: bytes, statuses: bytes, tags_json: list[bytes], match: str
) -> None:
    ix = eng.AudienceIndex()
    ix.upsert(1, 3, ["keep"])
    with pytest.raises(eng.EngineError, match=match):
        ix.upsert_raw(contacts, statuses, tags_json)
    assert ix.tags() == ["keep"]
    assert decode(ix.members(statuses=[3])) == [1]


def test_upsert_raw_type_errors() -> None:
    ix = eng.AudienceIndex()
    with pytest.raises(TypeError):
        ix.upsert_raw(b"", b"", [""])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        ix.upsert_raw([1], b"\x00", [b"[]"])  # type: ignore[arg-type]


def packed_columns(
    contacts: Sequence[int], statuses: Sequence[int], tags: Sequence[Sequence[str]]
) -> tuple[bytes, bytes, bytes]:
    """Columns as SQLite's group_concat packs them (what the store hands the index)."""
    return (
        ",".join(map(str, contacts)).encode(),
        ",".join(map(str, statuses)).encode(),
        b"\n".join(msgspec.json.encode(list(t)) for t in tags),
    )


@given(before=raw_rows_st, rows=raw_rows_st, sort=st.booleans())
@settings(max_examples=200, deadline=None)
def test_upsert_packed_matches_upsert_many(
    before: list[tuple[int, int, list[str]]], rows: list[tuple[int, int, list[str]]], sort: bool
) -> None:
    if sort:  # the bulk-load shape: ascending, distinct ids
        rows = sorted({r[0]: r for r in rows}.values())
    a, b = eng.AudienceIndex(), eng.AudienceIndex()
    for ix in (a, b):
        ix.upsert_many([r[0] for r in before], [r[1] for r in before], [r[2] for r in before])
    contacts, statuses, tags = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    a.upsert_many(contacts, statuses, tags)
    b.upsert_packed(*packed_columns(contacts, statuses, tags))
    same_index(a, b)


@pytest.mark.parametrize(
    ("contacts", "statuses", "tags_json", "match"),
    [
        (b"1,2", b"0", b"[] []", r"count mismatch \(contacts=2, statuses=1, tags_json=2\)"),
        (b"1", b"0", b"", "count mismatch"),
        (b"1,", b"0", b"[]", "contacts: expected a decimal number at byte 2"),
        (b"4294967296", b"0", b"[]", "contacts: expected a decimal number"),
        (b"1", b"256", b"[]", "statuses: expected a decimal number"),
        (b"1", b" 1", b"[]", "statuses: expected a decimal number"),
        (b"1", b"0", b"[1]", "tags_json row 0: expected a string at byte 1"),
        (b"1", b"0", b'["\xff"]', "UTF-8"),
        (b"1", b"0", b"[]]", "row 1: expected '\\[' at byte 2"),
    ],
)
def test_upsert_packed_rejects_bad_input(
    contacts: bytes, statuses: bytes, tags_json: bytes, match: str
) -> None:
    ix = eng.AudienceIndex()
    ix.upsert(1, 3, ["keep"])
    with pytest.raises(eng.EngineError, match=match):
        ix.upsert_packed(contacts, statuses, tags_json)
    assert ix.tags() == ["keep"]
    assert decode(ix.members(statuses=[3])) == [1]


@pytest.mark.parametrize(("contact", "status"), [(-1, 0), (2**32, 0), (1, 256), (1, -1)])
def test_out_of_range_inputs(contact: int, status: int) -> None:
    ix = eng.AudienceIndex()
    with pytest.raises(OverflowError):
        ix.upsert(contact, status, [])
    assert len(ix) == 0


def test_tags_must_be_a_sequence_not_a_str() -> None:
    ix = eng.AudienceIndex()
    with pytest.raises(TypeError):
        ix.upsert(1, 0, "ab")
    with pytest.raises(TypeError):
        ix.count(any_tags="ab")


def test_random_bulk_ops_against_reference() -> None:
    rng = random.Random(1234)
    ix = eng.AudienceIndex()
    ref: Ref = {}
    universe = [rng.randrange(0, 2**32) for _ in range(300)] + list(range(3000))
    for _ in range(20):
        n = rng.randrange(0, 800)
        contacts = [rng.choice(universe) for _ in range(n)]
        statuses = [rng.choice(STATUSES) for _ in range(n)]
        tags = [rng.sample(TAGS, rng.randrange(0, 4)) for _ in range(n)]
        ix.upsert_many(contacts, statuses, tags)
        for c, s, t in zip(contacts, statuses, tags, strict=True):
            ref[c] = (s, frozenset(t))
        for c in rng.sample(universe, 100):
            assert ix.remove(c) is (ref.pop(c, None) is not None)
        check_invariants(ix, ref)
        for _ in range(10):
            check_query(
                ix,
                ref,
                any_tags=rng.sample([*TAGS, "zz"], rng.randrange(0, 3)),
                all_tags=rng.sample([*TAGS, "zz"], rng.randrange(0, 2)),
                none_tags=rng.sample(TAGS, rng.randrange(0, 2)),
                statuses=rng.choice([None, rng.sample([*STATUSES, 7], rng.randrange(0, 3))]),
            )


# ---------------------------------------------------------------- stateful property test

contact_st = st.sampled_from(CONTACTS)
status_st = st.sampled_from(STATUSES)
tag_list_st = st.lists(st.sampled_from(TAGS), max_size=4)
query_tags_st = st.lists(st.sampled_from([*TAGS, "unknown"]), max_size=3)


class AudienceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ix = eng.AudienceIndex()
        self.ref: Ref = {}

    @rule(contact=contact_st, status=status_st, tags=tag_list_st)
    def upsert(self, contact: int, status: int, tags: list[str]) -> None:
        self.ix.upsert(contact, status, tags)
        self.ref[contact] = (status, frozenset(tags))

    @rule(rows=st.lists(st.tuples(contact_st, status_st, tag_list_st), max_size=8))
    def upsert_many(self, rows: list[tuple[int, int, list[str]]]) -> None:
        self.ix.upsert_many([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
        for contact, status, tags in rows:
            self.ref[contact] = (status, frozenset(tags))

    @rule(contact=contact_st)
    def remove(self, contact: int) -> None:
        assert self.ix.remove(contact) is (self.ref.pop(contact, None) is not None)

    @rule(
        any_tags=query_tags_st,
        all_tags=query_tags_st,
        none_tags=query_tags_st,
        statuses=st.none() | st.lists(st.sampled_from([*STATUSES, 3]), max_size=3),
    )
    def query(
        self,
        any_tags: list[str],
        all_tags: list[str],
        none_tags: list[str],
        statuses: list[int] | None,
    ) -> None:
        check_query(
            self.ix,
            self.ref,
            any_tags=any_tags,
            all_tags=all_tags,
            none_tags=none_tags,
            statuses=statuses,
        )

    @rule(tag=st.sampled_from(TAGS), status=status_st)
    def single_tag_single_status_count(self, tag: str, status: int) -> None:
        # Exercises the count() fast paths (no materialisation).
        check_query(self.ix, self.ref, any_tags=[tag], statuses=[status])
        check_query(self.ix, self.ref, any_tags=[tag])
        check_query(self.ix, self.ref, statuses=[status])

    @invariant()
    def consistent(self) -> None:
        check_invariants(self.ix, self.ref)
        for contact in CONTACTS:
            assert (contact in self.ix) is (contact in self.ref)


AudienceMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None
)
TestAudienceMachine = AudienceMachine.TestCase
