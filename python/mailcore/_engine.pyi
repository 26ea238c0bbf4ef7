"""Type stubs for the Rust extension module ``mailcore._engine`` (engine/py)."""

from collections.abc import Mapping, Sequence
from typing import TypeAlias, final

__all__ = [
    "MICROS_PER_USD",
    "PRICE_PER_EMAIL_MICROS",
    "AudienceIndex",
    "DkimSigner",
    "EngineError",
    "MessageRenderer",
    "MoneyError",
    "Template",
    "TemplateError",
    "cost_micros",
    "format_micros",
    "parse_usd",
]

class EngineError(Exception):
    """Base of all engine errors."""

class TemplateError(EngineError):
    """Template compile error; ``str(e)`` is e.g. ``"unknown field 'foo' at offset 12"``."""

    field: str | None
    """The offending field path when the error is about a field, else ``None``."""
    offset: int
    """Character offset (in chars, not bytes) of the ``{{`` of the offending tag."""

class MoneyError(EngineError):
    """Money overflow, negative amount/count, or malformed decimal text."""

PRICE_PER_EMAIL_MICROS: int
MICROS_PER_USD: int

def cost_micros(count: int, unit_micros: int) -> int:
    """``count * unit_micros`` with checked i64 arithmetic; negative or overflow -> MoneyError."""

def format_micros(micros: int, decimals: int = 2) -> str:
    """Decimal USD string rounded half-up (ties away from zero) to ``decimals`` (0..=6)."""

def parse_usd(text: str) -> int:
    """Parse ``-?digits(.d{1,6})?`` into micros; anything else or overflow -> MoneyError."""

def smtp_normalize_newlines(content: bytes) -> bytes:
    """Every bare CR and LF as CRLF, ending in CRLF unless empty; ``content`` itself
    (the same object) when it already is."""

def smtp_normalize_many(contents: list[bytes]) -> tuple[list[bytes], list[bool]]:
    """Each content as :func:`smtp_normalize_newlines` gives it (the same object when
    already normalised), and whether it holds a byte above 127, in one call."""

def smtp_normalize_piece(piece: bytes) -> bytes:
    """A piece of a longer content with bare CR and LF as CRLF, nothing appended;
    ``piece`` itself when it has none."""

def smtp_data_content(content: bytes) -> bytes:
    """What follows the 354 reply to DATA: newlines normalised, dot-stuffed, and the
    ``.<CRLF>`` terminator added."""

def smtp_data_group(
    body: bytes | None, rset: bool, mail: bytes, rcpts: list[str], utf8: bool
) -> bytes | None:
    """One pipelined DATA group in one ``bytes``: ``body`` framed as by
    :func:`smtp_data_content`, ``RSET`` when ``rset``, the ``mail`` command line as given,
    ``RCPT TO:<r>`` per recipient, ``DATA``; None when a recipient cannot go on a command
    line (empty, a control character, ``<`` or ``>``, non-ASCII without ``utf8``, longer
    than 512 bytes in UTF-8, not encodable)."""

SmtpPipelineResult: TypeAlias = tuple[
    list[tuple[int, int, list[int], int, int]],
    list[bytes],
    int,
    tuple[int, int, list[int], bool] | None,
    bool,
    str,
    int | None,
    int | None,
    bytes,
]
"""What :meth:`SmtpPipelineRunner.finish` returns (a typing name only)."""

@final
class SmtpPipelineRunner:
    """One SMTP connection's way to the engine's driver thread, which runs the steady
    state of a DATA pipeline on the connection's socket with the GIL released. One thread
    per process drives every connection's run from one epoll loop, so it sleeps only
    when no connection has anything to do, not once per reply and connection.

    :meth:`start` a run, await :meth:`fileno` readable, then :meth:`finish` takes what
    it did (None while it runs). One run at a time."""

    def __init__(self) -> None: ...
    def fileno(self) -> int:
        """Readable once a run has ended, until :meth:`finish` takes it."""

    def start(
        self,
        fd: int,
        messages: Sequence[tuple[bytes, Sequence[str], bytes, bool]],
        rset: bool,
        patience: float,
    ) -> None:
        """Run the pipeline across ``messages`` (each its MAIL command line, recipients,
        content and SMTPUTF8) on the connected socket ``fd``, switched to non-blocking:
        each group the previous message's content, RSET (first: when ``rset``), MAIL,
        RCPT… and DATA, in one write. A wait for a reply or for room to write lasts at
        most ``patience`` seconds. The caller must not use or close the socket until
        :meth:`finish` returns the run. ``OSError`` when a run is under way.

        The run stops at the first thing that is not the steady state, a group's
        replies left unconsumed."""

    def finish(self) -> SmtpPipelineResult | None:
        """None while the run goes on; once it has ended, ``(finished, lines, next,
        body, rset, stop, errno, written, leftover)``:

        * ``finished``: ``(index, mail, rcpts, last, ending)`` per finished message,
          replies as indexes into ``lines``. ``ending``: 0 when DATA was refused
          (``last`` is its reply), 1 when the content went (``last`` is the final reply),
          2 when only the dot went (no valid recipient).
        * ``lines``: the distinct reply lines taken, each without its LF. Every one is a
          single-line reply other than 421.
        * ``next``: the first message whose envelope is not yet answered.
        * ``body``: ``(index, mail, rcpts, deliverable)`` of the message whose 354 came
          and whose content goes in the next group, or None.
        * ``rset``: whether the next group begins with RSET.
        * ``stop``: ``"done"``, ``"irregular"`` (a reply that is not plain, or a
          recipient that cannot be sent), ``"slow"`` (nothing within ``patience``),
          ``"eof"``, ``"write-error"``, ``"read-error"`` (``errno`` is set for these
          two) or ``"failed"`` (the engine panicked, a bug: the connection is broken).
        * ``written``: bytes of the next group already written (None: no group in
          flight).
        * ``leftover``: bytes received and not taken.
        """

