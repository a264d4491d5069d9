"""The pre-commit hook for real: a temporary git repository, the real ``pre-commit`` and ``git commit``.

The repository holds a small model package, a ``pyproject.toml`` contract with a
lockfile and a ``.pre-commit-config.yaml`` (``repo: local``, ``language:
system``) that runs the installed ``torchsurgeon check``.  The hook passes;
then a commit that changes the model to 9 classes is rejected with the
contract table in the output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torchsurgeon import UPDATE_ENV

BIN = Path(sys.executable).parent
PRE_COMMIT = BIN / "pre-commit"
TORCHSURGEON = BIN / "torchsurgeon"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not PRE_COMMIT.exists(),
        reason=f"pre-commit is not installed next to {sys.executable} (pip install -e '.[dev]')",
    ),
    pytest.mark.skipif(
        not TORCHSURGEON.exists(), reason=f"the torchsurgeon console script is not next to {sys.executable}"
    ),
    pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed"),
]

MODEL = """from torch import nn

N_CLASSES = 10


def build_classifier() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, N_CLASSES),
    )
"""

PYPROJECT = """[project]
name = "mypkg"
version = "0.1.0"

[[tool.torchsurgeon.contracts]]
model = "mypkg.models:build_classifier"
input = [1, 32, 32]
output = [10]
max_params = 26_000_000
lock = "tests/arch/classifier.lock.json"
"""

CONFIG = """repos:
  - repo: local
    hooks:
      - id: torchsurgeon-check
        name: torchsurgeon shape contracts
        entry: torchsurgeon check
        language: system
        pass_filenames: false
        types: [python]
"""


def _run(args: list[str], repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "repo"
    (root / "mypkg").mkdir(parents=True)
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "models.py").write_text(MODEL)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / ".pre-commit-config.yaml").write_text(CONFIG)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `torchsurgeon` as a project's venv provides it
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "GIT_CONFIG_GLOBAL": os.devnull,  # no user hooks, templates or signing
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    env.pop(UPDATE_ENV, None)
    env.pop("PYTHONPATH", None)
    for args in (
        ["git", "init", "-q", "-b", "main"],
        [
            "torchsurgeon",
            "lock",
            "mypkg.models:build_classifier",
            "--input",
            "1,32,32",
            "-o",
            "tests/arch/classifier.lock.json",
        ],
        ["git", "add", "-A"],
    ):
        done = _run(args, root, env)
        assert done.returncode == 0, done.stdout + done.stderr
    return root, env


def test_hook_manifest_declares_torchsurgeon_check() -> None:
    yaml = pytest.importorskip("yaml")  # installed with pre-commit
    manifest = Path(__file__).parents[1] / ".pre-commit-hooks.yaml"
    (hook,) = yaml.safe_load(manifest.read_text())
    assert hook == {
        "id": "torchsurgeon-check",
        "name": "torchsurgeon shape contracts",
        "description": hook["description"],
        "entry": "torchsurgeon check",
        "language": "python",
        "pass_filenames": False,
        "types": ["python"],
    }
    done = subprocess.run([str(PRE_COMMIT), "validate-manifest", str(manifest)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_pre_commit_passes_then_rejects_a_commit_with_9_classes(repo: tuple[Path, dict[str, str]]) -> None:
    root, env = repo
    passed = _run([str(PRE_COMMIT), "run", "--all-files", "--verbose"], root, env)
    print(passed.stdout, passed.stderr)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "torchsurgeon shape contracts" in passed.stdout and "Passed" in passed.stdout
    assert "Shape contract holds: mypkg.models:build_classifier" in passed.stdout

    assert _run([str(PRE_COMMIT), "install"], root, env).returncode == 0
    first = _run(["git", "commit", "-q", "-m", "classifier with 10 classes"], root, env)
    assert first.returncode == 0, first.stdout + first.stderr

    models = root / "mypkg" / "models.py"
    models.write_text(MODEL.replace("N_CLASSES = 10", "N_CLASSES = 9"))
    _run(["git", "add", "mypkg/models.py"], root, env)
    rejected = _run(["git", "commit", "-m", "9 classes"], root, env)
    print(rejected.stdout, rejected.stderr)
    out = rejected.stdout + rejected.stderr
    assert rejected.returncode != 0, out
    assert "torchsurgeon shape contracts" in out and "Failed" in out and "exit code: 1" in out
    assert "Shape contract broken: mypkg.models:build_classifier, input (1, 32, 32), batch 1" in out
    assert "output   (1, 10)     (1, 9)" in out
    assert "4        Linear  changed   output (1, 10), params 90  output (1, 9), params 81" in out
    log = _run(["git", "rev-list", "--count", "HEAD"], root, env)
    assert log.stdout.strip() == "1"  # the commit was rejected
