"""Real client IP: every case of DESIGN.md "Real client IP", as one table."""

from __future__ import annotations

import pytest

from node.receiver.realip import RealIp, parse_address

LOOP = ["127.0.0.0/8", "::1/128"]
MESH = ["10.0.0.0/8", "fd00::/8", "127.0.0.1/32"]

# (id, trusted, header, recursive, peer, header lines, expected client_ip)
CASES = [
    ("untrusted peer ignores header", LOOP, "X-Forwarded-For", False, "198.51.100.9",
     ["203.0.113.7"], "198.51.100.9"),
    ("no header: peer", LOOP, "X-Forwarded-For", False, "127.0.0.1", [], "127.0.0.1"),
    ("trusted peer, single entry", LOOP, "X-Forwarded-For", False, "127.0.0.1",
     ["203.0.113.7"], "203.0.113.7"),
    ("not recursive: last entry even if trusted", MESH, "X-Forwarded-For", False, "10.1.1.1",
     ["203.0.113.7, 10.2.2.2"], "10.2.2.2"),
    ("recursive skips trusted from the right", MESH, "X-Forwarded-For", True, "10.1.1.1",
     ["198.51.100.1, 203.0.113.7, 10.2.2.2, 10.3.3.3"], "203.0.113.7"),
    ("recursive: all trusted gives leftmost", MESH, "X-Forwarded-For", True, "10.1.1.1",
     ["10.9.9.9, 10.2.2.2"], "10.9.9.9"),
    ("several header lines joined in order", MESH, "X-Forwarded-For", True, "10.1.1.1",
     ["198.51.100.1, 203.0.113.7", "10.2.2.2"], "203.0.113.7"),
    ("several lines, not recursive: last of last line", MESH, "X-Forwarded-For", False,
     "10.1.1.1", ["203.0.113.7", "198.51.100.2"], "198.51.100.2"),
    ("ipv4 with port", LOOP, "X-Forwarded-For", False, "127.0.0.1", ["203.0.113.7:5678"],
     "203.0.113.7"),
    ("ipv6 bracketed with port", LOOP, "X-Forwarded-For", False, "127.0.0.1",
     ["[2001:db8::1]:443"], "2001:db8::1"),
    ("ipv6 bare", LOOP, "X-Forwarded-For", False, "127.0.0.1", ["2001:DB8:0::1"],
     "2001:db8::1"),
    ("ipv6 bracketed without port", LOOP, "X-Forwarded-For", False, "127.0.0.1",
     ["[2001:db8::2]"], "2001:db8::2"),
    ("ipv6 peer trusted", LOOP, "X-Forwarded-For", False, "::1", ["203.0.113.7"],
     "203.0.113.7"),
    ("ipv4-mapped ipv6 peer trusted by a v4 CIDR", LOOP, "X-Forwarded-For", False,
     "::ffff:127.0.0.1", ["203.0.113.7"], "203.0.113.7"),
    ("v6 trusted network recursive", MESH, "X-Forwarded-For", True, "fd00::5",
     ["2001:db8::9, fd00::1"], "2001:db8::9"),
    ("spaces and empty entries", LOOP, "X-Forwarded-For", False, "127.0.0.1",
     ["  203.0.113.7 ,  , "], "203.0.113.7"),
    ("garbage last entry, not recursive: peer", LOOP, "X-Forwarded-For", False, "127.0.0.1",
     ["203.0.113.7, unknown"], "127.0.0.1"),
    ("garbage stops the walk: last good used", MESH, "X-Forwarded-For", True, "10.1.1.1",
     ["203.0.113.7, junk, 10.2.2.2"], "10.2.2.2"),
    ("garbage right after peer, recursive: peer", MESH, "X-Forwarded-For", True, "10.1.1.1",
     ["203.0.113.7, not-an-ip"], "10.1.1.1"),
    ("bad port is garbage", LOOP, "X-Forwarded-For", False, "127.0.0.1",
     ["203.0.113.7:99999"], "127.0.0.1"),
    ("bad octet is garbage", LOOP, "X-Forwarded-For", False, "127.0.0.1", ["203.0.113.700"],
     "127.0.0.1"),
    ("X-Real-IP", LOOP, "X-Real-IP", False, "127.0.0.1", ["203.0.113.8"], "203.0.113.8"),
    ("custom header name", LOOP, "CF-Connecting-IP", False, "127.0.0.1", ["203.0.113.9"],
     "203.0.113.9"),
    ("Forwarded for=", LOOP, "Forwarded", False, "127.0.0.1",
     ["for=192.0.2.60;proto=http;by=203.0.113.43"], "192.0.2.60"),
    ("Forwarded quoted ipv6 with port", LOOP, "Forwarded", False, "127.0.0.1",
     ['for="[2001:db8:cafe::17]:4711"'], "2001:db8:cafe::17"),
    ("Forwarded recursive over elements", MESH, "Forwarded", True, "10.1.1.1",
     ["for=192.0.2.43, For=198.51.100.17;proto=https", "for=10.0.0.3"], "198.51.100.17"),
    ("Forwarded obfuscated stops the walk", MESH, "Forwarded", True, "10.1.1.1",
     ["for=192.0.2.43, for=_hidden, for=10.0.0.3"], "10.0.0.3"),
    ("Forwarded unknown, not recursive: peer", LOOP, "Forwarded", False, "127.0.0.1",
     ["for=unknown"], "127.0.0.1"),
    ("Forwarded element without for=", LOOP, "Forwarded", False, "127.0.0.1",
     ["proto=https;by=10.0.0.1"], "127.0.0.1"),
]


