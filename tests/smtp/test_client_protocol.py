"""The client's sans-IO machine: reply parsing under any split, the state table, AUTH,
421, STARTTLS response injection."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcore import _engine
from mailcore.smtp import (
    NEED_DATA,
    AuthLogin,
    AuthPlain,
    Bdat,
    ClientEvent,
    ClientProtocol,
    Command,
    ConnectionClosed,
    Data,
    Ehlo,
    Greeting,
    Helo,
    LocalProtocolError,
    Mail,
    Message,
    Noop,
    Phase,
    Quit,
    Rcpt,
    RemoteProtocolError,
    Reply,
    Response,
    Rset,
    StartTls,
)
from mailcore.smtp.protocol import ReplyReader, check_address

EHLO_OK = b"250-mx.test greets you\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
EHLO_OK += b"250-SMTPUTF8\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 ENHANCEDSTATUSCODES\r\n"


def drain(proto: ClientProtocol) -> list[ClientEvent]:
    events: list[ClientEvent] = []
    for _ in range(10_000):
        event = proto.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events
    raise AssertionError("next_event never returned NEED_DATA")


def ready(ehlo: bytes = EHLO_OK) -> ClientProtocol:
    proto = ClientProtocol()
    proto.receive_data(b"220 mx.test ESMTP\r\n")
    assert drain(proto) == [Greeting(Reply(220, ("mx.test ESMTP",)))]
    proto.send(Ehlo("client.test"))
    proto.receive_data(ehlo)
    [event] = drain(proto)
    assert isinstance(event, Response) and event.reply.code == 250
    return proto


# -- replies split at any byte --------------------------------------------------------

text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), max_codepoint=0x2FFF), max_size=40
)


@st.composite
def replies(
    draw: st.DrawFn, codes: list[int], max_lines: int = 4
) -> tuple[Reply, tuple[int, int, int] | None]:
    """A reply and the enhanced code its first line starts with."""
    code = draw(st.sampled_from(codes))
    lines = draw(st.lists(text, min_size=1, max_size=max_lines))
    detail = None
    if code // 100 != 3 and draw(st.booleans()):
        detail = (code // 100, draw(st.integers(0, 999)), draw(st.integers(0, 999)))
        lines[0] = f"{detail[0]}.{detail[1]}.{detail[2]} {lines[0]}"
    elif lines[0][:1].isdigit():
        lines[0] = "x" + lines[0]
    return Reply(code, tuple(lines)), detail


def script_events(chunks: list[bytes], plan: list[Command]) -> list[ClientEvent]:
    """Feed ``chunks``; EHLO after the greeting, then the whole ``plan`` pipelined."""
    proto = ClientProtocol()
    events: list[ClientEvent] = []
    for chunk in chunks:
        proto.receive_data(chunk)
        for _ in range(100):  # sending may let buffered replies through
            batch = drain(proto)
            if not batch:
                break
            for event in batch:
                events.append(event)
                if isinstance(event, Greeting):
                    proto.send(Ehlo("client.test"))
                elif isinstance(event, Response) and isinstance(event.command, Ehlo):
                    for command in plan:
                        proto.send(command)
    return events


Drawn = tuple[Reply, tuple[int, int, int] | None]


@settings(max_examples=150, deadline=None)
@given(
    greeting=replies([220]),
    ehlo_extra=st.lists(st.sampled_from(["SIZE 5000", "8BITMIME", "X-FOO bar", "HELP"])),
    mail=replies([250, 451, 550, 552]),
    rcpts=st.lists(replies([250, 251, 450, 452, 550, 553]), min_size=1, max_size=5),
    data=replies([354, 451, 554]),
    cuts=st.lists(st.integers(0, 100_000), max_size=30),
)
def test_replies_split_anywhere_give_the_same_events(
    greeting: Drawn,
    ehlo_extra: list[str],
    mail: Drawn,
    rcpts: list[Drawn],
    data: Drawn,
    cuts: list[int],
) -> None:
    ehlo = Reply(250, ("mx.test", "PIPELINING", *ehlo_extra))
    drawn = [mail, *rcpts, data]
    stream = b"".join(r.to_bytes() for r, _ in (greeting, (ehlo, None), *drawn))
    plan: list[Command] = [Mail("a@x.test")]
    plan += [Rcpt(f"r{i}@y.test") for i in range(len(rcpts))]
    plan.append(Data())
    expected: list[ClientEvent] = [Greeting(greeting[0]), Response(Ehlo("client.test"), ehlo)]
    expected += [Response(c, r) for c, (r, _) in zip(plan, drawn, strict=True)]

    whole = script_events([stream], plan)
    assert whole == expected
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    chunks = [c for c in chunks if c]  # b"" would mean EOF
    assert script_events(chunks, plan) == expected
    assert script_events([bytes([b]) for b in stream], plan) == expected
    for event, (_, enhanced) in zip(whole[2:], drawn, strict=True):
        assert isinstance(event, Response)
        assert event.reply.enhanced == enhanced


def test_multiline_reply_and_extensions() -> None:
    proto = ready()
    assert proto.ehlo is not None
    assert proto.pipelining
    assert proto.ehlo.max_size == 1000
    assert proto.ehlo.supports("smtputf8") and proto.ehlo.supports("STARTTLS")
    assert proto.ehlo.auth_mechanisms == {"PLAIN", "LOGIN"}
    assert proto.ehlo.hostname == "mx.test"
    proto.send(Mail("a@x.test"))
    proto.receive_data(b"250-2.1.0 first\r\n250-second\r\n250 2.1.0 third\r\n")
    [event] = drain(proto)
    assert isinstance(event, Response)
    assert event.reply == Reply(250, ("2.1.0 first", "second", "2.1.0 third"))
    assert event.reply.enhanced == (2, 1, 0)
    assert event.reply.text == "2.1.0 first\nsecond\n2.1.0 third"
    assert event.reply.message == "first\nsecond\n2.1.0 third"


def test_bare_code_and_lf_only_lines_are_accepted() -> None:
    proto = ready()
    proto.send(Noop())
    proto.receive_data(b"250\n")
    [event] = drain(proto)
    assert isinstance(event, Response) and event.reply == Reply(250, ("",))
    assert event.reply.enhanced is None


def test_enhanced_code_parsing() -> None:
    assert Reply.of(550, "5.1.1 no such user").enhanced == (5, 1, 1)
    assert Reply.of(451, "4.7.1 greylisted").enhanced == (4, 7, 1)
    assert Reply.of(250, "2.0.0").enhanced == (2, 0, 0)
    assert Reply.of(250, "OK 2.0.0").enhanced is None
    assert Reply.of(250, "2.0").enhanced is None
    assert Reply.of(250, "3.0.0 nope").enhanced is None
    assert Reply.of(250, "2.0.0x").enhanced is None
    r = Reply.of(550, "5.7.1 line one\n5.7.1 line two")
    assert r.lines == ("5.7.1 line one", "5.7.1 line two")
    assert r.is_permanent and not r.is_transient and not r.is_positive
    assert Reply.of(354).is_positive and Reply.of(421).is_transient
    assert r.to_bytes() == b"550-5.7.1 line one\r\n550 5.7.1 line two\r\n"


# -- garbage ---------------------------------------------------------------------------

GARBAGE = [
    b"hello\r\n",
    b"25\r\n",
    b"2500 too long a code\r\n",
    b"250x no separator\r\n",
    b"199 not an smtp code\r\n",
    b"600 not an smtp code\r\n",
    b"-250 dash first\r\n",
    b"250-first\r\n251 other code\r\n",
    b"250 " + b"a" * 2001 + b"\r\n",
    b"250 " + b"a" * 3000,  # no line end yet, already too long
    b"250 bare\rcr\r\n",
    b"\r\n",
    b" 250 leading space\r\n",
]


@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_is_a_remote_protocol_error(garbage: bytes) -> None:
    proto = ready()
    proto.send(Noop())
    proto.receive_data(garbage)
    with pytest.raises(RemoteProtocolError):
        drain(proto)
    with pytest.raises(RemoteProtocolError):  # the machine stays dead
        proto.next_event()
    with pytest.raises(LocalProtocolError):
        proto.send(Noop())


@given(
    first=st.binary(min_size=1, max_size=1).filter(lambda b: b not in b"2345"),
    rest=st.binary(max_size=60).filter(lambda b: b"\n" not in b),
)
def test_random_garbage_lines_are_refused(first: bytes, rest: bytes) -> None:
    proto = ClientProtocol()
    proto.receive_data(first + rest + b"\r\n")
    with pytest.raises(RemoteProtocolError):
        drain(proto)


def test_eof_in_the_middle_of_a_reply() -> None:
    proto = ready()
    proto.send(Noop())
    proto.receive_data(b"250-partial\r\n250 ha")
    proto.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        drain(proto)


def test_eof_is_connection_closed() -> None:
    proto = ready()
    proto.send(Noop())
    proto.receive_data(b"")
    assert drain(proto) == [ConnectionClosed()]
    assert proto.phase is Phase.CLOSED
    assert proto.outstanding == (Noop(),)


# -- the state table -------------------------------------------------------------------


def refused(proto: ClientProtocol, command: Command) -> None:
    with pytest.raises(LocalProtocolError):
        proto.send(command)


def test_nothing_before_the_greeting() -> None:
    proto = ClientProtocol()
    refused(proto, Ehlo("client.test"))
    refused(proto, Quit())


def test_transaction_order_is_enforced() -> None:
    proto = ClientProtocol()
    proto.receive_data(b"220 hi\r\n")
    drain(proto)
    refused(proto, Mail("a@x.test"))  # before EHLO
    refused(proto, Rcpt("b@x.test"))
    refused(proto, Data())
    refused(proto, Message(b"x"))
    proto.send(Ehlo("client.test"))
    refused(proto, Mail("a@x.test"))  # EHLO ends a pipelining group: wait for it
    proto.receive_data(EHLO_OK)
    drain(proto)
    refused(proto, Rcpt("b@x.test"))
    refused(proto, Data())
    proto.send(Mail("a@x.test"))
    refused(proto, Mail("a@x.test"))  # nested MAIL
    refused(proto, Data())  # no RCPT yet
    refused(proto, Ehlo("client.test"))  # not inside a transaction
    proto.send(Rcpt("b@x.test"))
    proto.send(Rcpt("c@x.test"))
    refused(proto, Message(b"x"))  # before DATA
    proto.send(Data())
    refused(proto, Message(b"x"))  # before the 354
    refused(proto, Rset())  # DATA ends the group
    proto.receive_data(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    assert [e.reply.code for e in drain(proto) if isinstance(e, Response)] == [250, 250, 250, 354]
    assert proto.phase is Phase.BODY
    refused(proto, Quit())  # the server is reading the message
    refused(proto, Rset())
    proto.send(Message(b"hello"))
    proto.send(Mail("a@x.test"))  # the content may start a new group (RFC 2920)
    proto.receive_data(b"250 queued\r\n250 ok\r\n")
    assert len(drain(proto)) == 2
    proto.send(Quit())
    refused(proto, Noop())
    proto.receive_data(b"221 bye\r\n")
    proto.receive_data(b"")
    assert [type(e) for e in drain(proto)] == [Response, ConnectionClosed]


def test_refused_mail_ends_the_transaction() -> None:
    proto = ready(b"250 mx.test\r\n")  # no PIPELINING
    proto.send(Mail("a@x.test"))
    refused(proto, Rcpt("b@x.test"))  # one command at a time without PIPELINING
    proto.receive_data(b"550 5.7.1 go away\r\n")
    drain(proto)
    assert proto.phase is Phase.READY
    proto.send(Mail("a@x.test"))
    proto.receive_data(b"250 ok\r\n")
    drain(proto)
    proto.send(Rcpt("b@x.test"))
    proto.receive_data(b"550 no\r\n")
    drain(proto)
    proto.send(Rset())  # all recipients refused: reset instead of DATA
    proto.receive_data(b"250 ok\r\n")
    drain(proto)
    assert proto.phase is Phase.READY


def test_extensions_and_addresses_are_checked() -> None:
    plain = ready(b"250 mx.test\r\n")
    refused(plain, Mail("a@x.test", size=10))
    refused(plain, Mail("a@x.test", body_8bit=True))
    refused(plain, Mail("a@x.test", smtputf8=True))
    refused(plain, StartTls())
    refused(plain, AuthPlain("u", "p"))
    full = ready()
    refused(full, Mail("dü@x.test"))  # non-ASCII needs smtputf8
    refused(full, Mail("a@x.test>\r\nRCPT TO:<evil@x.test"))
    refused(full, Mail("a@x.test\nDATA"))
    refused(full, Ehlo("bad host"))
    assert full.send(Mail("", size=10, body_8bit=True)) == (
        b"MAIL FROM:<> SIZE=10 BODY=8BITMIME\r\n"
    )
    refused(full, Rcpt("ü@x.test"))  # the MAIL did not ask for SMTPUTF8
    refused(full, Rcpt(""))
    assert full.send(Rcpt("b@x.test")) == b"RCPT TO:<b@x.test>\r\n"
    utf8 = ready()
    assert utf8.send(Mail("dü@x.test", smtputf8=True)) == (
        "MAIL FROM:<dü@x.test> SMTPUTF8\r\n".encode()
    )
    assert utf8.send(Rcpt("ü@y.test")) == "RCPT TO:<ü@y.test>\r\n".encode()


def test_helo_session_has_no_extensions() -> None:
    proto = ClientProtocol()
    proto.receive_data(b"220 hi\r\n")
    drain(proto)
    proto.send(Ehlo("client.test"))
    proto.receive_data(b"502 5.5.1 no EHLO\r\n")
    drain(proto)
    assert proto.phase is Phase.GREETED
    refused(proto, Mail("a@x.test"))
    proto.send(Helo("client.test"))
    proto.receive_data(b"250 mx.test\r\n")
    drain(proto)
    assert proto.phase is Phase.READY and not proto.extended and not proto.pipelining


def test_refused_greeting_allows_only_quit() -> None:
    proto = ClientProtocol()
    proto.receive_data(b"554 5.3.2 not now\r\n")
    [event] = drain(proto)
    assert isinstance(event, Greeting) and event.reply.code == 554
    refused(proto, Ehlo("client.test"))
    assert proto.send(Quit()) == b"QUIT\r\n"


# -- AUTH, 421, STARTTLS ----------------------------------------------------------------


def test_auth_login_answers_the_challenges() -> None:
    proto = ready()
    assert proto.send(AuthLogin("user", "sëcret")) == b"AUTH LOGIN\r\n"
    proto.receive_data(b"334 VXNlcm5hbWU6\r\n")
    assert drain(proto) == []
    assert proto.data_to_send() == base64.b64encode(b"user") + b"\r\n"
    assert proto.data_to_send() == b""
    proto.receive_data(b"334 UGFzc3dvcmQ6\r\n")
    assert drain(proto) == []
    assert proto.data_to_send() == base64.b64encode("sëcret".encode()) + b"\r\n"
    proto.receive_data(b"235 2.7.0 ok\r\n")
    [event] = drain(proto)
    assert isinstance(event, Response) and event.reply.code == 235
    assert proto.authenticated
    refused(proto, AuthPlain("user", "x"))
    assert "sëcret" not in repr(AuthLogin("user", "sëcret"))


def test_auth_plain_initial_response_and_cancel() -> None:
    proto = ready()
    out = proto.send(AuthPlain("user", "pw"))
    assert out == b"AUTH PLAIN " + base64.b64encode(b"\0user\0pw") + b"\r\n"
    proto.receive_data(b"334 \r\n")  # a server that ignored the initial response
    drain(proto)
    assert proto.data_to_send() == base64.b64encode(b"\0user\0pw") + b"\r\n"
    proto.receive_data(b"334 \r\n")  # and asks again: cancel
    drain(proto)
    assert proto.data_to_send() == b"*\r\n"
    proto.receive_data(b"501 5.7.0 cancelled\r\n")
    [event] = drain(proto)
    assert isinstance(event, Response) and event.reply.code == 501
    assert not proto.authenticated


def test_421_answers_every_pipelined_command() -> None:
    proto = ready()
    plan: list[Command] = [Mail("a@x.test"), Rcpt("b@x.test"), Rcpt("c@x.test"), Data()]
    for command in plan:
        proto.send(command)
    proto.receive_data(b"250 ok\r\n421 4.3.2 shutting down\r\n250 ignored\r\n")
    events = drain(proto)
    assert [(e.command, e.reply.code) for e in events if isinstance(e, Response)] == [
        (plan[0], 250),
        (plan[1], 421),
        (plan[2], 421),
        (plan[3], 421),
    ]
    assert proto.phase is Phase.CLOSING
    refused(proto, Quit())
    proto.receive_data(b"")
    assert drain(proto) == [ConnectionClosed()]


def test_data_after_the_starttls_reply_is_an_injection() -> None:
    proto = ready()
    proto.send(StartTls())
    proto.receive_data(b"220 2.0.0 go ahead\r\n250-injected\r\n")
    with pytest.raises(RemoteProtocolError, match="injection"):
        drain(proto)


def test_starttls_resets_the_session() -> None:
    proto = ready()
    proto.send(StartTls())
    proto.receive_data(b"220 2.0.0 go ahead\r\n")
    drain(proto)
    assert proto.phase is Phase.GREETED and proto.ehlo is None and proto.starttls_done
    refused(proto, Mail("a@x.test"))
    proto.send(Ehlo("client.test"))
    proto.receive_data(EHLO_OK)
    drain(proto)
    refused(proto, StartTls())


def test_unsolicited_data_is_bounded() -> None:
    proto = ready()
    proto.receive_data(b"250 " + b"x" * 70_000)
    with pytest.raises(RemoteProtocolError):
        drain(proto)


# -- one pipelined group per message ------------------------------------------------------

EHLO_NO_PIPELINING = b"250-mx.test\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"
ADDRESSES = ["a@b.test", "", "ünï@b.test", "x\r\nDATA@b.test", "<evil>@b.test", "c@d.test"]


def reach(where: str, pipelining: bool) -> ClientProtocol:
    """A machine in one of the states a sender meets between messages."""
    proto = ready(EHLO_OK if pipelining else EHLO_NO_PIPELINING)

    def transaction(data_reply: bytes) -> None:
        for command in (Mail("s@b.test"), Rcpt("r@b.test"), Data()):
            proto.send(command)
            if not pipelining:
                proto.receive_data(b"354 go\r\n" if isinstance(command, Data) else b"250 ok\r\n")
                drain(proto)
        if pipelining:
            proto.receive_data(b"250 ok\r\n250 ok\r\n" + data_reply)
            drain(proto)

    if where == "body":  # the 354 came: the content is due
        transaction(b"354 go\r\n")
    elif where == "data-refused":  # back to ready after a refused DATA
        transaction(b"554 no\r\n")
    elif where == "awaiting":  # sent, the replies not read
        proto.send(Mail("s@b.test"))
        if pipelining:
            proto.send(Rcpt("r@b.test"))
    elif where == "mail-refused":
        proto.send(Mail("s@b.test"))
        proto.receive_data(b"550 no\r\n")
        drain(proto)
    return proto


def state(proto: ClientProtocol) -> tuple[object, ...]:
    return (
        proto.phase,
        proto.outstanding,
        proto._need_rset,
        proto._txn_failed,
        proto._txn_utf8,
        proto._chunk_cr,
        proto._chunk_crlf,
        dict(proto._clean),
    )


@settings(max_examples=400, deadline=None)
@given(
    where=st.sampled_from(["ready", "body", "data-refused", "awaiting", "mail-refused"]),
    pipelining=st.booleans(),
    body=st.one_of(st.none(), st.binary(max_size=40)),
    rset=st.booleans(),
    sender=st.sampled_from(ADDRESSES),
    rcpts=st.lists(st.sampled_from(ADDRESSES), max_size=3),
    size=st.one_of(st.none(), st.integers(-1, 2000)),
    body_8bit=st.booleans(),
    smtputf8=st.booleans(),
)
def test_a_transaction_group_is_its_commands_sent_in_turn_or_nothing(
    where: str,
    pipelining: bool,
    body: bytes | None,
    rset: bool,
    sender: str,
    rcpts: list[str],
    size: int | None,
    body_8bit: bool,
    smtputf8: bool,
) -> None:
    """send_transaction gives the bytes and the state of send() on each command in turn;
    where send() would refuse one of them, it refuses and leaves the machine untouched."""
    mail = Mail(sender, size=size, body_8bit=body_8bit, smtputf8=smtputf8)
    message = Message(body) if body is not None else None
    commands: list[Command] = [
        *([message] if message is not None else []),
        *([Rset()] if rset else []),
        mail,
        *(Rcpt(r) for r in rcpts),
        Data(),
    ]
    one_by_one = reach(where, pipelining)
    try:
        expected: bytes | None = b"".join([one_by_one.send(c) for c in commands])
    except LocalProtocolError:
        expected = None
    grouped = reach(where, pipelining)
    before = state(grouped)
    if expected is None:
        with pytest.raises(LocalProtocolError):
            grouped.send_transaction(mail, [Rcpt(r) for r in rcpts], body=message, rset=rset)
        assert state(grouped) == before
    else:
        got = grouped.send_transaction(mail, [Rcpt(r) for r in rcpts], body=message, rset=rset)
        assert got == expected
        assert state(grouped) == state(one_by_one)


def test_a_sender_pipelines_one_group_per_message() -> None:
    proto = ready()
    first = proto.send_transaction(Mail("s@b.test"), [Rcpt("r@b.test")])
    assert first == b"MAIL FROM:<s@b.test>\r\nRCPT TO:<r@b.test>\r\nDATA\r\n"
    proto.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert [e.reply.code for e in drain(proto) if isinstance(e, Response)] == [250, 250, 354]
    second = proto.send_transaction(
        Mail("s@b.test"), [Rcpt("q@b.test")], body=Message(b"Hi\n.dot\r\n"), rset=False
    )
    assert second == (b"Hi\r\n..dot\r\n.\r\nMAIL FROM:<s@b.test>\r\nRCPT TO:<q@b.test>\r\nDATA\r\n")
    proto.receive_data(b"250 queued\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    events = drain(proto)
    assert [type(e.command).__name__ for e in events if isinstance(e, Response)] == [
        "Message",
        "Mail",
        "Rcpt",
        "Data",
    ]
    assert proto.phase is Phase.BODY


# -- a pipelined group's replies in one call ------------------------------------------------

EHLO_CHUNKING = EHLO_OK.replace(b"250 ENHANCEDSTATUSCODES", b"250-CHUNKING\r\n250 ENHANCED")

Outcome = tuple[object, ...]


class Feed:
    """A machine that has sent ``plan``, reading ``stream`` in ``chunks``, then EOF."""

    def __init__(self, plan: list[Command], chunks: list[bytes]) -> None:
        self.commands = len(plan)  # each gets one reply (or the connection closes)
        self.proto = ready(EHLO_CHUNKING)
        for command in plan:
            self.proto.send(command)
        self.chunks = iter(chunks)

    def more(self) -> None:
        self.proto.receive_data(next(self.chunks, b""))

    def event(self) -> ClientEvent:
        while (event := self.proto.next_event()) is NEED_DATA:
            self.more()
        return event


def answered(feed: Feed, sizes: list[int] | None) -> list[Outcome]:
    """Every reply, read one event at a time (``sizes`` None) or in groups of the sizes
    drawn through next_replies (one event at a time where it says None), as the client
    does; then how the reading ended, and the machine's state."""
    got: list[Outcome] = []
    groups = iter(sizes or ())
    try:
        while len(got) < feed.commands:
            count = min(next(groups, 1), feed.commands - len(got))
            replies = feed.proto.next_replies(count) if sizes is not None else None
            for _ in range(10_000):
                if replies is not NEED_DATA:
                    break
                assert 0 <= feed.proto.ready < count
                feed.more()
                replies = feed.proto.next_replies(count)
            assert replies is not NEED_DATA
            if replies is not None:
                got += [("reply", r.code, r.lines) for r in replies]
                continue
            for _ in range(count):
                event = feed.event()
                if isinstance(event, ConnectionClosed):
                    return [*got, ("closed",), final(feed.proto)]
                assert isinstance(event, Response)
                got.append(("reply", event.reply.code, event.reply.lines))
    except RemoteProtocolError:
        got.append(("remote error",))
    return [*got, final(feed.proto)]


