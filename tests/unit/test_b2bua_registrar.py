"""The registrar's bindings (gateway.b2bua.registrar): who may register, bounds, expiry, SIP
Outbound (reg-id, +sip.instance, Flow-Timer), Path, and flows that close."""

from __future__ import annotations

from gateway.b2bua.registrar import FLOW_DEAD_FACTOR, Registrar
from gateway.config import HostPort, RegistrarSection, Trunk
from gateway.sip.message import SipRequest, parse_message
from gateway.sip.transport import MessageSource

TRUNK = Trunk(name="phones", side="secure", transport="tls", peer=HostPort("127.0.0.1", 5061),
              listener="tls", media="srtp", registrar=True)
SRC = MessageSource("tls", "tls", "127.0.0.9", 40001, connection_id=7,
                    tls_identities=("sip:peer.srtpgw.test",))
INSTANCE = '"<urn:uuid:00000000-0000-0000-0000-000000000001>"'
SECTION = RegistrarSection(max_bindings=3, max_bindings_per_aor=2, min_expires=60,
                           max_expires=3600, default_expires=600, flow_timer=30)


def register(contact: str = f"<sip:alice@10.9.9.9:40001;transport=tls>;+sip.instance={INSTANCE};"
             "reg-id=1", *, user: str = "alice", cseq: int = 1, call_id: str = "reg1",
             extra: str = "Supported: outbound, path\r\n") -> SipRequest:
    raw = (f"REGISTER sip:gw.test SIP/2.0\r\n"
           f"Via: SIP/2.0/TLS 10.9.9.9:40001;branch=z9hG4bK{cseq}{call_id}\r\n"
           f"From: <sip:{user}@gw.test>;tag=f{cseq}\r\nTo: <sip:{user}@gw.test>\r\n"
           f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\n"
           f"{extra}Content-Length: 0\r\n\r\n")
    msg = parse_message(raw.encode())
    assert isinstance(msg, SipRequest)
    return msg


def test_outbound_binding_answered_with_flow_timer_and_reached_at_the_source() -> None:
    reg = Registrar(SECTION)
    res = reg.register(register(), SRC, TRUNK, 100.0)
    assert res.status == 200
    assert ("Require", "outbound") in res.headers and ("Flow-Timer", "30") in res.headers
    assert res.watch_flow == 30 * FLOW_DEAD_FACTOR
    b = reg.lookup("phones", "alice", 101.0)
    assert b is not None and b.outbound and b.connection == 7
    # the Contact's port, the source's address: a Contact cannot point us elsewhere
    assert b.peer == HostPort("127.0.0.9", 40001) and b.contact.startswith("sip:alice@10.9.9.9")
    assert reg.lookup("phones", "bob", 101.0) is None
    assert "10.9.9.9" not in str(reg.listing(101.0))


def test_only_mutual_tls_registers() -> None:
    reg = Registrar(SECTION)
    no_cert = MessageSource("tls", "tls", "127.0.0.9", 40001, connection_id=7)
    udp = MessageSource("udp", "udp", "127.0.0.9", 5060, tls_identities=("sip:x",))
    assert reg.register(register(), no_cert, TRUNK, 0).status == 403
    assert reg.register(register(), udp, TRUNK, 0).status == 403
    other = Trunk(name="t", side="secure", transport="tls", peer=HostPort("127.0.0.1", 5061),
                  listener="tls", media="srtp")
    assert reg.register(register(), SRC, other, 0).status == 403
    assert len(reg) == 0


def test_expires_bounds_and_removal() -> None:
    reg = Registrar(SECTION)
    assert reg.register(register(extra="Expires: 10\r\n"), SRC, TRUNK, 0).status == 423
    assert reg.register(register(extra="Expires: abc\r\n"), SRC, TRUNK, 0).status == 400
    res = reg.register(register(extra="Expires: 99999\r\n"), SRC, TRUNK, 0)
    assert res.status == 200 and any(v.endswith("expires=3600") for _, v in res.headers)
    assert reg.lookup("phones", "alice", 3599) is not None
    assert reg.lookup("phones", "alice", 3601) is None
    assert reg.expire(3601) and len(reg) == 0
    reg.register(register(cseq=2), SRC, TRUNK, 0)
    assert reg.register(register(cseq=3, extra="Expires: 0\r\n"), SRC, TRUNK, 1).status == 200
    assert reg.lookup("phones", "alice", 2) is None
    reg.register(register(cseq=4), SRC, TRUNK, 0)
    star = register("*", cseq=5, extra="Expires: 0\r\n")
    assert reg.register(star, SRC, TRUNK, 1).status == 200 and len(reg) == 0
    assert reg.register(register("*", cseq=6), SRC, TRUNK, 1).status == 400


def test_bindings_are_bounded_per_user_and_in_all() -> None:
    reg = Registrar(SECTION)
    for i in range(2):
        c = f"<sip:alice@10.9.9.9:{4000 + i};transport=tls>"
        assert reg.register(register(c, call_id=f"c{i}"), SRC, TRUNK, 0).status == 200
    assert reg.register(register("<sip:alice@10.9.9.9:4009>", call_id="c9"), SRC, TRUNK,
                        0).status == 403
    assert reg.register(register("<sip:bob@10.9.9.9:4000>", user="bob"), SRC, TRUNK,
                        0).status == 200
    assert reg.register(register("<sip:carol@10.9.9.9:4000>", user="carol"), SRC, TRUNK,
                        0).status == 403
    assert len(reg) == 3


def test_same_instance_and_reg_id_replace_the_flow_and_closing_it_drops_the_binding() -> None:
    reg = Registrar(SECTION)
    reg.register(register(), SRC, TRUNK, 0)
    again = MessageSource("tls", "tls", "127.0.0.9", 40002, connection_id=8,
                          tls_identities=SRC.tls_identities)
    reg.register(register(call_id="reg2"), again, TRUNK, 1)
    b = reg.lookup("phones", "alice", 2)
    assert len(reg) == 1 and b is not None and b.connection == 8
    assert reg.flow_closed(7) == [] and len(reg) == 1
    assert [g.user for g in reg.flow_closed(8)] == ["alice"] and len(reg) == 0


def test_an_overtaken_register_does_not_roll_back() -> None:
    reg = Registrar(SECTION)
    reg.register(register(cseq=5, extra="Expires: 1000\r\n"), SRC, TRUNK, 0)
    reg.register(register(cseq=4, extra="Expires: 100\r\n"), SRC, TRUNK, 0)
    b = reg.lookup("phones", "alice", 0)
    assert b is not None and b.cseq == 5 and b.expires_at == 1000


def test_path_is_kept_as_the_route_set_and_echoed() -> None:
    reg = Registrar(SECTION)
    extra = "Path: <sip:edge.example;lr>\r\nSupported: path\r\n"
    res = reg.register(register("<sip:alice@10.9.9.9:4000>", extra=extra), SRC, TRUNK, 0)
    assert ("Path", "<sip:edge.example;lr>") in res.headers
    assert res.watch_flow is None and ("Require", "outbound") not in res.headers
    b = reg.lookup("phones", "alice", 0)
    assert b is not None and b.path == ("<sip:edge.example;lr>",) and not b.outbound
