"""Deterministic benchmark inputs: contact CSV files and JSON request bodies."""

from __future__ import annotations

import json
import random

CSV_HEADER = "email,firstName,lastName,tags,company,plan\n"
FIRST = ("Sarah", "Amir", "Lena", "Kofi", "Mei", "Jonas", "Ana", "Ravi", "Zoë", "Olu")
LAST = ("Chen", "Haddad", "Novak", "Mensah", "Tanaka", "Berg", "Silva", "Iyer", "Dupont")
COMPANIES = ("Acme Corp", "Globex", "Initech", "Umbrella", "Stark and Sons")
PLANS = ("free", "pro", "enterprise")
# (tag, probability): the tag mix of the demo's generated audience.
TAGS = (("newsletter", 0.8), ("product-updates", 0.5), ("beta", 0.1))


def contacts_csv(rows: int, seed: int = 7) -> bytes:
    """``rows`` valid, distinct contacts (``user<i>@example.com``) with a header row.

    Built with f-strings rather than csv.writer: no value contains a comma, quote or
    newline, and a million rows must not take longer to build than to import.
    """
    rng = random.Random(seed)
    lines = [CSV_HEADER]
    for i in range(rows):
        tags = ";".join(tag for tag, p in TAGS if rng.random() < p)
        lines.append(
            f"user{i}@example.com,{rng.choice(FIRST)},{rng.choice(LAST)},{tags},"
            f"{rng.choice(COMPANIES)},{rng.choice(PLANS)}\n"
        )
    return "".join(lines).encode()


def contact_bodies(prefix: str, count: int) -> list[bytes]:
    """JSON bodies for ``POST /v1/mail/contacts``, each with a distinct email, encoded
    up front so the load generator spends its CPU on HTTP, not on JSON."""
    return [
        json.dumps(
            {
                "email": f"{prefix}-{i}@example.com",
                "firstName": "Ada",
                "lastName": "Lovelace",
                "tags": ["newsletter", "beta"],
                "customFields": {"company": "Acme Corp", "plan": "pro"},
            },
            separators=(",", ":"),
        ).encode()
        for i in range(count)
    ]
