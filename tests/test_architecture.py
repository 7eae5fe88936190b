"""The layers of docs/architecture.md hold: every module of mner/ is in exactly one layer,
and no module imports from a higher layer (function bodies included)."""

import re
from pathlib import Path

from mner.sources import imported_modules, module_file
from tests.conftest import REPO

DOC = REPO / "docs" / "architecture.md"


def layers(doc: str) -> list[tuple[str, list[str]]]:
    """The (layer, modules) rows of the doc's table, lowest layer first; ``mner.models.*``
    stands for every module under ``mner.models`` (a new model file is in its layer)."""
    rows = []
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and "`mner" in cells[1]:
            names = re.findall(r"`(mner[\w.]*(?:\.\*)?)`", cells[1])
            rows.append((cells[0], [module for name in names for module in expand(name)]))
    return rows[::-1]


def expand(name: str) -> list[str]:
    """The modules a layer-table name stands for: itself, or those under ``<package>.*``."""
    if not name.endswith(".*"):
        return [name]
    package = name.removesuffix("*")
    return sorted(module for module in sources() if module.startswith(package))


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The mner modules that ``path`` imports (a name imported from a module counts as
    that module unless it is a module itself)."""
    return {module_name(f) for f in map(module_file, imported_modules(path)) if f is not None}


def upward_imports(layer_of: dict[str, int], files: dict[str, Path]) -> list[str]:
    """Each import of a module (name -> file) into a higher layer."""
    return [
        f"{name} imports {other}, a higher layer"
        for name, path in files.items()
        for other in sorted(imports_of(path))
        if other in layer_of and layer_of[other] > layer_of[name]
    ]


def layer_index() -> dict[str, int]:
    return {module: i for i, (_, modules) in enumerate(layers(DOC.read_text())) for module in modules}


def sources() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((REPO / "mner").rglob("*.py"))}


def test_every_module_is_in_exactly_one_layer():
    listed = [module for _, modules in layers(DOC.read_text()) for module in modules]
    assert len(layers(DOC.read_text())) >= 5
    duplicates = sorted({m for m in listed if listed.count(m) > 1})
    assert not duplicates, f"{DOC.name} lists these in more than one layer: {duplicates}"
    modules = set(sources())
    assert set(listed) == modules, (
        f"{DOC.name}: not in a layer: {sorted(modules - set(listed))}; "
        f"no such module: {sorted(set(listed) - modules)}"
    )


def test_no_module_imports_from_a_higher_layer():
    problems = upward_imports(layer_index(), sources())
    assert not problems, "\n".join(problems)


def test_the_check_finds_an_upward_import(tmp_path):
    """The data layer's labels importing the scorer (a components module) is refused."""
    probe = tmp_path / "labels.py"
    inside_a_function = "\n\ndef f():\n    from mner.metrics import score\n"
    probe.write_text((REPO / "mner/data/labels.py").read_text() + inside_a_function)
    assert upward_imports(layer_index(), {"mner.data.labels": probe}) == [
        "mner.data.labels imports mner.metrics, a higher layer"
    ]


def test_stages_do_not_import_the_command_line():
    for script in sorted((REPO / "stages").glob("*.py")):
        assert "mner.cli" not in imports_of(script), script.name
