"""The pages behind links in messages: ``/u/{token}`` unsubscribes, ``/o/{token}`` is
the open pixel, ``/c/{token}/{link}`` records a click and redirects to the campaign's link
``link`` (from its link table: never a URL taken from the request).

A GET never changes anything (link scanners and previews fetch URLs): it shows a page
with a button. A POST unsubscribes: the button, and RFC 8058 one-click from the mailbox
provider (``List-Unsubscribe=One-Click``). Forged or altered tokens get 404.
"""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ..facade import Mailcore
from ..ids import iso
from ..tokens import TRACKING, UNSUBSCRIBE, TokenSigner

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


# A transparent 1×1 GIF.
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00"
    b"\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
_NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}


async def open_pixel(request: Request) -> Response:
    mc: Mailcore = request.app.state.mailcore
    numbers = TokenSigner(mc.secret_key).verify(TRACKING, request.path_params["token"], 2)
    if numbers is not None:
        await mc.store.record_engagement(
            numbers[0], numbers[1], "open", None, request.headers.get("user-agent"), iso(mc.clock())
        )
    # The pixel either way: a mail client shows no broken image for a stale link.
    return Response(PIXEL, media_type="image/gif", headers=_NO_STORE)


async def click(request: Request) -> Response:
    mc: Mailcore = request.app.state.mailcore
    numbers = TokenSigner(mc.secret_key).verify(TRACKING, request.path_params["token"], 2)
    link = request.path_params["link"]
    target = None
    if numbers is not None and link.isdigit() and len(link) < 7:
        target = await mc.store.record_engagement(
            numbers[0],
            numbers[1],
            "click",
            int(link),
            request.headers.get("user-agent"),
            iso(mc.clock()),
        )
    if not target:
        return _page("Link not valid", "<p>This link is not valid.</p>", 404)
    return RedirectResponse(target, status_code=302, headers=_NO_STORE)


ROUTES = [
    Route("/u/{token}", unsubscribe, methods=["GET", "POST"], name="unsubscribe"),
    Route("/o/{token}", open_pixel, methods=["GET"], name="open"),
    Route("/c/{token}/{link}", click, methods=["GET"], name="click"),
]
