"""ld.lld as a check of one result (kept for scripts and tests; the peers live in conformance/peers.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from koconform.conformance import peers


@dataclass
class PeerOutcome:
    sections: dict[str, bytes]
    diagnostics: str
    unexpressed: list[str]


def link(ko: bytes, arch: str, result: dict[str, Any], symbols: dict[str, int], copy: int | None = None) -> PeerOutcome:
    """Sections as ld.lld relocates them at the result's layout, with `symbols` defined."""
    given = peers.Given({k: int(v["address"], 16) for k, v in result["layout"].items()}, dict(symbols), copy)
    linked = peers.link(peers.LldPeer().command(arch), arch, ko, given)
    return PeerOutcome(linked.sections, linked.diagnostics, linked.unexpressed)


def differences(result: dict[str, Any], peer: PeerOutcome) -> list[str]:
    """Sections whose bytes differ between the result and ld.lld (those it can express)."""
    want = {k: bytes.fromhex(v) for k, v in (result.get("sections") or {}).items() if k not in peer.unexpressed}
    return peers.differences(want, peer.sections)
