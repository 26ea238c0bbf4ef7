"""Rate limits and adaptive connection limits: the rules, with plain clock values."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailcore.config import RelayRoute, Settings
from mailcore.sending.routing import Router
from mailcore.sending.throttle import AdaptiveLimit, RateLimiter, is_throttling
from mailcore.smtp import Reply


@given(
    rate=st.floats(0.5, 1000),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=200),
)
def test_rate_limiter_never_lets_more_than_rate_and_burst_through(
    rate: float, burst: int, gaps: list[float]
) -> None:
    limiter = RateLimiter(rate, burst=burst)
    now = 0.0
    sent: list[float] = []
    for gap in gaps:
        now += gap
        sent.append(now + limiter.reserve(now))
    # Messages go out when their slot comes: nondecreasing, and in any window of length
    # T at most burst + rate*T of them.
    assert sent == sorted(sent)
    for i, start in enumerate(sent):
        for j in range(i, len(sent)):
            span = sent[j] - start
            assert j - i + 1 <= burst + rate * span + 1e-6


def test_rate_limiter_waits_and_gives_back_a_cancelled_slot() -> None:
    limiter = RateLimiter(10.0)
    assert limiter.reserve(0.0) == 0.0
    assert abs(limiter.reserve(0.0) - 0.1) < 1e-9
    limiter.cancel()
    assert abs(limiter.reserve(0.0) - 0.1) < 1e-9
    assert RateLimiter(0.0).reserve(5.0) == 0.0  # no limit


def test_adaptive_limit_halves_on_throttling_and_recovers_slowly() -> None:
    lim = AdaptiveLimit(connections=16, rate=100.0, recover_seconds=30)
    lim.throttled(100.0)
    assert (lim.current_connections, lim.current_rate) == (8, 50.0)
    lim.throttled(100.5)  # the same burst of 421s: one signal
    assert lim.current_connections == 8
    lim.throttled(102.0)
    assert lim.current_connections == 4
    assert not lim.tick(120.0)  # not quiet long enough
    assert lim.tick(132.0) and lim.current_connections == 5
    for t in range(162, 2000, 30):
        lim.tick(float(t))
    assert (lim.current_connections, lim.current_rate) == (16, 100.0)
    assert not lim.limited
    one = AdaptiveLimit(connections=1)
    one.throttled(0.0)
    assert one.current_connections == 1  # never below one


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 100)), max_size=100))
def test_adaptive_limit_stays_within_one_and_the_configured_values(
    events: list[tuple[bool, float]],
) -> None:
    lim = AdaptiveLimit(connections=8, rate=40.0, recover_seconds=5)
    now = 0.0
    for throttle, gap in events:
        now += gap
        lim.throttled(now) if throttle else lim.tick(now)
        assert 1 <= lim.current_connections <= 8
        assert 0 < lim.current_rate <= 40.0


def test_which_replies_mean_slow_down() -> None:
    assert is_throttling(Reply.of(421, "4.7.0 too many connections"))
    assert is_throttling(Reply.of(421, "closing"))
    assert is_throttling(Reply.of(450, "4.7.28 rate limited"))
    assert is_throttling(Reply.of(451, "4.3.2 system not accepting messages"))
    assert is_throttling(Reply.of(451, "4.4.5 congestion"))
    assert not is_throttling(Reply.of(451, "4.7.1 greylisted, try again later"))
    assert not is_throttling(Reply.of(450, "4.2.1 mailbox busy"))
    assert not is_throttling(Reply.of(550, "5.7.1 refused"))
    assert not is_throttling(Reply.of(451, "try later"))


def test_relays_are_chosen_by_from_domain_in_order() -> None:
    settings = Settings.load(
        env={},
        relays=(
            RelayRoute(name="a", url="smtp://a.test", from_domains=("a.test", "*.a.test")),
            RelayRoute(name="b", url="smtp://b.test", from_domains=("b.test",), connections=3),
            RelayRoute(name="any", url="smtp://any.test"),
        ),
        smtp_connections=7,
    )
    router = Router(settings)

    def names(domain: str) -> list[str]:
        return [d.key for d in router.relay_candidates(domain)]

    assert names("a.test") == ["relay:a", "relay:any"]
    assert names("news.a.test") == ["relay:a", "relay:any"]
    assert names("xa.test") == ["relay:any"]
    assert names("b.test") == ["relay:b", "relay:any"]
    limits = {d.key: d.limit.connections for d in router.destinations()}
    assert limits == {"relay:a": 7, "relay:b": 3, "relay:any": 7}


def test_a_relay_backs_off_once_per_outage() -> None:
    router = Router(Settings.load(env={}))
    dest = router.destinations()[0]
    assert dest.connect_failed(10.0) == 0.5
    assert dest.connect_failed(10.1) < 0.5  # a connect already under way: no doubling
    assert dest.connect_failed(11.0) == 1.0
    dest.connect_ok()
    assert not dest.is_down(11.0)
