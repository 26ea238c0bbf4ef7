"""DKIM signing (mailcore._engine): every signed message verifies with dkimpy."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcore import _engine as eng

DATE = "Tue, 07 Jan 2025 10:00:00 +0000"
TS = 1_736_244_000
SIGNED = (
    "from:to:subject:date:message-id:mime-version:list-unsubscribe:list-unsubscribe-post:"
    "content-type"
)


def _pem(key: Any, fmt: ser.PrivateFormat) -> str:
    return str(key.private_bytes(ser.Encoding.PEM, fmt, ser.NoEncryption()).decode())


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PKCS8 = _pem(RSA_KEY, ser.PrivateFormat.PKCS8)
RSA_PKCS1 = _pem(RSA_KEY, ser.PrivateFormat.TraditionalOpenSSL)
RSA_RECORD = b"v=DKIM1; k=rsa; p=" + base64.b64encode(
    RSA_KEY.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
)
ED_KEY = ed25519.Ed25519PrivateKey.generate()
ED_PKCS8 = _pem(ED_KEY, ser.PrivateFormat.PKCS8)
ED_RECORD = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(
    ED_KEY.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
)
KEYS = {"rsa-sha256": (RSA_PKCS8, RSA_RECORD), "ed25519-sha256": (ED_PKCS8, ED_RECORD)}


def dnsfunc(record: bytes) -> Callable[..., bytes]:
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mc1._domainkey.acme.com."
        return record

    return lookup


def verify(message: bytes, algorithm: str) -> bool:
    return bool(dkim.verify(message, dnsfunc=dnsfunc(KEYS[algorithm][1])))


def renderer(algorithm: str = "rsa-sha256", **overrides: Any) -> eng.MessageRenderer:
    kwargs: dict[str, Any] = {
        "subject": "Hello {{ firstName }} {{ customFields.plan }}",
        "preheader": "Preview {{ lastName }}",
        "html": "<html><body><h1>Hi {{ firstName }}</h1><p>{{ customFields.plan }}</p>"
        '<a href="https://acme.com/x">x</a></body></html>',
        "text": None,
        "from_email": "news@acme.com",
        "from_name": "Acme News",
        "reply_to": "help@acme.com",
        "headers": [("X-Mailcore-Campaign", "cmp_1")],
        "dkim_domain": "acme.com",
        "dkim_selector": "mc1",
        "dkim_private_key": KEYS[algorithm][0],
        "dkim_algorithm": algorithm,
    }
    kwargs.update(overrides)
    return eng.MessageRenderer(**kwargs)


RENDERERS = {alg: renderer(alg) for alg in KEYS}
TRACKED = {
    alg: renderer(alg, track_opens=True, track_clicks=True, tracking_base="https://t.acme.com")
    for alg in KEYS
}


def render(r: eng.MessageRenderer, values: dict[str, str], **kw: Any) -> bytes:
    return r.render(
        values,
        message_id=kw.pop("message_id", "m1@acme.com"),
        unsubscribe_url="https://acme.com/u/tok",
        date=DATE,
        dkim_timestamp=kw.pop("dkim_timestamp", TS),
        **kw,
    )


def sig_field(message: bytes) -> bytes:
    m = re.match(rb"DKIM-Signature:.*?\r\n(?=[^ \t])", message, re.S)
    assert m is not None
    return m.group(0)


def tags(message: bytes) -> dict[str, str]:
    value = sig_field(message).split(b":", 1)[1].decode()
    out = {}
    for part in value.split(";"):
        if part.strip():
            k, v = part.split("=", 1)
            out[k.strip()] = re.sub(r"\s+", "", v)
    return out


@pytest.mark.parametrize("algorithm", list(KEYS))
def test_rendered_messages_verify(algorithm: str) -> None:
    msg = render(RENDERERS[algorithm], {"email": "ann@x.io", "firstName": "Ann"})
    assert msg.startswith(b"DKIM-Signature: v=1; a=" + algorithm.encode())
    assert verify(msg, algorithm)
    t = tags(msg)
    assert t["h"] == SIGNED
    assert "list-unsubscribe" in t["h"].split(":")
    assert "list-unsubscribe-post" in t["h"].split(":")
    assert (t["c"], t["d"], t["s"], t["t"]) == ("relaxed/relaxed", "acme.com", "mc1", str(TS))
    assert "l" not in t
    for line in sig_field(msg)[:-2].split(b"\r\n"):
        assert len(line) <= 78
    # deterministic for a fixed timestamp (RSA PKCS#1 v1.5 and Ed25519 both are)
    assert msg == render(RENDERERS[algorithm], {"email": "ann@x.io", "firstName": "Ann"})


@pytest.mark.parametrize("algorithm", list(KEYS))
def test_batch_and_tracking_verify(algorithm: str) -> None:
    n = 40
    values = [{"email": f"u{i}@x.io", "firstName": f"N{i}"} for i in range(n)]
    msgs = TRACKED[algorithm].render_batch(
        values,
        message_ids=[f"m{i}@acme.com" for i in range(n)],
        unsubscribe_urls=[f"https://acme.com/u/{i}" for i in range(n)],
        date=DATE,
        tracking_tokens=[f"tok{i}" for i in range(n)],
        dkim_timestamp=TS,
    )
    assert len(msgs) == n
    for msg in msgs:
        assert verify(msg, algorithm)


@pytest.mark.parametrize("algorithm", list(KEYS))
def test_tampering_fails(algorithm: str) -> None:
    msg = render(RENDERERS[algorithm], {"email": "ann@x.io", "firstName": "Ann"})
    assert verify(msg, algorithm)
    for old, new in [
        (b"Subject: Hello Ann", b"Subject: Hello Bob"),
        (b'To: "Ann" <ann@x.io>', b'To: "Ann" <eve@x.io>'),
        (b'From: "Acme News"', b'From: "Acme Newz"'),
        (b"List-Unsubscribe: <https://acme.com/u/tok>", b"List-Unsubscribe: <https://e.vil/>"),
        (b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: x"),
        (b"Hi Ann", b"Hi Bob"),
    ]:
        assert old in msg, old
        assert not verify(msg.replace(old, new, 1), algorithm), old
    assert not verify(msg + b"extra line\r\n", algorithm)
    # the unsigned X- header and whitespace changes under relaxed canonicalization are fine
    assert verify(
        msg.replace(b"X-Mailcore-Campaign: cmp_1", b"X-Mailcore-Campaign: other"), algorithm
    )
    assert verify(msg.replace(b"Subject: Hello", b"Subject:   Hello"), algorithm)


@pytest.mark.parametrize("algorithm", list(KEYS))
def test_timestamp_defaults_to_now(algorithm: str) -> None:
    import time

    before = int(time.time())
    msg = render(RENDERERS[algorithm], {"email": "a@x.io"}, dkim_timestamp=None)
    assert before <= int(tags(msg)["t"]) <= int(time.time())
    assert verify(msg, algorithm)


text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from("\r\n\t =?:;"),
    max_size=120,
)


@settings(max_examples=60, deadline=None)
@given(
    algorithm=st.sampled_from(list(KEYS)),
    first=text,
    last=text,
    plan=text | st.just("x" * 1200) | st.just(("word " * 60) + "\r\n.\r\nFrom x"),
    mid=st.from_regex(r"[A-Za-z0-9._%+-]{1,60}@[a-z0-9.-]{1,30}", fullmatch=True),
)
def test_arbitrary_values_verify(
    algorithm: str, first: str, last: str, plan: str, mid: str
) -> None:
    values = {"email": "zoë@exämple.com", "firstName": first, "lastName": last}
    values["customFields.plan"] = plan
    msg = render(RENDERERS[algorithm], values, message_id=mid)
    assert verify(msg, algorithm), msg[:600]
    for line in sig_field(msg)[:-2].split(b"\r\n"):
        assert len(line) <= 78


@pytest.mark.parametrize("algorithm", list(KEYS))
def test_standalone_signer(algorithm: str) -> None:
    key = KEYS[algorithm][0]
    signer = eng.DkimSigner(domain="acme.com", selector="mc1", private_key=key, algorithm=algorithm)
    assert (signer.domain, signer.selector, signer.algorithm) == ("acme.com", "mc1", algorithm)
    assert signer.dns_record.encode() == KEYS[algorithm][1]
    assert "PRIVATE" not in repr(signer)
    unsigned = render(
        renderer(algorithm, dkim_domain=None, dkim_selector=None, dkim_private_key=None),
        {"email": "ann@x.io", "firstName": "Ann"},
    )
    assert not unsigned.startswith(b"DKIM")
    signed = signer.sign(unsigned, timestamp=TS)
    assert signed.endswith(unsigned) and verify(signed, algorithm)
    # the renderer produces exactly the standalone signature
    assert signed == render(RENDERERS[algorithm], {"email": "ann@x.io", "firstName": "Ann"})
    plain = b"From: a@acme.com\r\nTo: b@x.io\r\nSubject: hi\r\n\r\nbody  \r\n\r\n"
    batch = signer.sign_batch([unsigned, plain] * 20, timestamp=TS)
    assert batch[:2] == [signed, signer.sign(plain, timestamp=TS)]
    assert all(verify(m, algorithm) for m in batch)
    assert tags(batch[1])["h"] == "from:to:subject"
    assert signer.sign_batch([], timestamp=TS) == []


def test_rsa_pkcs1_key_and_errors() -> None:
    signer = eng.DkimSigner(domain="acme.com", selector="mc1", private_key=RSA_PKCS1)
    assert signer.algorithm == "rsa-sha256"
    assert verify(signer.sign(b"From: a@b\r\n\r\nx\r\n", timestamp=1), "rsa-sha256")

    bad_init: list[dict[str, Any]] = [
        {"private_key": "nope"},
        {"private_key": ED_PKCS8},  # Ed25519 key for RSA
        {"private_key": RSA_PKCS8, "algorithm": "ed25519-sha256"},
        {"private_key": RSA_PKCS8, "algorithm": "rsa-sha1"},
        {"private_key": RSA_PKCS8, "domain": "exämple.com"},
        {"private_key": RSA_PKCS8, "domain": "a b"},
        {"private_key": RSA_PKCS8, "selector": "s;x=1"},
        {"private_key": RSA_PKCS8, "selector": ""},
    ]
    for kw in bad_init:
        args = {"domain": "acme.com", "selector": "mc1", **kw}
        with pytest.raises(eng.EngineError):
            eng.DkimSigner(**args)
    for bad in [b"To: a@b\r\n\r\nx", b"From: a@b\nTo: c\n\nx\n", b"From: a@b\r\n\r\nx\ry\r\n"]:
        with pytest.raises(eng.EngineError):
            signer.sign(bad, timestamp=1)
    with pytest.raises(eng.EngineError):
        signer.sign(b"From: a@b\r\n\r\n", timestamp=10**12)
    with pytest.raises(eng.EngineError, match="no From"):
        signer.sign_batch([b"From: a@b\r\n\r\n", b"To: x\r\n\r\n"], timestamp=1)
    with pytest.raises(TypeError):
        signer.sign("str", timestamp=1)  # type: ignore[arg-type]

    for partial in [
        {"dkim_private_key": None},
        {"dkim_domain": None},
        {"dkim_selector": None, "dkim_private_key": None},
    ]:
        with pytest.raises(eng.EngineError, match="together"):
            renderer("rsa-sha256", **partial)
    with pytest.raises(eng.EngineError):
        renderer("rsa-sha256", dkim_algorithm="ed25519-sha256")
    with pytest.raises(eng.EngineError):
        render(RENDERERS["rsa-sha256"], {"email": "a@x.io"}, dkim_timestamp=10**12)
