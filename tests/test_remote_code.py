"""No model loading runs code shipped with the model: every ``from_pretrained`` call in the
package passes ``trust_remote_code=False`` (directly, or in the ``**kwargs`` dict it is
given), so a model directory with an ``auto_map`` fails instead of asking to run its code."""

import ast

from tests.conftest import REPO


def refuses_remote_code(call: ast.Call, function: ast.AST) -> bool:
    """``call`` passes ``trust_remote_code=False``, or ``**name`` where ``name`` is a dict
    literal assigned in ``function`` with that key set to False."""
    for keyword in call.keywords:
        if keyword.arg == "trust_remote_code":
            return isinstance(keyword.value, ast.Constant) and keyword.value.value is False
        if keyword.arg is None and isinstance(keyword.value, ast.Name):
            for node in ast.walk(function):
                if (
                    isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == keyword.value.id for t in node.targets)
                    and isinstance(node.value, ast.Dict)
                ):
                    pairs = zip(node.value.keys, node.value.values)
                    return any(
                        isinstance(k, ast.Constant) and k.value == "trust_remote_code" and v.value is False
                        for k, v in pairs
                        if isinstance(v, ast.Constant)
                    )
    return False


def from_pretrained_calls() -> list[tuple[str, ast.Call, ast.AST]]:
    calls = []
    for path in sorted((REPO / "mner").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained":
                    calls.append((f"{path.relative_to(REPO)}:{node.lineno}", node, function))
    return calls


def test_every_from_pretrained_call_refuses_remote_code():
    calls = from_pretrained_calls()
    assert len(calls) >= 7  # text encoder (2), detector (2), grounder (3) at least
    unsafe = [where for where, call, function in calls if not refuses_remote_code(call, function)]
    assert not unsafe, f"from_pretrained without trust_remote_code=False at {', '.join(unsafe)}"


def test_the_scan_tells_a_safe_call_from_an_unsafe_one():
    def check(source: str) -> bool:
        function = ast.parse(source).body[0]
        call = next(
            n for n in ast.walk(function) if isinstance(n, ast.Call) and n.func.attr == "from_pretrained"
        )
        return refuses_remote_code(call, function)

    assert check("def f(m):\n    A.from_pretrained(m, trust_remote_code=False)")
    assert check("def f(m):\n    k = {'trust_remote_code': False}\n    A.from_pretrained(m, **k)")
    assert not check("def f(m):\n    A.from_pretrained(m)")
    assert not check("def f(m):\n    A.from_pretrained(m, trust_remote_code=True)")
    assert not check("def f(m):\n    k = {'revision': 'main'}\n    A.from_pretrained(m, **k)")
