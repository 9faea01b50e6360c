"""The layout a newcomer reads: every module is in the README's table, and the packages'
layering holds (lint-imports also runs in CI; here it fails the suite too)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PACKAGES = ("contact_center", "monitoring", "analytics")


def test_the_readme_names_every_module() -> None:
    readme = (PROJECT / "README.md").read_text()
    modules = sorted(str(path.relative_to(PROJECT)) for package in PACKAGES
                     for path in (PROJECT / package).rglob("*.py")
                     if path.name != "__init__.py" or path.parent.name in ("buses", "stores",
                                                                            "feeds", "api"))
    missing = [m for m in modules if f"`{m}`" not in readme]
    assert not missing, f"README.md's module table does not name: {missing}"


def test_no_package_imports_upward() -> None:
    linter = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    checked = subprocess.run([linter], cwd=PROJECT, capture_output=True, text=True,
                             timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 broken" in checked.stdout


def test_every_module_but_the_app_and_cli_is_kept_from_importing_routes() -> None:
    """A new module of the service must join the contract that keeps routes in one place."""
    contracts = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"][
        "importlinter"]["contracts"]
    routes = next(c for c in contracts if c.get("forbidden_modules") == ["contact_center.api"])
    package = PROJECT / "contact_center"
    modules = {p.stem for p in package.glob("*.py")} | {
        p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    exempt = {"__init__", "__main__", "app", "cli", "api"}
    unchecked = sorted(m for m in modules - exempt
                       if f"contact_center.{m}" not in routes["source_modules"])
    assert not unchecked, f"add to the routes contract in pyproject.toml: {unchecked}"
