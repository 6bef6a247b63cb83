"""ACLs, owned names and their enforcement in the gateway core, on the fake clock.

The matcher (sig.core.acl), the claims store (sig.core.claims), and every
refusal path of the core (sig.core.access) driven through frames on memory
links, with principals set as authentication would set them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tomllib
from fakes import FakeClock, MemoryLink

from sig.core.acl import ALLOW_ALL, NOTHING, OPEN, Acl, AclConfigError, Policy, parse_entry
from sig.core.claims import Claims, owner_key
from sig.core.gateway import GatewayCore
from sig.core.principals import ANONYMOUS, Principal
from sig.core.session import Session
from sig.errors import ErrorCode
from sig.protocol import messages as w
from sig.protocol.data import pack, unpack
from sig.routers import claims_file

ROOT = Path(__file__).resolve().parents[2]
ALICE = Principal("alice", "user")
BOB = Principal("bob", "user")

HOME: dict[str, Any] = {
    "anonymous": {},
    "users": {
        "sensor1": {"own": ["sensor-1"]},
        "dash": {"listen": ["*"], "request": [["$gateway", "stats"]]},
        "ctl": {"listen": [["pump", "*"]], "request": [["pump", "set_speed"]]},
        "root": {"admin": True, "own": ["*"], "listen": ["*"], "request": ["*"]},
    },
    "devices": {"pumps": {"own": ["pump"]}},
}


# --- the matcher --------------------------------------------------------------


def test_patterns_are_shell_style_and_case_sensitive() -> None:
    acl = parse_entry("t", {"own": ["sensor-*", "pump?"], "listen": [["s[12]", "t*"]]})
    assert acl.may_own("sensor-1") and acl.may_own("sensor-") and acl.may_own("pump2")
    assert not acl.may_own("Sensor-1") and not acl.may_own("pump") and not acl.may_own("pump12")
    assert acl.may_see("s1", "temp") and acl.may_see("s2", "t") and not acl.may_see("s3", "temp")
    assert not acl.may_see("s1", "humidity")


def test_a_listen_with_wildcards_is_allowed_when_some_rule_can_match() -> None:
    acl = parse_entry("t", {"listen": [["sensor-*", "temp"], ["*", "#alarm"]]})
    assert acl.may_listen(None, None)  # then filtered at delivery
    assert acl.may_listen("sensor-1", None) and acl.may_listen("pump", None)  # pump's #alarm
    assert not parse_entry("t", {"listen": ["sensor-*"]}).may_listen("pump", None)
    assert acl.may_listen(None, "#alarm") and not acl.may_listen(None, "#other")
    assert acl.may_listen("sensor-1", "temp") and not acl.may_listen("sensor-1", "hum")
    assert not NOTHING.may_listen(None, None) and not NOTHING.may_listen("a", "b")


def test_connect_and_disconnect_are_seen_by_who_may_listen_to_the_sender() -> None:
    acl = parse_entry("t", {"listen": [["pump", "status"]]})
    assert acl.may_see("pump", "#connect") and acl.may_see("pump", "#disconnect")
    assert not acl.may_see("valve", "#connect")
    assert not acl.may_see("pump", "speed")


def test_a_bare_sender_pattern_means_every_event_or_method() -> None:
    acl = parse_entry("t", {"listen": ["pump"], "request": ["pump"]})
    assert acl.listen == (("pump", "*"),) and acl.request == (("pump", "*"),)
    assert acl.may_request("pump", "anything") and not acl.may_request("valve", "x")


def test_no_acl_table_allows_everything_and_one_table_denies_by_default() -> None:
    assert OPEN.acl_for(ANONYMOUS) is ALLOW_ALL and OPEN.acl_for(ALICE) is ALLOW_ALL
    policy = Policy.from_table({"users": {"alice": {"own": ["a"]}}})
    assert policy.acl_for(ALICE).may_own("a")
    assert policy.acl_for(BOB) is NOTHING and policy.acl_for(ANONYMOUS) is NOTHING
    assert not policy.has_entry(BOB) and policy.has_entry(ALICE)


def test_devices_use_their_entry_a_default_device_the_anonymous_one() -> None:
    policy = Policy.from_table(HOME)
    assert policy.acl_for(Principal("pumps", "device")).may_own("pump")
    assert policy.acl_for(Principal("device:/dev/ttyS0", "device")) == policy.anonymous
    assert policy.acl_for(Principal("valves", "device")) is NOTHING  # named, no entry
    assert policy.acl_for(Principal("sensor1", "certificate")).may_own("sensor-1")


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ("nope", "must be a table"),
        ({"user": {}}, "unknown key"),
        ({"users": {"a": {"own": "x"}}}, "own must be a list"),
        ({"users": {"a": {"listen": [["a"]]}}}, r"listen must be a list .*\['a'\]"),
        ({"users": {"a": {"request": [1]}}}, "request must be a list"),
        ({"users": {"a": {"admin": 1}}}, "admin must be true or false"),
        ({"users": {"a": {"publish": []}}}, r"\[acl.users.a\]: unknown key\(s\) publish"),
        ({"max_claims": -1}, "max_claims"),
    ],
)
def test_a_bad_acl_table_is_named(table: Any, match: str) -> None:
    with pytest.raises(AclConfigError, match=match):
        Policy.from_table(table)


def test_the_home_example_loads_and_says_what_the_issue_asks() -> None:
    doc = tomllib.loads((ROOT / "examples" / "acl-home.toml").read_text())
    policy = Policy.from_table(doc["acl"])
    sensor = policy.acl_for(Principal("sensor-kitchen", "user"))
    assert sensor.may_own("sensor-kitchen") and not sensor.may_own("sensor-hall")
    assert not sensor.may_own("pump")
    dash = policy.acl_for(Principal("dashboard", "user"))
    assert dash.may_listen(None, None) and dash.may_see("pump", "speed")
    assert dash.may_see("sensor-hall", "#connect") and not dash.may_request("pump", "set_speed")
    ctl = policy.acl_for(Principal("controller", "user"))
    assert ctl.may_request("pump", "set_speed")
    others = [policy.acl_for(Principal(n, "user")) for n in policy.users if n != "controller"]
    assert others and not any(a.may_request("pump", "set_speed") for a in others)
    anon = policy.acl_for(ANONYMOUS)
    assert not anon.may_own("x") and not anon.may_listen(None, None)
    assert not anon.may_request("pump", "set_speed") and not anon.admin
    pumps = [s for s in doc["serial"] if s.get("principal") == "pumps"]
    assert pumps and pumps[0]["names"] == ["pump"]


# --- the claims store -----------------------------------------------------------


def test_claims_first_registration_wins_and_only_the_owner_releases() -> None:
    saved: list[dict[str, str]] = []
    claims = Claims(save=lambda held: saved.append(dict(held)), max_per_principal=2)
    assert claims.refusal("s", ALICE, True) is None
    assert claims.claim("s", ALICE) and not claims.claim("s", BOB)
    assert claims.owner("s") == "user:alice" and saved == [{"s": "user:alice"}]
    assert claims.refusal("s", ALICE, True) is None
    assert claims.refusal("s", BOB, True) == "sender name 's' is owned by another principal"
    assert claims.refusal("s", ANONYMOUS, False) is not None  # anonymous cannot take it either
    assert not claims.release("s", BOB) and claims.owner("s") == "user:alice"
    assert claims.release("s", ALICE) and claims.owner("s") is None and saved[-1] == {}
    claims.claim("a", ALICE)
    claims.claim("b", ALICE)
    assert claims.count("user:alice") == 2
    assert "already owns 2 sender names" in (claims.refusal("c", ALICE, True) or "")
    assert claims.refusal("c", BOB, True) is None
    assert claims.release("a") and claims.count("user:alice") == 1  # an admin's release


def test_devices_and_users_do_not_share_owner_keys() -> None:
    assert owner_key(Principal("x", "device")) == "device:x"
    assert owner_key(Principal("x", "user")) == owner_key(Principal("x", "certificate"))


def test_the_state_file_round_trips_atomically_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert claims_file.load(path) == {}  # not there yet: nothing claimed
    claims = claims_file.open_claims(path)
    claims.claim("pump", Principal("pumps", "device"))
    assert json.loads(path.read_text()) == {"version": 1, "claims": {"pump": "device:pumps"}}
    assert claims_file.open_claims(path).owner("pump") == "device:pumps"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temporary left
    for text in ("{", '{"version": 2, "claims": {}}', '{"version": 1, "claims": {"a": 1}}', "[]"):
        path.write_text(text)
        with pytest.raises(claims_file.StateFileError, match=str(path)):
            claims_file.load(path)


# --- enforcement in the core ---------------------------------------------------


@pytest.fixture
def core() -> GatewayCore:
    gw = GatewayCore("gw", request_timeout=5.0, clock=FakeClock())
    gw.access.install(Policy.from_table(HOME))
    return gw


def opened(
    core: GatewayCore, name: str, principal: Principal = ANONYMOUS, persistent: bool = False
) -> tuple[MemoryLink, Session]:
    link = MemoryLink(f"link-{name}", persistent=persistent)
    session = core.attach(link)
    core.receive(session, w.encode(w.Hello(name, 4096, 0)))
    session.principal = principal  # what authentication does at HELLO
    link.take()
    return link, session


def send(core: GatewayCore, session: Session, *msgs: w.Message) -> None:
    for msg in msgs:
        core.receive(session, w.encode(msg))


def errors(link: MemoryLink) -> list[w.Error]:
    return [m for m in link.take() if isinstance(m, w.Error)]


def register(name: str, ref: int = 1, events: tuple[str, ...] = ("e",)) -> w.RegisterSender:
    events_ = tuple((ref * 10 + i, e) for i, e in enumerate(events))
    return w.RegisterSender(ref, name, events_, ("m", "set_speed"))


def test_registering_outside_the_acl_is_not_authorised_and_counted(core: GatewayCore) -> None:
    link, s = opened(core, "s1", Principal("sensor1", "user"))
    send(core, s, register("pump"))
    [err] = errors(link)
    assert err.code == ErrorCode.NOT_AUTHORISED and err.ref == 1
    assert err.message == "user 'sensor1' may not own sender name 'pump' (no 'own' pattern matches)"
    send(core, s, register("sensor-1", 2))
    assert [type(m) for m in link.take()] == [w.SenderRegistered]
    assert core.table.sender("sensor-1") and not core.table.sender("pump")
    stats = core.stats()
    assert stats["acl_refusals"] == 1 and stats["acl_refusals_own"] == 1
    assert s.protocol_errors == 0  # a refusal, not a breach


def test_anonymous_gets_nothing_once_acls_are_configured(core: GatewayCore) -> None:
    link, s = opened(core, "anon")
    send(core, s, register("x"), w.Listen(5, None, None), w.Request(7, "pump", "set_speed", b""))
    got = link.take()
    assert [(m.code, m.ref) for m in got if isinstance(m, w.Error)] == [
        (ErrorCode.NOT_AUTHORISED, 1),
        (ErrorCode.NOT_AUTHORISED, 5),
    ]
    [resp] = [m for m in got if isinstance(m, w.Response)]
    assert resp.status == ErrorCode.NOT_AUTHORISED  # before any lookup: no probing of names
    assert (
        resp.message == "anonymous may not request 'pump' 'set_speed' (no 'request' rule matches)"
    )
    assert core.stats()["acl_refusals"] == 3


def test_requests_outside_the_acl_are_refused_and_allowed_ones_go_through(
    core: GatewayCore,
) -> None:
    pump_link, pump = opened(core, "pump", Principal("root", "user"))
    send(core, pump, register("pump"))
    pump_link.take()
    dash_link, dash = opened(core, "dash", Principal("dash", "user"))
    ctl_link, ctl = opened(core, "ctl", Principal("ctl", "user"))
    send(core, dash, w.Request(1, "pump", "set_speed", pack(9999)))
    [resp] = dash_link.take()
    assert isinstance(resp, w.Response) and resp.status == ErrorCode.NOT_AUTHORISED
    assert "user 'dash' may not request 'pump' 'set_speed'" in resp.message
    assert not pump_link.take()  # the handler never saw it
    send(core, ctl, w.Request(2, "pump", "set_speed", pack(3)))
    [fwd] = pump_link.take()
    assert isinstance(fwd, w.Request) and fwd.method == "set_speed"
    assert core.stats()["acl_refusals_request"] == 1


def test_a_broadcast_listener_sees_only_what_its_acl_allows(core: GatewayCore) -> None:
    ctl_link, ctl = opened(core, "ctl", Principal("ctl", "user"))
    dash_link, dash = opened(core, "dash", Principal("dash", "user"))
    send(core, ctl, w.Listen(1, None, None))
    send(core, dash, w.Listen(1, None, None))
    assert [type(m) for m in ctl_link.take()] == [w.Listening]
    dash_link.take()
    root_link, root = opened(core, "root", Principal("root", "user"))
    send(core, root, register("pump", 1, ("speed",)), register("valve", 2, ("open",)))
    root_link.take()
    send(core, root, w.Trigger(10, pack(1)), w.Trigger(20, pack(2)))
    seen = [(m.sender, m.event) for m in ctl_link.take() if isinstance(m, w.Event)]
    assert seen == [("pump", "#connect"), ("pump", "speed")]  # nothing of valve
    assert [(m.sender, m.event) for m in dash_link.take() if isinstance(m, w.Event)] == [
        ("pump", "#connect"),
        ("valve", "#connect"),
        ("pump", "speed"),
        ("valve", "open"),
    ]
    send(core, root, w.UnregisterSender(2), w.UnregisterSender(1))
    gone = [(m.sender, m.event) for m in ctl_link.take() if isinstance(m, w.Event)]
    assert gone == [("pump", "#disconnect")]


def test_in_process_listeners_and_requests_are_trusted(core: GatewayCore) -> None:
    got: list[tuple[str, str]] = []
    core.endpoints.add_listener(lambda info, data: got.append((info["sender"], info["event"])))
    link, s = opened(core, "root", Principal("root", "user"))
    send(core, s, register("valve", 1, ("open",)))
    send(core, s, w.Trigger(10, pack(1)))
    assert ("valve", "open") in got
    done: list[tuple[int, str, bytes]] = []
    core.start_request("$gateway", "links", pack(None), lambda *a: done.append(a))
    assert done[0][0] == ErrorCode.OK


def test_gateway_introspection_needs_admin_except_stats(core: GatewayCore) -> None:
    dash_link, dash = opened(core, "dash", Principal("dash", "user"))
    for rid, method in enumerate(("senders", "links", "release", "stats"), 1):
        params = pack({"name": "x"}) if method == "release" else b""
        send(core, dash, w.Request(rid, "$gateway", method, params))
    answers = {m.request_id: m for m in dash_link.take() if isinstance(m, w.Response)}
    assert [answers[i].status for i in (1, 2, 3)] == [ErrorCode.NOT_AUTHORISED] * 3
    assert answers[1].message == "user 'dash' may not call $gateway senders (needs admin = true)"
    assert answers[4].status == ErrorCode.OK and unpack(answers[4].data)["acl_refusals_admin"] == 3
    anon_link, anon = opened(core, "anon")  # the anonymous entry: stats too
    send(core, anon, w.Request(1, "$gateway", "stats", b""))
    [resp] = anon_link.take()
    assert isinstance(resp, w.Response) and resp.status == ErrorCode.OK
    root_link, root = opened(core, "root", Principal("root", "user"))
    send(core, root, w.Request(1, "$gateway", "links", b""))
    [resp] = root_link.take()
    assert isinstance(resp, w.Response) and resp.status == ErrorCode.OK
    assert {row["peer"] for row in unpack(resp.data)} == {"dash", "anon", "root"}


def test_without_an_entry_even_stats_is_refused() -> None:
    gw = GatewayCore("gw", clock=FakeClock())
    gw.access.install(Policy.from_table({"users": {"a": {}}}))
    link, s = opened(gw, "anon")
    send(gw, s, w.Request(1, "$gateway", "stats", b""))
    [resp] = link.take()
    assert isinstance(resp, w.Response) and resp.status == ErrorCode.NOT_AUTHORISED


def test_an_owned_name_survives_its_owner_and_only_the_owner_or_an_admin_frees_it(
    core: GatewayCore,
) -> None:
    a_link, a = opened(core, "a", Principal("root", "user"))
    send(core, a, register("boiler"))
    a_link.take()
    core.detach(a)  # a kill -9 of the owner: its link just closes
    assert core.table.sender("boiler") is None and core.access.claims.owner("boiler") == "user:root"
    anon_link, anon = opened(core, "anon")
    core.access.install(Policy.from_table({**HOME, "anonymous": {"own": ["*"]}}))
    send(core, anon, register("boiler"))
    [err] = errors(anon_link)
    assert err.code == ErrorCode.NOT_AUTHORISED
    assert err.message == "sender name 'boiler' is owned by another principal"
    b_link, b = opened(core, "b", Principal("root", "user"))  # the owner, back
    send(core, b, register("boiler"))
    assert [type(m) for m in b_link.take()] == [w.SenderRegistered]
    send(core, b, w.UnregisterSender(1))  # its own explicit unregister frees it
    assert core.access.claims.owner("boiler") is None and core.stats()["claimed_names"] == 0
    send(core, b, register("boiler"), w.Request(9, "$gateway", "release", pack({"name": "boiler"})))
    [_, resp] = b_link.take()
    assert isinstance(resp, w.Response) and resp.status == ErrorCode.OK and unpack(resp.data)
    assert core.access.claims.owner("boiler") is None


def test_claims_are_bounded_per_principal(core: GatewayCore) -> None:
    core.access.install(Policy.from_table({**HOME, "max_claims": 2}))
    link, s = opened(core, "root", Principal("root", "user"))
    send(core, s, register("a", 1), register("b", 2), register("c", 3))
    got = link.take()
    [err] = [m for m in got if isinstance(m, w.Error)]
    assert err.code == ErrorCode.LIMIT_REACHED and err.ref == 3
    assert "already owns 2 sender names" in err.message


def test_anonymous_and_default_devices_claim_nothing() -> None:
    gw = GatewayCore("gw", clock=FakeClock())  # no ACL: everything allowed
    link, s = opened(gw, "anon")
    send(gw, s, register("x"))
    dev_link, dev = opened(gw, "dev", persistent=True)
    dev.principal = gw.access.link_principal(dev_link) or ANONYMOUS
    send(gw, dev, register("y"))
    assert gw.table.sender("x") and gw.table.sender("y") and not gw.access.claims.held
    assert dev.principal == Principal("device:link-dev", "device")


def test_a_serial_port_carries_only_its_bound_names() -> None:
    gw = GatewayCore("gw", clock=FakeClock())
    gw.access.bind_port("serial:/dev/p", "pumps", ["pump", "sensor-*"])
    link = MemoryLink("serial:/dev/p", persistent=True)
    s = gw.attach(link)
    send(gw, s, w.Hello("dev", 256, 0))
    assert s.principal == Principal("pumps", "device")  # the port's, at HELLO
    send(gw, s, register("pump"), register("valve", 2))
    send(gw, s, register("sensor-9", 3))
    got = link.take()
    [err] = [m for m in got if isinstance(m, w.Error)]
    assert err.code == ErrorCode.NOT_AUTHORISED and err.ref == 2
    assert err.message == "sender name 'valve' is not one serial:/dev/p may carry (pump, sensor-*)"
    assert sorted(gw.table.senders) == ["pump", "sensor-9"]
    assert gw.access.claims.owner("pump") == "device:pumps"  # a configured device owns its names


def test_a_reload_applies_to_later_deliveries_and_listens(core: GatewayCore) -> None:
    dash_link, dash = opened(core, "dash", Principal("dash", "user"))
    send(core, dash, w.Listen(1, None, None))
    root_link, root = opened(core, "root", Principal("root", "user"))
    send(core, root, register("valve", 1, ("open",)))
    dash_link.take()
    core.access.install(Policy.from_table({**HOME, "users": {**HOME["users"], "dash": {}}}))
    send(core, root, w.Trigger(10, pack(1)))
    assert not [m for m in dash_link.take() if isinstance(m, w.Event)]
    send(core, dash, w.Listen(2, "valve", "open"))
    [err] = errors(dash_link)
    assert err.code == ErrorCode.NOT_AUTHORISED and err.ref == 2
    core.access.install(OPEN)  # no [acl] any more: everything again, the table's own match
    assert core.access.match == core.table.match
    send(core, root, w.Trigger(10, pack(2)))
    assert [m.event for m in dash_link.take() if isinstance(m, w.Event)] == ["open"]


def test_the_filter_follows_subscription_changes(core: GatewayCore) -> None:
    root_link, root = opened(core, "root", Principal("root", "user"))
    send(core, root, register("pump", 1, ("speed",)))
    ctl_link, ctl = opened(core, "ctl", Principal("ctl", "user"))
    send(core, ctl, w.Listen(1, "pump", "speed"))
    send(core, root, w.Trigger(10, pack(1)))
    dash_link, dash = opened(core, "dash", Principal("dash", "user"))
    send(core, dash, w.Listen(1, "pump", None))
    send(core, root, w.Trigger(10, pack(2)))
    send(core, ctl, w.Unlisten(1))
    send(core, root, w.Trigger(10, pack(3)))
    ctl_got = [unpack(m.data) for m in ctl_link.take() if isinstance(m, w.Event)]
    dash_got = [unpack(m.data) for m in dash_link.take() if isinstance(m, w.Event)]
    assert ctl_got == [1, 2] and dash_got == [2, 3]
    assert isinstance(ALLOW_ALL, Acl)


# --- configuration: sig serve's [acl], [auth] state, [[serial]] principal/names ---


def test_the_config_gives_a_policy_and_a_state_path(tmp_path: Path) -> None:
    from sig.tools.cli._serve import load_config, state_path

    config = tmp_path / "gw.toml"
    config.write_text('[auth]\nstate = "claims.json"\n[acl.users.a]\nown = ["x"]\n')
    conf = load_config(str(config))
    assert conf["acl"].acl_for(Principal("a", "user")).may_own("x")
    assert state_path({**conf, "config_path": str(config)}) == tmp_path / "claims.json"
    assert state_path({"config_path": str(config)}) == tmp_path / "sig-state.json"
    assert state_path({"users": str(tmp_path / "u" / "users")}) == tmp_path / "u" / "sig-state.json"
    assert state_path({}) is None  # no config, no users: memory only


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[acl.users.a]\nown = "x"\n', r"config .*: \[acl.users.a\] own must be a list"),
        ("[acl]\nmax_claims = 1.5\n", "max_claims"),
        ("[auth]\nstate = 3\n", r"\[auth\] state must be a file path"),
    ],
)
def test_a_bad_access_config_is_a_usage_error(tmp_path: Path, text: str, match: str) -> None:
    from sig.tools.cli._serve import UsageError, load_config

    config = tmp_path / "gw.toml"
    config.write_text(text)
    with pytest.raises(UsageError, match=match):
        load_config(str(config))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"port": "/dev/x", "principal": ""}, "principal must be a name"),
        ({"port": "/dev/x", "principal": "device:/dev/x"}, "not starting with 'device:'"),
        ({"port": "/dev/x", "names": "pump"}, "names must be a list of name patterns"),
        ({"port": "/dev/x", "names": [1]}, "names must be a list of name patterns"),
    ],
)
def test_a_bad_serial_principal_or_names_is_named(spec: dict[str, Any], match: str) -> None:
    from sig.routers.serial import SerialSpecError, parse_specs

    with pytest.raises(SerialSpecError, match=match):
        parse_specs([spec])


def test_a_serial_table_with_principal_and_names_parses() -> None:
    from sig.routers.serial import parse_specs, port_security

    spec = {"port": "/dev/x", "baud": 9600, "principal": "pumps", "names": ["pump"]}
    [settings] = parse_specs([spec])
    assert settings.port == "/dev/x" and settings.baud == 9600
    assert port_security(spec) == ("pumps", ("pump",)) and port_security("/dev/x") == (None, None)