@final
class Template:
    """A compiled merge-tag template (``{{ path }}`` / ``{{ path | default: "x" }}``).

    ``html=True`` compiles an HTML template: every field gets the escaping of its context
    (text, attribute value, start of a URL attribute whose scheme a value could set: a value
    with a scheme other than http, https, mailto or tel renders as
    ``about:invalid#blocked``), unquoted attribute values holding a field are quoted, and a
    field where no escaping is safe (inside a tag but not in an attribute value, in
    ``<script>``/``<style>``, in an ``on*`` attribute, in the middle of a URL scheme) is a
    ``TemplateError``."""

    def __init__(self, source: str, *, html: bool = False) -> None: ...
    @property
    def fields(self) -> list[str]:
        """Distinct field paths referenced, in order of first appearance."""
    @property
    def source(self) -> str: ...
    def render(self, values: dict[str, str], *, html: bool) -> str:
        """Substitute ``values`` (field path -> value); ``html=True`` HTML-escapes
        substitutions (for their context when compiled with ``html=True``)."""

@final
class AudienceIndex:
    """Roaring-bitmap index of contacts (u32 ids) by tag and status (0..=255)."""

    def __init__(self) -> None: ...
    def upsert(self, contact: int, status: int, tags: Sequence[str]) -> None: ...
    def upsert_many(
        self,
        contacts: Sequence[int],
        statuses: Sequence[int],
        tags: Sequence[Sequence[str]],
    ) -> None: ...
    def upsert_raw(self, contacts: bytes, statuses: bytes, tags_json: Sequence[bytes]) -> None:
        """Batch upsert from storage columns: ``contacts`` little-endian u32
        (``array('I').tobytes()``), ``statuses`` one byte each, ``tags_json[i]`` a JSON
        array of strings. Invalid input raises ``EngineError`` and changes nothing."""
    def upsert_packed(self, contacts: bytes, statuses: bytes, tags_json: bytes) -> None:
        """Batch upsert from packed storage columns (what SQLite's ``group_concat`` returns
        for a batch): ``contacts`` and ``statuses`` decimal numbers separated by ``,``,
        ``tags_json`` the rows' JSON arrays of strings one after another (whitespace between).
        Invalid input raises ``EngineError`` and changes nothing."""
    def remove(self, contact: int) -> bool: ...
    def count(
        self,
        *,
        any_tags: Sequence[str] = ...,
        all_tags: Sequence[str] = ...,
        none_tags: Sequence[str] = ...,
        statuses: Sequence[int] | None = None,
    ) -> int: ...
    def members(
        self,
        *,
        any_tags: Sequence[str] = ...,
        all_tags: Sequence[str] = ...,
        none_tags: Sequence[str] = ...,
        statuses: Sequence[int] | None = None,
    ) -> bytes:
        """Matching contact ids as little-endian u32, ascending (``array('I', b)``)."""
    def tags(self) -> list[str]: ...
    def __len__(self) -> int: ...
    def __contains__(self, contact: int, /) -> bool: ...

