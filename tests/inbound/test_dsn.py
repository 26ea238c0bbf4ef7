from __future__ import annotations

import dataclasses

import pytest

from mailcore.inbound import Dsn, DsnRecipient, parse_bounce_heuristic, parse_dsn

from . import samples
from .samples import wire


def dsn(text: str) -> Dsn:
    parsed = parse_dsn(wire(text))
    assert parsed is not None
    return parsed


def only(parsed: Dsn) -> DsnRecipient:
    assert len(parsed.recipients) == 1
    return parsed.recipients[0]


def test_postfix_user_unknown() -> None:
    parsed = dsn(samples.POSTFIX_USER_UNKNOWN)
    assert parsed.reporting_mta == "mx1.example.org"
    assert parsed.original_message_id == "cmp_7Hq.c42@mc.example"
    assert dict(parsed.original_headers) == {
        "Message-ID": "<cmp_7Hq.c42@mc.example>",
        "X-Mailcore-Campaign": "cmp_7Hq",
        "To": "Jane Doe <jane.doe@example.org>",
        "From": '"Acme News" <news@acme.example>',
        "Subject": "Sommer-Angebote für Sie",
    }
    rcpt = only(parsed)
    assert rcpt == DsnRecipient(
        final_recipient="jane.doe@example.org",
        original_recipient="jane.doe@example.org",
        action="failed",
        status="5.1.1",
        diagnostic="550 5.1.1 <jane.doe@example.org>: Recipient address rejected: "
        "User unknown in virtual mailbox table",
        remote_mta="mx1.example.org",
    )
    assert rcpt.is_hard_bounce
    assert not rcpt.is_soft_bounce


def test_exim_dsn_trusts_status_field_over_diagnostic() -> None:
    parsed = dsn(samples.EXIM_DSN)
    rcpt = only(parsed)
    assert parsed.reporting_mta == "mail.example.net"
    assert rcpt.final_recipient == "bob@example.net"
    assert rcpt.original_recipient is None
    assert (rcpt.action, rcpt.status) == ("failed", "5.0.0")
    assert rcpt.diagnostic is not None and rcpt.diagnostic.startswith("550 5.1.1 <bob@")
    assert rcpt.is_hard_bounce
    assert parsed.original_headers["X-Mailcore-Campaign"] == "cmp_7Hq"


def test_gmail_dsn_nested_human_part_and_folded_fields() -> None:
    parsed = dsn(samples.GMAIL_DSN)
    rcpt = only(parsed)
    assert parsed.reporting_mta == "googlemail.com"
    assert rcpt.final_recipient == "nobody.here@gmail.com"
    assert rcpt.status == "5.1.1"
    assert rcpt.remote_mta == "gmail-smtp-in.l.google.com"
    assert rcpt.diagnostic is not None
    assert "\n" not in rcpt.diagnostic
    assert rcpt.diagnostic.endswith("- gsmtp")
    assert parsed.original_message_id == "cmp_9Zk.c7@mc.example"
    assert parsed.original_headers["X-Mailcore-Campaign"] == "cmp_9Zk"
    assert rcpt.is_hard_bounce


def test_office365_ndr() -> None:
    parsed = dsn(samples.O365_NDR)
    rcpt = only(parsed)
    assert parsed.reporting_mta == "DM6PR11MB1234.namprd11.prod.outlook.com"
    assert rcpt.final_recipient == rcpt.original_recipient == "ghost@contoso.com"
    assert rcpt.status == "5.1.10"
    assert rcpt.diagnostic == (
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
    )
    assert rcpt.remote_mta is None
    assert parsed.original_message_id == "cmp_Q1.c1234@mc.example"
    assert parsed.original_headers["To"] == "<ghost@contoso.com>"
    assert rcpt.is_hard_bounce


def test_delayed_dsn_with_rfc822_headers_part() -> None:
    parsed = dsn(samples.POSTFIX_DELAYED)
    rcpt = only(parsed)
    assert (rcpt.action, rcpt.status) == ("delayed", "4.4.1")
    assert rcpt.diagnostic == "connect to mx.slow.example[192.0.2.8]:25: Connection timed out"
    assert rcpt.is_soft_bounce
    assert not rcpt.is_hard_bounce
    assert parsed.original_message_id == "cmp_7Hq.c99@mc.example"
    assert parsed.original_headers["X-Mailcore-Campaign"] == "cmp_7Hq"


def test_multi_recipient_dsn() -> None:
    parsed = dsn(samples.SENDMAIL_MULTI)
    assert parsed.reporting_mta == "smtp.example.net"
    assert [(r.final_recipient, r.action, r.status) for r in parsed.recipients] == [
        ("ann@example.net", "failed", "5.1.1"),
        ("ben@example.net", "failed", "5.2.2"),
        ("cat@example.net", "failed", "4.7.1"),
        ("dan@example.net", "relayed", "2.0.0"),
    ]
    assert [r.is_hard_bounce for r in parsed.recipients] == [True, True, False, False]
    assert [r.is_soft_bounce for r in parsed.recipients] == [False, False, True, False]
    assert parsed.recipients[2].original_recipient == "cat@example.net"
    assert parsed.original_message_id == "cmp_M2.list@mc.example"
    assert parsed.original_headers["Subject"] == "Neuigkeiten für Sie"


