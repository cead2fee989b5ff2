"""TunInterface against the real kernel, inside a namespace the test owns."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from tests.integration.netns import topology

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent(
    """
    import json, os, select, sys, time
    from ipaddress import IPv4Interface
    from sengd.dataplane.tun import TunInterface, interface_addresses
    name = sys.argv[1]
    tun = TunInterface(name, 1432, (IPv4Interface("192.168.28.1/24"),
                                    IPv4Interface("172.16.28.1/26")))
    tun.open()
    out = {"created": tun.created,
           "addrs": sorted(str(a) for a in interface_addresses(name)),
           "mtu": int(open(f"/sys/class/net/{name}/mtu").read())}
    # A UDP datagram to an enclave address is routed into the TUN: read it back as a packet.
    os.system("python3 -c 'import socket; s=socket.socket(2,2); "
              "s.sendto(b\\"hello\\", (\\"192.168.28.7\\", 9))'")
    # Skip the IPv6 neighbour discovery the kernel sends on a fresh link: wait for our packet.
    pkt, deadline = b"", time.monotonic() + 5
    while time.monotonic() < deadline and not (pkt[:1] == b"\x45" and pkt.endswith(b"hello")):
        if select.select([tun.fileno()], [], [], 0.5)[0]:
            pkt = os.read(tun.fileno(), 2000)
    out["packet_dst"] = ".".join(str(b) for b in pkt[16:20])
    out["packet_payload_end"] = pkt[-5:].decode(errors="replace")
    tun.close()
    out["exists_after"] = os.path.exists(f"/sys/class/net/{name}")
    print(json.dumps(out))
    """
)


def test_tun_created_configured_and_removed() -> None:
    with topology() as topo:
        ns = topo.netns("tun")
        proc = ns.run(sys.executable, "-c", SCRIPT, "tunT0", timeout=30)
        out = json.loads(proc.stdout)
        assert out == {
            "created": True,
            "addrs": ["172.16.28.1/26", "192.168.28.1/24"],
            "mtu": 1432,
            "packet_dst": "192.168.28.7",
            "packet_payload_end": "hello",
            "exists_after": False,
        }


def test_adopted_interface_keeps_its_own_addresses() -> None:
    script = textwrap.dedent(
        """
        import json, os, sys
        from ipaddress import IPv4Interface
        from sengd.dataplane.tun import TunInterface, interface_addresses
        tun = TunInterface("tunA0", 1400, (IPv4Interface("192.168.28.1/24"),))
        tun.open()
        during = sorted(str(a) for a in interface_addresses("tunA0"))
        tun.close()
        after = sorted(str(a) for a in interface_addresses("tunA0"))
        print(json.dumps({"created": tun.created, "during": during, "after": after}))
        """
    )
    with topology() as topo:
        ns = topo.netns("tad")
        ns.run("ip", "tuntap", "add", "dev", "tunA0", "mode", "tun")
        ns.run("ip", "addr", "add", "10.9.9.1/24", "dev", "tunA0")
        out = json.loads(ns.run(sys.executable, "-c", script).stdout)
        assert out == {
            "created": False,
            "during": ["10.9.9.1/24", "192.168.28.1/24"],
            "after": ["10.9.9.1/24"],
        }


def test_unmanaged_interface_must_exist_and_is_left_alone() -> None:
    script = textwrap.dedent(
        """
        import json
        from ipaddress import IPv4Interface
        from sengd.dataplane.tun import TunError, TunInterface, interface_addresses
        try:
            TunInterface("tunM1", 1400, (), manage=False).open()
            missing = "opened"
        except TunError as exc:
            missing = str(exc)
        tun = TunInterface("tunM0", 1400, (IPv4Interface("192.168.28.1/24"),), manage=False)
        tun.open()
        during = sorted(str(a) for a in interface_addresses("tunM0"))
        tun.close()
        print(json.dumps({"missing": missing, "during": during}))
        """
    )
    with topology() as topo:
        ns = topo.netns("tun")
        ns.run("ip", "tuntap", "add", "dev", "tunM0", "mode", "tun")
        ns.run("ip", "addr", "add", "10.9.9.1/24", "dev", "tunM0")
        out = json.loads(ns.run(sys.executable, "-c", script).stdout)
        assert "tunM1 does not exist" in out["missing"]
        assert out["during"] == ["10.9.9.1/24"]
