"""Repository-level checks: lint, format, and README/CI agreement."""

import re
import shutil
import subprocess

import pytest

from tests.conftest import REPO


def readme_commands() -> list[str]:
    """The commands of the README's bash blocks under Setup and Tests."""
    text = (REPO / "README.md").read_text()
    commands = []
    for section in ("Setup", "Tests"):
        body = re.search(rf"^## {section}\n(.*?)(?=^## )", text, re.S | re.M).group(1)
        block = re.search(r"```bash\n(.*?)```", body, re.S).group(1)
        commands += [line for line in block.splitlines() if line.strip()]
    return commands


def test_ci_runs_exactly_the_readme_commands():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    ci_commands = [line for line in ci if line and not line.startswith(("#", "set ", "cd "))]
    assert ci_commands == readme_commands()


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff(args):
    ruff = shutil.which("ruff")
    assert ruff, "ruff is not installed: pip install -e '.[dev]'"
    result = subprocess.run([ruff, *args], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
