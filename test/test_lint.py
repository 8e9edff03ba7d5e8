"""The repository's lint rules (ruff.toml) hold, and every ``# noqa`` says why it is there."""
import ast
import importlib.util
import pathlib
import re
import subprocess
import sys
import tokenize

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# Folders that hold no source of the repository (environments, build and run outputs).
NOT_SOURCE = {"build", "install", "log", "demo_output", "runs", "__pycache__", "node_modules"}
# A noqa comment: its codes if any, then what follows them on the line.
NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:[\s,]+[A-Z]+[0-9]+)*))?(?P<rest>.*)",
                  re.IGNORECASE)


def python_files() -> list[pathlib.Path]:
    return sorted(
        p for p in REPO.rglob("*.py")
        if not any(part.startswith(".") or part in NOT_SOURCE or part.endswith(".egg-info")
                   for part in p.relative_to(REPO).parts[:-1]))


def noqa_comments(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, comment) of each comment in ``path`` that holds a ``# noqa``; strings that merely
    contain the words are not comments."""
    with tokenize.open(path) as source:
        tokens = list(tokenize.generate_tokens(source.readline))
    return [(token.start[0], token.string) for token in tokens
            if token.type == tokenize.COMMENT and NOQA.search(token.string)]


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None,
                    reason="ruff is not installed in this Python environment "
                           "(pip install -r requirements-dev.txt)")
def test_ruff_finds_nothing():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                           "--output-format", "concise", "."],
                          cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"ruff check (ruff.toml) reports:\n{proc.stdout}{proc.stderr}", pytrace=False)


def test_every_noqa_says_why():
    missing = []
    for path in python_files():
        for line, comment in noqa_comments(path):
            rest = NOQA.search(comment).group("rest")
            if not re.search(r"[A-Za-z]{2,}", rest):
                missing.append(f"{path.relative_to(REPO)}:{line}: {comment}")
    if missing:
        pytest.fail("a noqa without a reason (write '# noqa: CODE - why'):\n"
                    + "\n".join(missing), pytrace=False)


def test_the_noqa_check_reads_codes_and_reasons():
    def reason(comment):
        return NOQA.search(comment).group("rest").strip(" -:")

    assert reason("# noqa: F401 - re-exported") == "re-exported"
    assert reason("# noqa: E731,F401 imported to see whether it is installed").startswith("imp")
    assert reason("# noqa: BLE001") == ""
    assert reason("# noqa") == ""
    assert reason("#noqa:E402") == ""


# The code outside the tests reads in functions of a screen, and the node stays a thin shell.
LONGEST_FUNCTION = 60
NODE_LINES = 400


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in python_files():
        if path.relative_to(REPO).parts[0] == "test":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONGEST_FUNCTION:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {lines}")
    assert not long, f"functions over {LONGEST_FUNCTION} lines:\n" + "\n".join(long)


def test_the_node_is_a_thin_shell():
    lines = len((REPO / "cen_perception" / "node.py").read_text().splitlines())
    assert lines <= NODE_LINES, f"cen_perception/node.py has {lines} lines"