def final(proto: ClientProtocol) -> Outcome:
    return (*state(proto), proto.ehlo, proto.starttls_done, proto.authenticated)


GROUP_CODES = [250, 251, 334, 354, 421, 450, 451, 452, 550, 552, 554]
# Mostly one line each, as servers answer a transaction, so that whole groups are too.
group_replies = st.one_of(replies(GROUP_CODES, max_lines=1), replies(GROUP_CODES))


@settings(max_examples=1000, deadline=None)
@given(
    groups=st.lists(
        st.tuples(st.booleans(), st.integers(1, 3), st.sampled_from(["data", "bdat", "none"])),
        min_size=1,
        max_size=3,
    ),
    tail=st.sampled_from([None, None, Noop(), Quit()]),
    alone=st.sampled_from([None] * 5 + [Ehlo("c.test"), StartTls(), AuthLogin("u", "p")]),
    data=st.data(),
    garbage=st.sampled_from([None, None, None, b"hello\r\n", b"250\rx\r\n", b"2x0 a\r\n"]),
    garbage_at=st.integers(0, 16),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
    sizes=st.lists(st.integers(1, 6), max_size=12),
)
def test_replies_taken_in_groups_are_the_replies_taken_one_by_one(
    groups: list[tuple[bool, int, str]],
    tail: Command | None,
    alone: Command | None,
    data: st.DataObject,
    garbage: bytes | None,
    garbage_at: int,
    cuts: list[int],
    sizes: list[int],
) -> None:
    """next_replies gives what next_event gives, leaves the machine in the same state,
    and fails where it fails, whatever the commands (transactions, or one that is not
    part of one), the replies (multi-line, 421, 334, garbage, EOF too early) and however
    they are split: a sender can read a group in one call."""
    plan: list[Command] = []
    for rset, rcpts, kind in groups:
        plan += [Rset()] * rset + [Mail("s@b.test")]
        plan += [Rcpt(f"r{i}@b.test") for i in range(rcpts)]
        if kind == "bdat":
            plan.append(Bdat(b"Hi\r\n"))
        else:  # the content waits for the 354, the envelope for its replies
            plan += [Data()] * (kind == "data")
            break
    if tail is not None and not isinstance(plan[-1], Data):  # after DATA: only the content
        plan.append(tail)
    if alone is not None:  # a command that is sent alone, its reply awaited
        plan = [alone]
    # A reply per command (334s and 421s aside), or fewer: EOF comes too early.
    count = max(0, len(plan) - data.draw(st.sampled_from([0, 0, 0, 1, 2])))
    drawn = data.draw(st.lists(group_replies, min_size=count, max_size=count + 1))
    lines = [r.to_bytes() for r, _ in drawn]
    if garbage is not None:
        lines.insert(min(garbage_at, len(lines)), garbage)
    stream = b"".join(lines)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    chunks = [c for c in chunks if c]  # b"" would mean EOF
    one_by_one = answered(Feed(plan, chunks), None)
    assert answered(Feed(plan, chunks), sizes) == one_by_one
    assert answered(Feed(plan, [stream]), [len(plan)]) == one_by_one


