"""A campaign from a domain with a DKIM key (mailcore.toml) goes out signed; dkimpy, an
independent verifier, accepts every message."""

from __future__ import annotations

from pathlib import Path

import dkim
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from mailcore import Mailcore, Settings, _engine
from tests.peers import aiosmtpd_server, wait_until

pytestmark = pytest.mark.anyio


async def test_campaign_messages_are_dkim_signed_and_verify(
    tmp_path: Path, database_url: str
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    (tmp_path / "acme.pem").write_text(pem)
    record = _engine.DkimSigner(
        domain="acme.example", selector="s1", private_key=pem, algorithm="ed25519-sha256"
    ).dns_record
    config = tmp_path / "mailcore.toml"
    config.write_text(
        '[dkim."acme.example"]\nselector = "s1"\n'
        f'private_key_file = "{tmp_path / "acme.pem"}"\nalgorithm = "ed25519-sha256"\n'
    )
    with aiosmtpd_server() as (port, smtp):
        settings = Settings.load(
            config,
            env={},
            database_url=database_url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            secret_key="k",
        )
        assert settings.dkim["acme.example"].selector == "s1"
        async with Mailcore.open(settings) as mc, trio.open_nursery() as nursery:
            await nursery.start(mc.run_sender)
            acct = mc.account((await mc.accounts.create("t", credit_micros=100_000)).account_id)
            await acct.contacts.import_rows(
                [{"email": f"u{i}@x.com", "firstName": f"Zoë {i}", "tags": ["t"]} for i in range(5)]
            )
            import msgspec

            from mailcore import CampaignCreate

            c = await acct.campaigns.create(
                msgspec.convert(
                    {
                        "name": "n",
                        "subject": "Hi {{firstName}}",
                        "from": {"email": "news@acme.example"},
                        "audience": {"tags": ["t"]},
                        "content": {"html": "<p>hi <a href='https://acme.example'>x</a></p>"},
                    },
                    CampaignCreate,
                )
            )
            await acct.campaigns.send(c.id)
            await wait_until(lambda: len(smtp.messages) >= 5)
            nursery.cancel_scope.cancel()

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s1._domainkey.acme.example."
        return record.encode()

    for message in smtp.messages:
        assert message.content.startswith(b"DKIM-Signature:")
        assert dkim.verify(message.content, dnsfunc=dns)
        tampered = message.content.replace(b"Subject: ", b"Subject: x", 1)
        assert not dkim.verify(tampered, dnsfunc=dns)
