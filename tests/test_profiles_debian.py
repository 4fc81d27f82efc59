"""Every profile of a Debian-built arch agrees with the kernel it claims to describe.

For each arch with a conformance/environments/linux-6.1/<arch>.config (the /boot/config lines
tools/derive_environment.py took from Debian's linux-image package) the profile
conformance/profiles/linux-6.1/<arch>.yaml must state every CONFIG option it lists with the
value that .config gives (y -> true, "is not set" -> false, numbers as numbers); an option the
.config has no line for may only be stated false. Its vermagic, struct module layout, package
and kernel release must equal <arch>.facts.yaml (read from the modules Debian ships).
riscv64 has no Debian kernel and so no riscv64.config: its profile is a stated configuration
and is not checked here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from koconform.tools.derive_environment import parse_config

ROOT = Path(__file__).resolve().parents[1]
ENV = ROOT / "conformance" / "environments" / "linux-6.1"
PROFILES = ROOT / "conformance" / "profiles" / "linux-6.1"
ARCHES = sorted(p.name.removesuffix(".config") for p in ENV.glob("*.config"))
MODULE_STRUCT = ("size", "align", "name", "init", "exit")


def _profile(arch: str) -> dict[str, Any]:
    path = PROFILES / f"{arch}.yaml"
    if not path.is_file():
        pytest.fail(f"{arch}.config exists but there is no profile {path.relative_to(ROOT)}")
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def _config(arch: str) -> dict[str, bool | int | str]:
    return parse_config((ENV / f"{arch}.config").read_text(encoding="utf-8"))


def _facts(arch: str) -> dict[str, Any]:
    doc = yaml.safe_load((ENV / f"{arch}.facts.yaml").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def _same(stated: object, real: object) -> bool:
    """Equal and of the same kind (True is not 1, 4 is not "4")."""
    return type(stated) is type(real) and stated == real


def test_every_debian_arch_has_a_config() -> None:
    assert ARCHES == ["arm", "arm64", "i386", "x86_64"]
    assert not (ENV / "riscv64.config").exists()


@pytest.mark.parametrize("arch", ARCHES)
def test_profile_config_is_debians(arch: str) -> None:
    config = _config(arch)
    wrong = []
    for option, stated in (_profile(arch).get("config") or {}).items():
        real = config.get(option)
        if real is None and stated not in (False, None):
            wrong.append(f"{option}: profile {stated!r}, but {arch}.config has no line for it (not set)")
        elif real is not None and not _same(stated, real):
            wrong.append(f"{option}: profile {stated!r}, {arch}.config {real!r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("arch", ARCHES)
def test_profile_config_cflags_follow_debians_config(arch: str) -> None:
    """A build flag keyed by an option applies iff the profile states the option as Debian set it."""
    profile, config = _profile(arch), _config(arch)
    stated = profile.get("config") or {}
    for option in ((profile.get("build") or {}).get("config_cflags") or {}):
        real = config.get(option, False)
        assert _same(stated.get(option, False), real), \
            f"build.config_cflags {option}: profile config says {stated.get(option)!r}, {arch}.config {real!r}"


@pytest.mark.parametrize("arch", ARCHES)
def test_profile_vermagic_and_module_struct_are_debians(arch: str) -> None:
    profile, facts = _profile(arch), _facts(arch)
    assert profile["vermagic"] == facts["vermagic"]
    layout = {k: profile["module_struct"].get(k) for k in MODULE_STRUCT}
    assert layout == {k: facts["module_struct"][k] for k in MODULE_STRUCT}
    assert profile["package"] == facts["package"]
    assert profile["kernel_release"] == facts["kernel_release"]


@pytest.mark.parametrize("arch", ARCHES)
def test_profile_environment_is_the_derived_one(arch: str) -> None:
    assert _profile(arch)["environment"] == f"environments/linux-6.1/{arch}.tsv"
    assert (ENV / f"{arch}.tsv").is_file()


@pytest.mark.parametrize("stated, real, same", [
    (True, True, True), (False, False, True), (4, 4, True),
    (True, 1, False), (1, True, False), ("4", 4, False), (0xC0000000, 0xC0000000, True),
])
def test_same_is_strict(stated: object, real: object, same: bool) -> None:
    assert _same(stated, real) is same
