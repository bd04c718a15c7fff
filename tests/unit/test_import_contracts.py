"""The import contracts of pyproject.toml ([tool.importlinter]) hold, checked with import-linter.

Run in the suite so CI checks them on every change; a second test proves the check can
fail, on a throwaway package that breaks a contract of the same kind.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT), "--config", str(config), "--no-cache"], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(cwd), "PATH": str(LINT.parent)})


def test_every_import_contract_is_kept() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert {c["type"] for c in contracts} >= {"forbidden", "independence", "acyclic_siblings"}
    proc = _lint(ROOT, ROOT / "pyproject.toml")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"Contracts: {len(contracts)} kept, 0 broken." in proc.stdout


def test_a_broken_contract_fails_the_check(tmp_path: Path) -> None:
    pkg = tmp_path / "demo"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "journal.py").write_text("")
    (pkg / "core" / "pure.py").write_text("import demo.journal\n")  # the core reaching out
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["demo"]\n\n[[tool.importlinter.contracts]]\n'
        'name = "core is pure"\ntype = "forbidden"\nsource_modules = ["demo.core"]\n'
        'forbidden_modules = ["demo.journal"]\n'
    )
    proc = _lint(tmp_path, config)
    assert proc.returncode != 0
    assert "demo.core.pure -> demo.journal" in proc.stdout
