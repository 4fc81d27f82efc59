"""The reference loader as an adapter: the first implementation the runner measures."""
from __future__ import annotations

from koconform.conformance.adapter import Adapter
from koconform.conformance.model import Request, Result

from . import loader
from .arch import ARCHES


class ReferenceAdapter(Adapter):
    name = "reference"
    description = "koconform's reference loader (Linux 6.1 load_module in Python)"
    arches = frozenset(ARCHES)
    produces = frozenset({"status", "errno", "phase", "layout", "regions", "symbols", "sections", "log",
                          "init_return", "exit_log", "fault"})

    def load(self, request: Request) -> Result:
        return loader.load(request)
