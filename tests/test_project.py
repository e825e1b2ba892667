"""Project rules that must hold on every commit: CI runs the README, layering, lint."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    commands = readme_commands()
    assert len(commands) >= 2, "the README starts with the set-up command and the test command"
    readme = commands[1].splitlines()  # one command, its lines continued with a backslash
    ci_lines = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci_lines[-len(readme) :] == readme, ".ci/run must end with the README's test command, line for line"
    assert not ci_lines[-len(readme) - 1].endswith("\\"), ".ci/run's command must start where the README's does"
    assert "pytest" in commands[1] and "[test]" in commands[1]


# The layers, bottom to top: what each part of the package may import from the others. A part is a
# subpackage (gguf, rope, llama, evals, cli) or a top-level module; "version" is the package root.
LAYERS: dict[str, set[str]] = {
    "errors": set(),
    "files": {"errors"},
    "gguf": {"errors", "files"},
    "rope": {"errors", "gguf"},
    "default_model": {"errors"},
    "model": {"errors", "gguf", "rope", "default_model"},
    "chat_scaling": {"errors", "rope", "model"},
    "sampling": {"errors"},
    "backend": {"errors"},
    "conversation": {"errors", "files"},
    "llama": {"errors", "rope", "model", "sampling", "conversation", "backend"},
    "conversion": {"errors", "files", "gguf", "rope", "default_model", "model", "version"},
    "serving": {"errors", "files", "sampling", "conversation", "backend"},
    "evals": {"errors", "files", "backend", "version"},
    "cli": {
        "errors",
        "backend",
        "files",
        "gguf",
        "rope",
        "default_model",
        "model",
        "llama",
        "serving",
        "conversion",
        "evals",
        "version",
        "sampling",
        "conversation",
        "chat_scaling",
    },
    "__main__": {"cli"},
    "version": set(),
}
# Third-party packages only one part may import.
OWNED = {"llama_cpp": {"llama"}, "typer": {"cli"}, "rich": {"cli"}, "click": {"cli"}, "httpx": {"serving"}}


def part_of(module: Path) -> str:
    relative = module.relative_to(ROOT / "yarn_cli")
    if len(relative.parts) > 1:
        return relative.parts[0]
    return "version" if relative.name == "__init__.py" else relative.stem


def imports_of(module: Path) -> set[str]:
    """Every module name an import statement names, at the top or inside functions alike."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}: relative import"
            if node.module == "yarn_cli":
                names |= {f"yarn_cli.{alias.name}" for alias in node.names}
            elif node.module:
                names.add(node.module)
    return names


def target_part(name: str) -> str | None:
    """The part of yarn_cli that an imported name belongs to, None for other packages."""
    parts = name.split(".")
    if parts[0] != "yarn_cli":
        return None
    if len(parts) == 1 or parts[1] == "__version__":
        return "version"
    return parts[1]


def test_every_part_imports_only_the_layers_below_it() -> None:
    modules = sorted((ROOT / "yarn_cli").rglob("*.py"))
    assert {part_of(m) for m in modules} == set(LAYERS), "a new part of the package needs its place in LAYERS"
    for module in modules:
        part = part_of(module)
        for name in imports_of(module):
            target = target_part(name)
            top = name.split(".")[0]
            if target is not None and target != part:
                assert target in LAYERS[part], f"{module.relative_to(ROOT)} ({part}) imports {name} ({target})"
            if top in OWNED:
                assert part in OWNED[top], f"{module.relative_to(ROOT)} ({part}) imports {top}"


def test_the_layers_test_sees_lazy_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    import llama_cpp\n    from yarn_cli.cli import app\n")
    assert imports_of(sample) == {"llama_cpp", "yarn_cli.cli"}
    assert target_part("yarn_cli.cli") == "cli" and target_part("yarn_cli.__version__") == "version"


def test_no_two_modules_share_a_name() -> None:
    """A traceback or an import names a module by its file name; two ``dynamic.py`` could not be told apart."""
    seen: dict[str, list[str]] = {}
    for module in sorted((ROOT / "yarn_cli").rglob("*.py")):
        if module.name not in ("__init__.py", "__main__.py"):
            seen.setdefault(module.name, []).append(str(module.relative_to(ROOT)))
    shared = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not shared, f"modules of yarn_cli/ that share a name: {shared}"


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff_clean(args: list[str]) -> None:
    ruff = shutil.which("ruff", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if ruff is None:  # the test extra installs it; a machine given only the runtime (a GPU check) may lack it
        pytest.skip("ruff is not installed here")
    result = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