def test_a_group_of_plain_replies_is_taken_in_one_call() -> None:
    proto = ready(EHLO_CHUNKING)
    proto.send_transaction(Mail("s@b.test"), [Rcpt("r@b.test"), Rcpt("q@b.test")])
    proto.receive_data(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n")
    assert proto.next_replies(4) is NEED_DATA
    assert proto.ready == 2
    proto.receive_data(b"550 5.1.1 no such user\r\n354 go")
    assert proto.next_replies(4) is NEED_DATA
    assert proto.ready == 3
    proto.receive_data(b"\r\n")
    got = proto.next_replies(4)
    assert isinstance(got, list)
    assert [(r.code, r.enhanced) for r in got] == [
        (250, (2, 1, 0)),
        (250, (2, 1, 5)),
        (550, (5, 1, 1)),
        (354, None),
    ]
    assert proto.phase is Phase.BODY and not proto.outstanding
    # A 421 closes the session: that goes through next_event, which answers every
    # command in flight with it.
    proto.send_transaction(Mail("s@b.test"), [Rcpt("r@b.test")], body=Message(b"Hi\r\n"))
    proto.receive_data(b"250 2.0.0 queued\r\n421 4.3.2 closing\r\n")
    assert proto.next_replies(4) is None
    assert [e.reply.code for e in drain(proto) if isinstance(e, Response)] == [250, 421, 421, 421]
    assert proto.phase is Phase.CLOSING
    # The reader's own word: a 421 is never taken in bulk, even one seen before.
    reader = ReplyReader()
    reader.feed(b"421 4.3.2 bye\r\n250 ok\r\n")
    assert [r.code for r in (reader.next_reply(), reader.next_reply()) if r] == [421, 250]
    reader.feed(b"250 ok\r\n421 4.3.2 bye\r\n")
    assert reader.take(2) is None
    assert reader.take(1) == [Reply(250, ("ok",))]


@settings(max_examples=500, deadline=None)
@given(
    address=st.one_of(
        st.text(max_size=20),
        st.text(alphabet=st.sampled_from("ab@.\r\n\x00\x1f\x7f<> ü\ud800"), max_size=12),
        st.integers(500, 520).map(lambda n: "a" * (n - 7) + "@b.test"),
        st.integers(250, 260).map(lambda n: "ü" * n + "@b.test"),
    ),
    utf8=st.booleans(),
)
def test_the_engine_refuses_exactly_the_recipients_check_address_refuses(
    address: str, utf8: bool
) -> None:
    """The group is built in the engine (one buffer); the recipients it refuses are the
    ones check_address refuses, so the machine's word is the same either way."""
    try:
        check_address(address, utf8=utf8)
    except (LocalProtocolError, UnicodeEncodeError):
        allowed = False
    else:
        allowed = True
    group = _engine.smtp_data_group(None, False, b"MAIL FROM:<>\r\n", [address], utf8)
    assert (group is not None) == allowed
    if allowed:
        assert group == f"MAIL FROM:<>\r\nRCPT TO:<{address}>\r\nDATA\r\n".encode()
