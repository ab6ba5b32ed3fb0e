"""The register map: well-formed, and the docs generated from it are current."""
from pathlib import Path

import pytest

from qkdlink.gateware.regmap import ALICE_REGISTERS, Register, RegisterMap, ACCESS_RW, ACCESS_RO

DOCS = Path(__file__).resolve().parents[2] / "docs" / "registers.md"


def test_docs_match_the_code():
    assert ALICE_REGISTERS.to_markdown() in DOCS.read_text(), "regenerate docs/registers.md with `qkdlink regmap`"


def test_48_bit_counters_come_in_lo_hi_pairs():
    for r in ALICE_REGISTERS:
        if r.name.endswith("_LO"):
            hi = ALICE_REGISTERS[r.name[:-3] + "_HI"]
            assert hi.addr == r.addr + 1
            assert hi.width == (32 if r.name.startswith("SEED") else 16)


@pytest.mark.parametrize("bad, message", [
    (lambda: RegisterMap("x", (Register("A", 0, ACCESS_RW, 8, ""), Register("A", 1, ACCESS_RW, 8, ""))), "duplicate name"),
    (lambda: RegisterMap("x", (Register("A", 0, ACCESS_RW, 8, ""), Register("B", 0, ACCESS_RW, 8, ""))), "share address"),
    (lambda: Register("A", 0, "rx", 8, ""), "unknown access"),
    (lambda: Register("A", 0, ACCESS_RO, 33, ""), "width 33"),
    (lambda: Register("A", 0, ACCESS_RW, 4, "", reset=16), "does not fit"),
])
def test_malformed_maps_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        bad()


def test_lookup_errors_name_the_register():
    with pytest.raises(KeyError, match="NOPE"):
        ALICE_REGISTERS["NOPE"]
    assert ALICE_REGISTERS.at(0xFFFF) is None


def test_bob_docs_match_the_code():
    from qkdlink.gateware.regmap import BOB_REGISTERS
    assert BOB_REGISTERS.to_markdown() in DOCS.read_text()
