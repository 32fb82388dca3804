"""The rolling chain checksum of the chosen log.

``c_0 = 0`` and ``c_i = chain_checksum(c_{i-1}, i, value_i)`` where the digest is 8-byte BLAKE2b
over ``c_{i-1}`` (8 bytes big-endian) || ``i`` (8 bytes big-endian) || ``value_i``, read back as
an unsigned big-endian int. Two replicas with equal checksums at instance ``i`` hold the same
chosen values for every instance ``1..i`` (up to hash collisions).
"""

from __future__ import annotations

from hashlib import blake2b

_MASK64 = (1 << 64) - 1


def chain_checksum(prev: int, instance: int, value: bytes) -> int:
    """The chain checksum at ``instance`` given the checksum ``prev`` at ``instance - 1``."""
    h = blake2b(digest_size=8)
    h.update((prev & _MASK64).to_bytes(8, "big"))
    h.update((instance & _MASK64).to_bytes(8, "big"))
    h.update(value)
    return int.from_bytes(h.digest(), "big")
