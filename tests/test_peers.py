"""The peers: two static linkers check every expected byte (conformance/peers.py, `koconform peers`).

The decisive property: an expectation that is wrong by one byte cannot survive `koconform peers`
(the command `tox -e peers` runs), whichever vector it is in.
"""
from __future__ import annotations

import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from koconform.conformance import peers

from elfbuild import R_X86_64_64, SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE, Module, Rela, Section, Symbol, build

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "vectors"


def _ko() -> bytes:
    """A module whose .text holds one R_X86_64_64 to an undefined symbol and one to .data (hand-made)."""
    return bytes(build(Module(
        sections=[Section(".text", SHF_ALLOC | SHF_EXECINSTR, bytes(16), align=16),
                  Section(".data", SHF_ALLOC | SHF_WRITE, b"\x11\x22\x33\x44", align=4)],
        symbols=[Symbol("ext", None), Symbol("local_data", ".data", 2)],
        relocs={".text": [Rela(0, "ext", R_X86_64_64, 5), Rela(8, "local_data", R_X86_64_64, 0)]})).data)


# ---- the renamed copy -----------------------------------------------------------------
def test_renamed_copy_changes_only_names() -> None:
    ko = _ko()
    sh = peers.Shdrs.read(ko, "x86_64")
    copy = peers.renamed(ko, sh)
    again = peers.Shdrs.read(copy, "x86_64")
    assert again.names == [f".koc.{i}" for i in range(len(sh.names))]
    assert again.types == sh.types and again.flags == sh.flags
    assert again.offsets[sh.shstrndx] == len(ko)          # the new name table is appended
    assert [o for i, o in enumerate(again.offsets) if i != sh.shstrndx] == \
        [o for i, o in enumerate(sh.offsets) if i != sh.shstrndx]
    # Outside the section headers' sh_name fields and the name table's offset/size, not a byte moved.
    changed = {k for k in range(len(ko)) if copy[k] != ko[k]}
    allowed = set()
    for i in range(len(sh.names)):
        allowed |= set(range(sh.shoff + i * sh.shentsize, sh.shoff + i * sh.shentsize + 4))
    hdr = sh.shoff + sh.shstrndx * sh.shentsize
    allowed |= set(range(hdr + 0x18, hdr + 0x28))
    assert changed and changed <= allowed


def test_keys_mark_repeated_names_with_their_index() -> None:
    sh = peers.Shdrs(True, 0, 64, 0, ["", ".text", ".text", ".data"], [0, 1, 1, 1], [0] * 4, [0] * 4)
    assert sh.keys() == {"": 0, ".text#1": 1, ".text#2": 2, ".data": 3}


def test_script_places_in_ascending_address_order() -> None:
    text = peers.script([(0x2000, 3), (0x1000, 1)], [5])
    assert text.index(".koc.1 0x1000") < text.index(".koc.3 0x2000")
    assert "/DISCARD/ : { *(.koc.5) }" in text


@pytest.mark.parametrize("peer", [peers.LldPeer, peers.GnuLdPeer])
def test_peer_relocates_a_hand_made_module(peer: type[peers.LinkerPeer]) -> None:
    """S + A worked out by hand: ext = 0x1000 (+5), local_data = .data at 0xffff0000 (+2)."""
    if (why := peer().available()) is not None:
        pytest.fail(why)
    given = peers.Given({".text": 0xFFFF1000, ".data": 0xFFFF0000}, {"ext": 0x1000})
    linked = peers.link(peer().command("x86_64"), "x86_64", _ko(), given)
    assert linked.ok, linked.diagnostics
    assert linked.sections[".text"] == struct.pack("<QQ", 0x1005, 0xFFFF0002)
    assert linked.sections[".data"] == b"\x11\x22\x33\x44"


# ---- `koconform peers` over real vectors ------------------------------------------------
def _loaded_vectors() -> list[Path]:
    out = []
    for path in sorted(VECTORS.rglob("*.yaml")):
        if path.name.endswith(".family.yaml"):
            continue
        doc = yaml.safe_load(path.read_text())
        if doc["expect"]["status"] == "loaded" and not doc.get("peers") and doc["expect"].get("sections"):
            out.append(path)
    return out


def _copy(vector: Path, dest: Path) -> Path:
    target = dest / "vectors" / vector.relative_to(VECTORS)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(vector, target)
    shutil.copy(vector.with_name(yaml.safe_load(vector.read_text())["ko"]), target.parent)
    return target


def _peers(tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "koconform.conformance.cli", "peers", str(tmp / "vectors"),
                           "--output", str(tmp / "PEERS.md")], capture_output=True, text=True, check=False)


def _expressible(doc: dict, ko: bytes) -> list[str]:
    """Sections a linker holds as the kernel does, as the peer itself reports them (not the kernel's own
    PLT/GOT areas, unwind indexes or symtab copies: those bytes are pinned by the reference and by
    hand-worked unit tests; no linker can check them)."""
    linked = peers.link(peers.LldPeer().command(doc["arch"]), doc["arch"], ko, peers.Given.from_vector(doc))
    return [k for k, v in doc["expect"]["sections"].items() if k not in linked.unexpressed and v]


CHOSEN = random.Random(20261125).sample(_loaded_vectors(), 3)


@pytest.mark.parametrize("vector", CHOSEN, ids=lambda p: str(p.relative_to(VECTORS)))
def test_corrupting_one_expected_byte_fails_peers(vector: Path, tmp_path: Path) -> None:
    clean = _copy(vector, tmp_path)
    ok = _peers(tmp_path)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    assert "agree" in (tmp_path / "PEERS.md").read_text()

    doc = yaml.safe_load(clean.read_text())
    rng = random.Random(str(vector))
    name = rng.choice(_expressible(doc, clean.with_name(doc["ko"]).read_bytes()))
    data = bytearray.fromhex(doc["expect"]["sections"][name])
    at = rng.randrange(len(data))
    data[at] ^= 0x01
    doc["expect"]["sections"][name] = data.hex()
    clean.write_text(yaml.safe_dump(doc, sort_keys=False))
    bad = _peers(tmp_path)
    assert bad.returncode != 0, f"{name}+{at:#x} flipped, yet peers passed:\n{bad.stdout[-2000:]}"
    assert f"sections[{name}]+{at:#x}" in bad.stdout


def test_a_declared_difference_that_does_not_exist_fails(tmp_path: Path) -> None:
    """A reason is a claim: a vector that says ld.lld differs where it agrees silently is wrong."""
    vector = _copy(CHOSEN[0], tmp_path)
    doc = yaml.safe_load(vector.read_text())
    doc["peers"] = {"ld.lld": {"differs": "kernel-module-plt", "why": "not true"}}
    vector.write_text(yaml.safe_dump(doc, sort_keys=False))
    run = _peers(tmp_path)
    assert run.returncode != 0
    assert "declares ld.lld differs (kernel-module-plt) but lld writes the same bytes" in run.stdout