@final
class MessageRenderer:
    """Compiled campaign message: renders one complete RFC 5322 ``multipart/alternative``
    message (CRLF line endings, quoted-printable parts, not dot-stuffed) per recipient.

    Template errors raise ``TemplateError`` prefixed with the part name (``"subject: ..."``);
    invalid addresses, extra header names/values (CR/LF) raise ``EngineError``. ``html`` and
    ``preheader`` are HTML templates (``Template(source, html=True)``: fields escaped for
    their context). Without ``text``, the text part is derived from the HTML template (fields
    contribute their values as text). Literal text is quoted-printable encoded once, here; a
    soft line break precedes literal text that follows a substituted value.

    Tracking (off by default) is compiled once here; per message only the token is written.
    ``tracking_base`` is an absolute http(s) URL without trailing ``/``, query or fragment,
    required and validated when ``track_opens`` or ``track_clicks`` is set (else
    ``EngineError``), ignored otherwise.
    ``track_clicks`` rewrites the ``href`` of every ``<a>`` in the HTML whose value is a literal
    absolute http(s) URL (no merge tag, no ``data-mc-notrack`` attribute on the tag) to
    ``{tracking_base}/c/{token}/{link_id}``, where ``link_id`` indexes :attr:`links`; a text
    part derived from the HTML shows the tracked URLs, a given ``text`` is left as is.
    ``track_opens`` inserts a 1x1 ``<img src="{tracking_base}/o/{token}">`` before the last
    ``</body>`` (or at the end).
    """

    def __init__(
        self,
        *,
        subject: str,
        preheader: str,
        html: str,
        text: str | None,
        from_email: str,
        from_name: str | None,
        reply_to: str | None,
        headers: Sequence[tuple[str, str]] = (),
        track_opens: bool = False,
        track_clicks: bool = False,
        tracking_base: str = "",
        dkim_domain: str | None = None,
        dkim_selector: str | None = None,
        dkim_private_key: str | None = None,
        dkim_algorithm: str = "rsa-sha256",
    ) -> None:
        """``dkim_domain``, ``dkim_selector`` and ``dkim_private_key`` (PEM) together make every
        rendered message DKIM-signed (see :class:`DkimSigner`); giving only some of them, or
        an invalid key/domain/selector/algorithm, raises ``EngineError``."""
    @property
    def links(self) -> list[str]:
        """Link table: distinct tracked URLs (entity-decoded) in order of first appearance;
        a URL's index is its link id. Empty without click tracking."""
    def render(
        self,
        values: Mapping[str, str],
        *,
        message_id: str,
        unsubscribe_url: str,
        date: str,
        tracking_token: str | None = None,
        dkim_timestamp: int | None = None,
    ) -> bytes:
        """Render one message; ``values["email"]`` is required (EngineError if missing/empty).

        ``tracking_token`` (``[A-Za-z0-9_-]{1,256}``) is required when tracking is on.
        ``dkim_timestamp`` is the DKIM ``t=`` (UNIX seconds; ``None``: now); ignored unsigned."""
    def render_batch(
        self,
        values: Sequence[Mapping[str, str]],
        *,
        message_ids: Sequence[str],
        unsubscribe_urls: Sequence[str],
        date: str,
        tracking_tokens: Sequence[str] | None = None,
        dkim_timestamp: int | None = None,
    ) -> list[bytes]:
        """Render one message per recipient with the GIL released; lengths must match.

        Each message is written once, straight into its ``bytes``. On glibc, the first call
        makes the process keep freed heap memory (up to 256 MiB) for reuse instead of
        returning it to the kernel, so each batch does not fault in its memory afresh."""

@final
class LinkSigner:
    """Signed link tokens under one key: ``base64url(payload ‖ HMAC-SHA256[:16])``,
    unpadded, as ``mailcore.tokens.TokenSigner.sign_payload`` makes them."""

    def __init__(self, key: bytes) -> None: ...
    def sign_many(self, prefix: bytes, numbers: Sequence[int], head: str = "") -> list[str]:
        """``head`` + the token of ``prefix ‖ varint(n)`` for each number (0 ≤ n < 2**64),
        made with the GIL released."""

@final
class DkimSigner:
    """DKIM signer (RFC 6376, ``relaxed/relaxed``, SHA-256) of one domain and selector.

    ``algorithm`` is ``"rsa-sha256"`` (unencrypted PKCS#1 or PKCS#8 PEM, >= 1024 bits) or
    ``"ed25519-sha256"`` (RFC 8463, PKCS#8 PEM). Signed fields (``h=``): ``from to subject date
    message-id mime-version list-unsubscribe list-unsubscribe-post content-type``, those present,
    in that order. Messages must use CRLF line endings and have a ``From`` field; invalid
    configuration or messages raise ``EngineError``.
    """

    def __init__(
        self, *, domain: str, selector: str, private_key: str, algorithm: str = "rsa-sha256"
    ) -> None: ...
    @property
    def domain(self) -> str: ...
    @property
    def selector(self) -> str: ...
    @property
    def algorithm(self) -> str: ...
    @property
    def dns_record(self) -> str:
        """TXT record value for ``{selector}._domainkey.{domain}`` (``v=DKIM1; k=...; p=...``)."""
    def sign(self, message: bytes, *, timestamp: int) -> bytes:
        """``message`` with a folded ``DKIM-Signature`` field prepended (``t=timestamp``)."""
    def sign_batch(self, messages: Sequence[bytes], *, timestamp: int) -> list[bytes]:
        """Sign every message with the GIL released (large batches use every core)."""
