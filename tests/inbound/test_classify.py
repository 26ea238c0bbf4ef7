from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcore.inbound import Complaint, Dsn, classify, parse_arf, parse_bounce_heuristic, parse_dsn

from . import samples
from .samples import wire

PARSERS = (classify, parse_dsn, parse_arf, parse_bounce_heuristic)


@pytest.mark.parametrize("name", sorted(samples.DSN_FIXTURES))
def test_dsns(name: str) -> None:
    raw = wire(samples.DSN_FIXTURES[name])
    result = classify(raw)
    assert isinstance(result, Dsn)
    assert result == parse_dsn(raw)


@pytest.mark.parametrize("name", sorted(samples.ARF_FIXTURES))
def test_complaints(name: str) -> None:
    raw = wire(samples.ARF_FIXTURES[name])
    result = classify(raw)
    assert isinstance(result, Complaint)
    assert result == parse_arf(raw)


@pytest.mark.parametrize("name", sorted(samples.PLAIN_BOUNCES))
def test_plain_bounces(name: str) -> None:
    raw = wire(samples.PLAIN_BOUNCES[name])
    result = classify(raw)
    assert isinstance(result, Dsn)
    assert result == parse_bounce_heuristic(raw)
    assert all(r.is_hard_bounce for r in result.recipients)


@pytest.mark.parametrize("name", sorted(samples.NOT_CLASSIFIED))
def test_not_classified(name: str) -> None:
    assert classify(wire(samples.NOT_CLASSIFIED[name])) is None


def test_arf_wins_over_dsn() -> None:
    # An ARF report that also (oddly) carries a delivery-status part is a complaint.
    raw = wire(
        samples.YAHOO_ARF.replace(
            "------=_Part_6634_1190131373.1717761605000\nContent-Type: message/rfc822",
            "------=_Part_6634_1190131373.1717761605000\nContent-Type: message/delivery-status"
            "\n\nFinal-Recipient: rfc822; x@example.com\nAction: failed\nStatus: 5.1.1\n\n"
            "------=_Part_6634_1190131373.1717761605000\nContent-Type: message/rfc822",
        )
    )
    assert isinstance(classify(raw), Complaint)


def test_a_bounce_forwarded_as_an_attachment_is_not_a_bounce() -> None:
    forwarded = (
        "From: ops@acme.example\nTo: news@acme.example\nSubject: Fwd: look at this\n"
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="f"\n\n'
        "--f\nContent-Type: text/plain\n\nSee attached.\n\n"
        "--f\nContent-Type: message/rfc822\n\n"
        f"{samples.POSTFIX_USER_UNKNOWN}\n--f--\n"
    )
    assert classify(wire(forwarded)) is None


def test_absurd_nesting_does_not_raise() -> None:
    deep = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(3000)
    )
    assert classify(deep) is None
    assert classify(b"Content-Type: message/rfc822\n\n" * 3000) is None


def test_undecodable_bytes_become_replacement_characters() -> None:
    raw = wire(samples.POSTFIX_USER_UNKNOWN).replace(
        b"Subject: =?utf-8?q?Sommer-Angebote_f=C3=BCr_Sie?=", b"Subject: Sommer \xff\xfe\x00 Sie"
    )
    result = classify(raw)
    assert isinstance(result, Dsn)
    subject = result.original_headers["Subject"]
    assert subject == "Sommer \ufffd\ufffd Sie"
    subject.encode("utf-8")  # no lone surrogates


# --- fuzzing ---------------------------------------------------------------------------

FIXTURE_BYTES = [wire(text) for text in samples.ALL_FIXTURES.values()]


@st.composite
def mutated_fixture(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(FIXTURE_BYTES)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["set", "delete", "insert", "duplicate", "truncate"]))
        i = draw(st.integers(0, len(data)))
        j = min(len(data), i + draw(st.integers(0, 200)))
        if op == "set" and i < len(data):
            data[i] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[i:j]
        elif op == "insert":
            data[i:i] = draw(
                st.sampled_from([b"\n", b"\r\n\r\n", b"--", b";", b":", b"\xff", b"="])
            )
        elif op == "duplicate":
            data[i:i] = data[i:j]
        elif op == "truncate":
            del data[i:]
    return bytes(data)


MIME_LINES = st.sampled_from(
    [
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b",
        "Content-Type: multipart/report; report-type=feedback-report; boundary=b",
        "Content-Type: multipart/report; boundary=b",
        "Content-Type: multipart/mixed; boundary=b",
        "Content-Type: message/delivery-status",
        "Content-Type: message/global-delivery-status",
        "Content-Type: message/feedback-report",
        "Content-Type: message/rfc822",
        "Content-Type: text/rfc822-headers",
        "Content-Transfer-Encoding: base64",
        "Content-Transfer-Encoding: quoted-printable",
        "Subject: Mail delivery failed",
        "From: MAILER-DAEMON@x.example",
        "Final-Recipient: rfc822; a@b.example",
        "Original-Recipient: utf-8; \\x{D800}\\x{110000}\\x{41}@b.example",
        "Action: failed",
        "Status: 5.1.1",
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown",
        "Feedback-Type: abuse",
        "Message-ID: <>",
        "To: =?bogus?b?////?= <a@b.example>",
        "550 5.1.1 <c@d.example>",
        "--b",
        "--b--",
        "",
        " folded",
    ]
)
MIME_SOUP = st.lists(MIME_LINES | st.text(max_size=30), max_size=40).map(
    lambda lines: "\r\n".join(lines).encode("utf-8", "surrogatepass")
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2000))
def test_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    for parse in PARSERS:
        parse(raw)


@settings(max_examples=300, deadline=None)
@given(mutated_fixture())
def test_never_raises_on_mutated_fixtures(raw: bytes) -> None:
    for parse in PARSERS:
        result = parse(raw)
        if result is not None:
            repr(result).encode("utf-8")  # every string is valid Unicode


@settings(max_examples=300, deadline=None)
@given(MIME_SOUP)
def test_never_raises_on_mime_soup(raw: bytes) -> None:
    for parse in PARSERS:
        result = parse(raw)
        if result is not None:
            repr(result).encode("utf-8")
