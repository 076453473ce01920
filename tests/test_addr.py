"""addr_key (the ipset member index's key) agrees with ipaddress on what is an address and which are equal."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svctrace.dataplane.addr import addr_key

_octet = st.integers(0, 300).map(str) | st.sampled_from(["01", "00", "007", "-1", "", " 1", "1 ", "0x1"])
_v4ish = st.lists(_octet, min_size=3, max_size=5).map(".".join)
_v6 = st.ip_addresses(v=6).map(str) | st.ip_addresses(v=6).map(lambda a: a.exploded)
_texts = (
    _v4ish | st.ip_addresses(v=4).map(str) | _v6 | st.sampled_from(["::ffff:1.2.3.4", "fe80::1%eth0", "x"])
)


def _ref(text: str) -> object:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@settings(max_examples=500, deadline=None)
@given(_texts, _texts)
def test_addr_key_is_an_address_and_equal_as_ipaddress_says(a: str, b: str) -> None:
    ra, rb = _ref(a), _ref(b)
    for text, ref in ((a, ra), (b, rb)):
        if ref is None:
            with pytest.raises(ValueError):
                addr_key(text)
    if ra is not None and rb is not None:
        assert (addr_key(a) == addr_key(b)) == (ra == rb)
        if ra == rb:
            assert hash(addr_key(a)) == hash(addr_key(b))


_prefix = st.integers(0, 40).map(str) | st.sampled_from(["08", "032", "", "x", "255.255.0.0", " 8", "-1"])


@settings(max_examples=500, deadline=None)
@given(_texts, st.none() | _prefix)
def test_the_walkers_plain_ipv4_reading_is_ip_network(addr: str, prefix: str | None) -> None:
    """`-s/-d a.b.c.d[/N]` read without ipaddress (matches._plain_v4) means what ip_network(strict=False) does; what
    it does not read (masks, IPv6, junk) is left to ipaddress."""
    from svctrace.dataplane.iptables.matches import _plain_v4

    text = addr if prefix is None else f"{addr}/{prefix}"
    got = _plain_v4(text)
    if got is None:
        return
    net = ipaddress.ip_network(text, strict=False)  # raises if _plain_v4 took what ipaddress refuses
    assert got == (4, int(net.network_address), int(net.netmask))
