"""Property: whatever peers send, the gateway core never raises and stays consistent.

Hypothesis drives three links with a mix of well-formed messages (of every
type, with small ids so they collide) and raw garbage, interleaved with clock
steps, polls and links going away. After every step the routing table must
agree with the sessions: every live sender is owned by an open session that
registered it, every subscription belongs to a session's listener, and every
frame the gateway sent decodes.
"""

from __future__ import annotations

from fakes import FakeClock, MemoryLink
from hypothesis import given, settings
from hypothesis import strategies as st

from sig.core.gateway import GatewayCore
from sig.core.session import Session, State
from sig.protocol import messages as w

names = st.sampled_from(["a", "b", "S", "#ch", "$gateway", "tick"])
opt_names = st.none() | names
ids = st.integers(0, 4)
data = st.sampled_from([b"", b"\x01", b"\xff", b"\xa1\x61\x61\x01"])

register = st.builds(
    w.RegisterSender,
    ids,
    names,
    st.lists(st.tuples(ids, names), max_size=3).map(tuple),
    st.lists(names, max_size=2).map(tuple),
    st.booleans(),
)
listen = st.builds(w.Listen, ids, opt_names, opt_names)
trigger = st.builds(w.Trigger, ids, data)
request = st.builds(w.Request, ids, names, names, data)
response = st.builds(w.Response, ids, st.sampled_from([0, 10]), st.just(""), data)
# The messages that change state or route come several times: they are the interesting ones.
messages = st.one_of(
    register, register, listen, listen, trigger, trigger, trigger, request, request,
    response, response,
    st.builds(w.Hello, names, st.integers(8, 300), st.sampled_from([0, 500, 1000])),
    st.builds(w.Ping, ids),
    st.builds(w.Pong, ids),
    st.builds(w.Error, ids, ids, st.just("x")),
    st.builds(w.UnregisterSender, ids),
    st.builds(w.Unlisten, ids),
    st.builds(w.Event, names, names, data),
    st.just(w.Invite()),
)  # fmt: skip

encoded = messages.map(w.encode)
bodies = st.one_of(encoded, encoded, encoded, st.binary(min_size=1, max_size=12))
steps = st.one_of(
    st.tuples(st.just("frame"), st.integers(0, 2), bodies),
    st.tuples(st.just("tick"), st.floats(0.05, 2.5), st.just(b"")),
    st.tuples(st.just("drop"), st.integers(0, 2), st.just(b"")),
)


def check_consistent(core: GatewayCore) -> None:
    for name, info in core.table.senders.items():
        owner = info.owner
        assert isinstance(owner, Session) and owner in core.sessions, name
        assert owner.state is State.OPEN and name in owner.senders.values(), name
    for session in core.sessions:
        if session.state is not State.OPEN:
            assert not session.senders and not session.listeners
        for name in session.senders.values():
            assert core.table.senders[name].owner is session
    assert core.table.subscription_count() == sum(len(s.listeners) for s in core.sessions)


@settings(max_examples=1000, deadline=None)
@given(st.lists(steps, min_size=5, max_size=60), st.lists(st.booleans(), min_size=3, max_size=3))
def test_gateway_core_survives_any_traffic(
    plan: list[tuple[str, object, bytes]], persistent: list[bool]
) -> None:
    clock = FakeClock()
    core = GatewayCore("gw", request_timeout=2.0, clock=clock)
    links = [MemoryLink(f"l{i}", persistent[i]) for i in range(3)]
    sessions = [core.attach(link) for link in links]
    for i, session in enumerate(sessions):  # most traffic should meet an open session
        core.receive(session, w.encode(w.Hello(f"peer{i}", 300, 2000)))
    for kind, arg, body in plan:
        if kind == "frame":
            assert isinstance(arg, int)
            session = sessions[arg]
            if session in core.sessions:
                core.receive(session, body)
        elif kind == "tick":
            assert isinstance(arg, float)
            clock.now += arg
            core.poll()
        else:
            assert isinstance(arg, int)
            core.detach(sessions[arg])
            links[arg] = MemoryLink(f"l{arg}-again", persistent[arg])
            sessions[arg] = core.attach(links[arg])
        check_consistent(core)
    for session in list(core.sessions):
        core.detach(session)
    assert not core.table.senders and core.table.subscription_count() == 0
    assert not core.requests.pending
