"""The pages behind links in messages: ``/u/{token}`` unsubscribes.

A GET never changes anything (link scanners and previews fetch URLs): it shows a page
with a button. A POST unsubscribes: the button, and RFC 8058 one-click from the mailbox
provider (``List-Unsubscribe=One-Click``). Forged or altered tokens get 404.
"""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from ..facade import Mailcore
from ..ids import iso
from ..tokens import UNSUBSCRIBE, TokenSigner

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{title}</title></head>
<body style="font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem">
<h1 style="font-size:1.4rem">{title}</h1>{body}</body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=html.escape(title), body=body),
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


async def unsubscribe(request: Request) -> HTMLResponse:
    mc: Mailcore = request.app.state.mailcore
    token = request.path_params["token"]
    numbers = TokenSigner(mc.secret_key).verify(UNSUBSCRIBE, token, 2)
    if numbers is None:
        return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
    campaign_seq, contact_seq = numbers
    if request.method == "GET":
        action = html.escape(request.url.path, quote=True)
        return _page(
            "Unsubscribe",
            f'<p>Stop receiving these emails?</p><form method="post" action="{action}">'
            '<button type="submit" style="font-size:1rem;padding:.5rem 1rem">Unsubscribe'
            "</button></form>",
        )
    await mc.store.unsubscribe_contact(contact_seq, iso(mc.clock()), campaign_seq)
    return _page("You are unsubscribed", "<p>You will not receive these emails again.</p>")


ROUTES = [Route("/u/{token}", unsubscribe, methods=["GET", "POST"], name="unsubscribe")]