def test_global_dsn_base64_utf8_addresses() -> None:
    parsed = dsn(samples.GLOBAL_DSN)
    rcpt = only(parsed)
    assert rcpt.final_recipient == "田中@example.jp"
    assert rcpt.original_recipient == "田中@example.jp"  # unitext \x{…} decoded
    assert rcpt.is_hard_bounce
    assert parsed.original_message_id == "cmp_JP.c1@mc.example"
    assert parsed.original_headers["To"] == "田中 <田中@example.jp>"


def test_lf_only_line_endings_parse_the_same() -> None:
    for text in samples.DSN_FIXTURES.values():
        assert parse_dsn(text.encode()) == parse_dsn(wire(text))


@pytest.mark.parametrize(
    "name", sorted(set(samples.ALL_FIXTURES) - {f"dsn-{k}" for k in samples.DSN_FIXTURES})
)
def test_not_a_dsn(name: str) -> None:
    assert parse_dsn(wire(samples.ALL_FIXTURES[name])) is None


def test_report_without_recipients_is_not_a_dsn() -> None:
    text = samples.EXIM_DSN.replace("Final-Recipient: rfc822;bob@example.net\n", "")
    assert parse_dsn(wire(text)) is None


def test_missing_fields_are_inferred_conservatively() -> None:
    text = samples.EXIM_DSN.replace("Action: failed\n", "Action: bounced\n").replace(
        "Status: 5.0.0\n", "Status: unknown\n"
    )
    rcpt = only(dsn(text))
    assert (rcpt.action, rcpt.status) == ("failed", "5.1.1")  # from the diagnostic
    text = text.replace("Diagnostic-Code: smtp; 550 5.1.1", "Diagnostic-Code: smtp; 550")
    assert only(dsn(text)).status == "5.0.0"
    text = "\n".join(line for line in text.split("\n") if not line.startswith("Diagnostic"))
    rcpt = only(dsn(text))
    assert (rcpt.action, rcpt.status) == ("", "")
    assert not rcpt.is_hard_bounce and not rcpt.is_soft_bounce


def test_results_are_immutable() -> None:
    parsed = dsn(samples.POSTFIX_USER_UNKNOWN)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.reporting_mta = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        parsed.original_headers["To"] = "x"  # type: ignore[index]


# --- heuristic -------------------------------------------------------------------------


def heuristic(text: str) -> DsnRecipient:
    parsed = parse_bounce_heuristic(wire(text))
    assert parsed is not None
    return only(parsed)


def test_heuristic_exim_plain_text() -> None:
    parsed = parse_bounce_heuristic(wire(samples.EXIM_PLAIN))
    assert parsed is not None
    rcpt = only(parsed)
    assert (rcpt.final_recipient, rcpt.action, rcpt.status) == (
        "carol@example.net",
        "failed",
        "5.1.1",
    )
    assert rcpt.diagnostic == (
        "550 5.1.1 <carol@example.net>: Recipient address rejected: User unknown"
    )
    assert rcpt.remote_mta == "mx.example.net"
    assert rcpt.is_hard_bounce
    assert parsed.reporting_mta is None
    assert parsed.original_message_id == "cmp_7Hq.c50@mc.example"
    assert parsed.original_headers["X-Mailcore-Campaign"] == "cmp_7Hq"


def test_heuristic_qmail_without_enhanced_code() -> None:
    rcpt = heuristic(samples.QMAIL_PLAIN)
    assert (rcpt.final_recipient, rcpt.status) == ("dave@example.com", "5.0.0")
    assert rcpt.diagnostic == "550 No such user here"


def test_heuristic_legacy_gmail() -> None:
    rcpt = heuristic(samples.GMAIL_PLAIN)
    assert (rcpt.final_recipient, rcpt.status) == ("erin@example.org", "5.1.1")


def test_heuristic_picks_the_recipient_only_when_sure() -> None:
    noisy = samples.EXIM_PLAIN.replace(
        "This is a permanent error.", "Contact help@isp.example.net. This is a permanent error."
    )
    assert heuristic(noisy).final_recipient == "carol@example.net"  # X-Failed-Recipients
    unlabelled = noisy.replace("X-Failed-Recipients: carol@example.net\n", "")
    assert heuristic(unlabelled).final_recipient == "carol@example.net"  # the original's To
    no_copy = unlabelled.split("------ This is a copy")[0]
    assert parse_bounce_heuristic(wire(no_copy)) is None  # two candidates, no tie-breaker
    several = noisy.replace(
        "X-Failed-Recipients: carol@example.net",
        "X-Failed-Recipients: carol@example.net, x@y.example",
    )
    assert parse_bounce_heuristic(wire(several)) is None


def test_heuristic_handles_real_dsns_too() -> None:
    # The human-readable part of a DSN is enough on its own.
    rcpt = heuristic(samples.POSTFIX_USER_UNKNOWN)
    assert (rcpt.final_recipient, rcpt.status) == ("jane.doe@example.org", "5.1.1")


@pytest.mark.parametrize("name", sorted(samples.NOT_CLASSIFIED))
def test_heuristic_is_conservative(name: str) -> None:
    assert parse_bounce_heuristic(wire(samples.NOT_CLASSIFIED[name])) is None


def test_heuristic_rejects_delays_and_missing_reply_codes() -> None:
    assert parse_bounce_heuristic(wire(samples.POSTFIX_DELAYED)) is None
    no_code = samples.QMAIL_PLAIN.replace("Remote host said: 550 ", "Remote host said: ")
    assert parse_bounce_heuristic(wire(no_code)) is None
    retrying = samples.GMAIL_PLAIN.replace("failed permanently", "failed, we will retry")
    assert parse_bounce_heuristic(wire(retrying)) is None
