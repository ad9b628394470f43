"""The promise to plugin authors: ``fedfuse.api`` and ``fedfuse.testing`` name what they export
once, every name is documented in code and in docs/writing-a-protocol.md, and the lists cannot
drift apart."""

import ast
import inspect
import re
from pathlib import Path

import pytest

import fedfuse.api
import fedfuse.testing

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "writing-a-protocol.md").read_text()
PUBLIC = [(fedfuse.api, name) for name in fedfuse.api.__all__] + [(fedfuse.testing, n) for n in fedfuse.testing.__all__]


def type_checking_names() -> set[str]:
    """The names api.py imports under ``if TYPE_CHECKING:`` (for editors)."""
    tree = ast.parse((ROOT / "fedfuse" / "api.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    return {alias.asname or alias.name for node in ast.walk(block) if isinstance(node, ast.ImportFrom)
            for alias in node.names}


def test_the_editors_imports_are_the_lazy_exports():
    assert type_checking_names() == set(fedfuse.api._EXPORTS)


def test_every_public_name_exists_once():
    for module in (fedfuse.api, fedfuse.testing):
        assert len(module.__all__) == len(set(module.__all__)), module.__name__
        for name in module.__all__:
            assert getattr(module, name) is not None, name


@pytest.mark.parametrize("module,name", PUBLIC, ids=[f"{m.__name__.split('.')[-1]}.{n}" for m, n in PUBLIC])
def test_every_public_name_has_a_docstring_and_a_row_in_the_guide(module, name):
    value = getattr(module, name)
    if inspect.isfunction(value) or inspect.isclass(value) or inspect.ismodule(value):
        assert (inspect.getdoc(value) or "").strip(), f"{module.__name__}.{name} has no docstring"
    assert re.search(rf"`{re.escape(name)}[`(]", GUIDE), f"{module.__name__}.{name} is not in docs/writing-a-protocol.md"


def test_the_guide_lists_no_name_the_api_lacks():
    """The reference table of fedfuse.api (its rows: | group | names |) names only what exists."""
    table = GUIDE[GUIDE.index("| group in `fedfuse.api` | names |"):]
    table = table[:table.index("\n\n")]
    cells = [re.sub(r"\([^)]*\)", "", row.split("|")[2]) for row in table.splitlines()[2:]]  # not the notes
    listed = {m.group(1) for cell in cells for m in re.finditer(r"`([A-Za-z_]+)`", cell)}
    assert listed <= set(fedfuse.api.__all__), listed - set(fedfuse.api.__all__)