@pytest.mark.parametrize("trusted,header,recursive,peer,values,expected",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_resolve(trusted, header, recursive, peer, values, expected):
    client, chain = RealIp(trusted, header, recursive).resolve(peer, values)
    assert client == expected
    assert chain[-1] == parse_address(peer).__str__()


CHAIN_CASES = [
    ("entries then peer", ["203.0.113.7 , 10.0.0.1:80", "[2001:db8::1]:443"], "127.0.0.1",
     ["203.0.113.7", "10.0.0.1:80", "[2001:db8::1]:443", "127.0.0.1"]),
    ("kept for an untrusted peer too", ["1.2.3.4"], "198.51.100.1", ["1.2.3.4", "198.51.100.1"]),
    ("garbage kept as read", ["unknown, 1.2.3.4"], "127.0.0.1",
     ["unknown", "1.2.3.4", "127.0.0.1"]),
    ("no header", [], "127.0.0.1", ["127.0.0.1"]),
]


@pytest.mark.parametrize("values,peer,expected", [c[1:] for c in CHAIN_CASES],
                         ids=[c[0] for c in CHAIN_CASES])
def test_chain_kept(values, peer, expected):
    _, chain = RealIp(LOOP, "X-Forwarded-For", False).resolve(peer, values)
    assert chain == expected


def test_hostile_header_is_bounded():
    values = [", ".join(f"10.0.{i // 256}.{i % 256}" for i in range(5000))]
    client, chain = RealIp(MESH, "X-Forwarded-For", True).resolve("10.1.1.1", values)
    assert len(chain) <= 65
    assert client.startswith("10.")  # all trusted: the leftmost of the kept window


@pytest.mark.parametrize("entry", ["", "   ", "[", "[::1", "[::1]x", "1.2.3.4:", "1.2.3.4:abc",
                                   "::1::2", "x" * 500, "\x00", "1.2.3.4:-1", "١.٢.٣.٤"])
def test_garbage_never_raises(entry):
    assert parse_address(entry) is None


def test_peer_that_is_not_an_address():
    client, chain = RealIp(LOOP, "X-Forwarded-For", False).resolve("unix-socket", ["1.2.3.4"])
    assert client == "unix-socket" and chain == ["1.2.3.4", "unix-socket"]
