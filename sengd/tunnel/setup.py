"""IpAssignment / IpAssignACK codec (PROTOCOL.md §7.1).

The clients speak protobuf (proto2, package `seng_proto`):

    message IpAssignment { required uint32 ip = 1; required uint32 netmask = 2;
                           required uint32 gw_ip = 3; }
    message IpAssignACK  { required uint32 ip = 1; }

Each value is an *in_addr value*: the 32-bit integer whose little-endian bytes are the address
in network order (what `s_addr` holds on x86). The two message classes are built at import
time from a FileDescriptorProto, so the real protobuf runtime enforces the wire format and the
required fields and no protoc step is needed. Both messages travel on tunnel #1, one per
record, without a length prefix.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, EncodeError

PROTO_PACKAGE = "seng_proto"


class SetupMessageError(ValueError):
    """A setup record does not parse as the expected message or misses a required field."""


def in_addr_value(address: IPv4Address) -> int:
    """IPv4 address -> in_addr value (192.168.28.2 -> 0x021CA8C0)."""
    return int.from_bytes(address.packed, "little")


def address_from_in_addr(value: int) -> IPv4Address:
    """in_addr value -> IPv4 address. Raises ValueError outside 0..2**32-1."""
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"in_addr value {value} out of range")
    return IPv4Address(value.to_bytes(4, "little"))


def _build_classes() -> tuple[Any, Any]:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="sengd/seng_setup.proto", package=PROTO_PACKAGE, syntax="proto2"
    )
    uint32 = descriptor_pb2.FieldDescriptorProto.TYPE_UINT32
    required = descriptor_pb2.FieldDescriptorProto.LABEL_REQUIRED
    for name, fields in (("IpAssignment", ("ip", "netmask", "gw_ip")), ("IpAssignACK", ("ip",))):
        message = fdp.message_type.add(name=name)
        for number, field_name in enumerate(fields, start=1):
            message.field.add(name=field_name, number=number, type=uint32, label=required)
    # A private pool: the default one may already know seng_proto from another import.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    assignment = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{PROTO_PACKAGE}.IpAssignment")
    )
    ack = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{PROTO_PACKAGE}.IpAssignACK")
    )
    return assignment, ack


IpAssignment, IpAssignACK = _build_classes()


def encode_ip_assignment(ip: IPv4Address, netmask: IPv4Address, gateway: IPv4Address) -> bytes:
    """Serialize an IpAssignment (15 bytes for 192.168.28.2/255.255.255.0 gw 192.168.28.1)."""
    message = IpAssignment(
        ip=in_addr_value(ip), netmask=in_addr_value(netmask), gw_ip=in_addr_value(gateway)
    )
    data: bytes = message.SerializeToString()
    return data


def decode_ip_assignment(data: bytes) -> tuple[IPv4Address, IPv4Address, IPv4Address]:
    """Parse an IpAssignment -> (ip, netmask, gateway). Raises SetupMessageError."""
    message = _parse(IpAssignment, data, "IpAssignment")
    return (
        address_from_in_addr(message.ip),
        address_from_in_addr(message.netmask),
        address_from_in_addr(message.gw_ip),
    )


def encode_ip_assign_ack(ip: IPv4Address) -> bytes:
    """Serialize an IpAssignACK (the clients echo the assigned ip)."""
    data: bytes = IpAssignACK(ip=in_addr_value(ip)).SerializeToString()
    return data


def decode_ip_assign_ack(data: bytes) -> IPv4Address:
    """Parse an IpAssignACK -> the echoed ip. Raises SetupMessageError.

    Like both original servers the caller should only require that it parses; neither
    compares the value (the clients echo the assigned address).
    """
    return address_from_in_addr(_parse(IpAssignACK, data, "IpAssignACK").ip)


def _parse(cls: Any, data: bytes, name: str) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SetupMessageError(f"{name}: expected bytes, got {type(data).__name__}")
    message = cls()
    try:
        message.ParseFromString(bytes(data))
    except (DecodeError, EncodeError, RuntimeError, ValueError) as exc:
        raise SetupMessageError(f"{name} does not parse: {exc}") from exc
    if not message.IsInitialized():
        missing = ", ".join(message.FindInitializationErrors())
        raise SetupMessageError(f"{name} lacks required field(s): {missing}")
    return message
