"""Unsigned LEB128 varints: the compact number encoding inside signed link tokens and VERP
addresses."""

from __future__ import annotations


def encode(n: int) -> bytes:
    if 0 <= n < 0x4000:  # the common sizes in one step (one or two bytes)
        return bytes((n,)) if n < 0x80 else bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_all(data: bytes) -> list[int] | None:
    """Every number in ``data``; None if it ends inside a number."""
    numbers: list[int] = []
    value = shift = 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            numbers.append(value)
            value = shift = 0
    return numbers if shift == 0 else None
