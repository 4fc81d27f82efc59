"""Expected-failure files: the vectors an implementation is known to get wrong, and why.

One line per vector: its id, blanks, one line of reason (a real defect or a missing
capability of that implementation); `#` starts a comment line, blank lines are ignored.

    # koc-loader (examples/c-loader): x86_64, no modversions
    x86_64/resolve/crc-mismatch  does not compare modversions CRCs (check_version)

With `--xfail-file FILE` a listed vector that fails is an expected failure (xfailed); a
listed vector that passes or is not applicable fails, and so does the run when an entry
names no vector. `--xfail-write` rewrites FILE from the run (see `rewrite`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_ID_LINE = re.compile(r"^id:\s*['\"]?([^'\"\s#]+)", re.MULTILINE)
NEW_REASON = "FIXME (explain, one line): "


class XFailFileError(Exception):
    pass


@dataclass
class XFailFile:
    path: Path
    entries: dict[str, str] = field(default_factory=dict)   # vector id -> reason
    header: list[str] = field(default_factory=list)         # the comment lines before the first entry


def read(path: Path) -> XFailFile:
    xf = XFailFile(path)
    if not path.exists():
        return xf
    seen_entry = False
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            if not seen_entry:
                xf.header.append(raw)
            continue
        seen_entry = True
        vid, _, reason = line.partition(" ")
        if "\t" in vid:
            vid, _, rest = vid.partition("\t")
            reason = rest + " " + reason
        reason = reason.strip()
        if not reason:
            raise XFailFileError(f"{path}:{n}: {vid}: no reason (one line: why this implementation fails it)")
        if vid in xf.entries:
            raise XFailFileError(f"{path}:{n}: {vid} is listed twice")
        xf.entries[vid] = reason
    return xf


def vector_roots(args: list[str]) -> list[Path]:
    """The vectors directories the run's paths belong to (the nearest ancestor named `vectors`)."""
    roots: list[Path] = []
    for arg in args:
        path = Path(arg.split("::")[0]).resolve()
        if not path.exists():
            continue
        chain = [path, *path.parents]
        root = next((p for p in chain if p.name == "vectors"), path if path.is_dir() else path.parent)
        if root not in roots:
            roots.append(root)
    return roots


def known_ids(roots: list[Path]) -> set[str]:
    """The id of every vector file under the roots (read from its `id:` line)."""
    ids = set()
    for root in roots:
        for f in root.rglob("*.yaml"):
            if f.name.endswith(".family.yaml"):
                continue
            m = _ID_LINE.search(f.read_text(errors="replace"))
            if m:
                ids.add(m.group(1))
    return ids


def rewrite(xf: XFailFile, outcomes: dict[str, tuple[str, str]], known: set[str]) -> str:
    """The file as this run shows it: a vector that failed is listed (with its old reason, or its
    first difference to be explained), one that passed or was not applicable is not, an entry
    naming no vector goes, and entries of vectors that did not run stay as they were."""
    entries = {}
    for vid, reason in xf.entries.items():
        if vid in known and vid not in outcomes:
            entries[vid] = reason
    for vid, (outcome, first) in outcomes.items():
        if outcome == "failed":
            entries[vid] = xf.entries.get(vid) or (NEW_REASON + (first or "fails")).replace("\n", " ")
    width = max((len(v) for v in entries), default=0)
    lines = list(xf.header) + [f"{vid:<{width}}  {entries[vid]}" for vid in sorted(entries)]
    return "\n".join(lines) + "\n"
