from __future__ import annotations

import pytest

from mailcore.inbound import Complaint, parse_arf

from . import samples
from .samples import wire


def arf(text: str) -> Complaint:
    parsed = parse_arf(wire(text))
    assert parsed is not None
    return parsed


def test_yahoo_complaint() -> None:
    assert arf(samples.YAHOO_ARF) == Complaint(
        feedback_type="abuse",
        user_agent="Yahoo!-Mail-Feedback/2.0",
        version="0.1",
        original_mail_from=samples.VERP,
        original_rcpt_to="reader@yahoo.com",
        arrival_date="Fri, 07 Jun 2024 12:00:00 +0000",  # from the older Received-Date
        source_ip=None,
        reported_domain="acme.example",
        original_message_id="cmp_7Hq.c77@mc.example",
        original_headers={
            "Message-ID": "<cmp_7Hq.c77@mc.example>",
            "X-Mailcore-Campaign": "cmp_7Hq",
            "To": "reader@yahoo.com",
            "From": '"Acme News" <news@acme.example>',
            "Subject": "Summer offers",
        },
    )


def test_jmrp_complaint_with_redacted_recipient() -> None:
    parsed = arf(samples.JMRP_ARF)
    assert parsed.feedback_type == "abuse"
    assert parsed.user_agent == "Microsoft JMRP"
    assert parsed.version == "1.0"
    assert parsed.original_mail_from == samples.VERP
    assert parsed.original_rcpt_to == "reader@outlook.com"  # X-HmXmrOriginalRecipient
    assert parsed.arrival_date == "Sat, 08 Jun 2024 07:29:12 -0700"
    assert parsed.source_ip == "198.51.100.7"
    assert parsed.reported_domain == "acme.example"  # the first of two
    assert parsed.original_message_id == "cmp_7Hq.c78@mc.example"
    assert parsed.original_headers["X-Mailcore-Campaign"] == "cmp_7Hq"


def test_feedback_type_is_lower_cased_and_defaults_to_abuse() -> None:
    fraud = samples.YAHOO_ARF.replace("Feedback-Type: abuse", "Feedback-Type: Fraud")
    assert arf(fraud).feedback_type == "fraud"
    missing = samples.YAHOO_ARF.replace("Feedback-Type: abuse\n", "")
    assert arf(missing).feedback_type == "abuse"


def test_rfc822_headers_original_and_bracketed_source_ip() -> None:
    text = samples.JMRP_ARF.replace(
        "Content-Type: message/rfc822", "Content-Type: text/rfc822-headers"
    ).replace("Source-IP: 198.51.100.7", "Source-IP: [198.51.100.7]")
    parsed = arf(text)
    assert parsed.source_ip == "198.51.100.7"
    assert parsed.original_message_id == "cmp_7Hq.c78@mc.example"


def test_without_returned_original() -> None:
    text = samples.YAHOO_ARF.split(
        "------=_Part_6634_1190131373.1717761605000\nContent-Type: message/rfc822"
    )[0]
    parsed = arf(text + "------=_Part_6634_1190131373.1717761605000--\n")
    assert parsed.original_message_id is None
    assert dict(parsed.original_headers) == {}
    assert parsed.original_rcpt_to == "reader@yahoo.com"


@pytest.mark.parametrize("name", sorted(set(samples.ALL_FIXTURES) - {"arf-yahoo", "arf-jmrp"}))
def test_not_a_complaint(name: str) -> None:
    assert parse_arf(wire(samples.ALL_FIXTURES[name])) is None
