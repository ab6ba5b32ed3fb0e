"""Alice's host side of sifting, from Alice's modelled choices (for receiver-only co-simulations).

Answers Bob's detection records as Alice's gateware would (``protocol.alice_sift_model``),
given the 4-bit symbols Alice sent from ``first_slot`` on; slots outside them are LOST.
"""
from __future__ import annotations

import numpy as np

from ..gateware import protocol as proto

__all__ = ["AliceHost", "record_queries"]

_SLOT_MASK = (1 << 48) - 1


def record_queries(records) -> list[tuple[int, int]]:
    """(slot, basis) of each 64-bit detection record (docs/receiver.md)."""
    return [(int(r) & _SLOT_MASK, (int(r) >> 48) & 1) for r in records]


class AliceHost:
    """Answers Bob's detections from Alice's choices."""

    def __init__(self, codes: np.ndarray, first_slot: int):
        self.codes, self.first = np.asarray(codes, dtype=np.uint8), int(first_slot)

    def lookup(self, slot: int) -> tuple[int, int]:
        """(symbol, status) of one slot: status 0 OK, 1 LOST."""
        j = (int(slot) - self.first) % (1 << 48)
        return (int(self.codes[j]), 0) if j < self.codes.size else (0, 1)

    def sift(self, records):
        """``(answers, kept, counts)`` of ``protocol.alice_sift_model`` for these records."""
        return proto.alice_sift_model(self.lookup, record_queries(records))

    def answer(self, records) -> list:
        return self.sift(records)[0]
