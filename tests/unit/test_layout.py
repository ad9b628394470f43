"""The house rules of the README's Layout section, read from the code's imports (every import,
including those inside functions): protocols import only ``fedfuse.api`` (their tests too); dependencies flow
one way between the packages; the engine and the leaderboard meet only in the results store."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: a package may import only packages of a lower tier (and itself). The results store sits
#: below both its writer (the engine) and its readers (the leaderboard, reports), which sit
#: beside each other and never import each other; the deployment engine wraps the engine.
TIERS = {
    "fedfuse.plugins": 0,
    "fedfuse.toolkit": 1, "fedfuse.datasets": 1,
    "fedfuse.bench.costs": 2, "fedfuse.bench.metrics": 2, "fedfuse.results": 2,
    "fedfuse.bench.suites": 3,
    "fedfuse.bench.engine": 4, "fedfuse.bench.plugin": 4, "fedfuse.leaderboard": 4,
    "fedfuse.deploy": 5, "fedfuse.testing": 5,
    "fedfuse.bench.cli": 6,
}
SHARED = {"fedfuse", "fedfuse.installed", "fedfuse.files"}  # version, installed-package lookup, atomic writes


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in ("fedfuse",) or name.startswith("fedfuse_")}


def package_of(module: str) -> str | None:
    return max((p for p in TIERS if module == p or module.startswith(p + ".")), key=len, default=None)


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", ["fedfuse/protocols", "examples/plugin-template"])
def test_protocols_import_only_the_api(folder):
    offenders = []
    packages = [d.name for d in (ROOT / folder).iterdir() if (d / "__init__.py").is_file()]
    for path in sources(folder):
        parts = path.relative_to(ROOT / folder).parts
        own = tuple(packages) if folder.startswith("examples") else f"fedfuse.protocols.{parts[0]}"
        for name in imports_of(path):
            if name != "fedfuse.api" and not name.startswith(own):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "protocols may import only fedfuse.api and their own folder:\n" + "\n".join(offenders)


def test_dependencies_flow_one_way():
    offenders = []
    for path in sources("fedfuse"):
        here = package_of(module_name(path))
        if here is None:
            continue
        for name in imports_of(path):
            there = package_of(name)
            if name in SHARED or there == here or there is None:
                continue
            if TIERS[there] >= TIERS[here]:
                offenders.append(f"{module_name(path)} ({here}) imports {name} ({there})")
    assert not offenders, "imports against the layering:\n" + "\n".join(offenders)


def test_rules_cover_every_module():
    """A new package must be given a tier (or be a protocol / the api) before it can land."""
    unplaced = [module_name(p) for p in sources("fedfuse") if package_of(module_name(p)) is None
                and not module_name(p).startswith(("fedfuse.protocols", "fedfuse.api"))
                and module_name(p) not in SHARED | {"fedfuse.bench"}]
    assert not unplaced, unplaced


def test_the_rules_can_fail(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from fedfuse.bench.engine.services import ServerRun\n")
    assert imports_of(bad) == {"fedfuse.bench.engine.services"}
    assert TIERS[package_of("fedfuse.bench.engine.services")] > TIERS["fedfuse.bench.suites"]
