"""A wheel that runs: `pip wheel` of the project, installed into a fresh virtual environment, gives a
working command line and finds its recipes and model-card template inside the installed packages.

The fresh environment gets the project's wheel only (`--no-deps`); its dependencies are borrowed from the
test environment through `PYTHONPATH` (the same pinned versions, without reinstalling several GB). The
source checkout is kept off `sys.path` (the commands run from a temporary folder), and the editable install
of the test environment is not active there (`PYTHONPATH` folders do not process `.pth` files), so every
project module is imported from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("modeling_celltosg", "dataset_script", "omnicelltosg")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict, Path]:
    """(fresh venv's python, environment for it, the wheel file)."""
    work = tmp_path_factory.mktemp("wheel")
    # Build from a copy of the files git would ship: setuptools writes its build folder (`build/lib`) into
    # the source tree, which here is the recipe folder.
    source = work / "source"
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for name in listed:
        src, dst = ROOT / name, source / name
        if src.is_symlink() or src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(work / "dist"), str(source)], check=True, cwd=work)
    (wheel,) = (work / "dist").glob("omnicelltosg-*.whl")
    env_dir = work / "fresh"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True,
                   cwd=work)
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    env.pop("PYTHONHOME", None)
    return python, env, wheel


def test_wheel_holds_the_recipes_and_the_model_card_template(installed):
    _, _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = {Path(n).name for n in names if n.startswith("dataset_script/recipes/")}
    shipped = {p.name for p in (ROOT / "build").iterdir() if p.suffix in (".yaml", ".md")}
    assert shipped <= recipes, f"missing from the wheel: {sorted(shipped - recipes)}"
    # the template is the top-level model_card.md, copied into the wheel (not a dangling link)
    template = zipfile.ZipFile(wheel).read("dataset_script/recipes/model_card.md").decode()
    assert template == (ROOT / "model_card.md").read_text()
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


def test_installed_wheel_runs_and_resolves_its_files(installed, tmp_path):
    python, env, _ = installed
    probe = ("import sys, dataset_script, omnicelltosg, modeling_celltosg\n"
             "from dataset_script.build.recipe import DEFAULT_RECIPE, RECIPE_DIR, load_recipe\n"
             "from omnicelltosg.workflows.report import MODEL_CARD_TEMPLATE\n"
             f"root = {str(ROOT)!r}\n"
             "for m in (dataset_script, omnicelltosg, modeling_celltosg):\n"
             "    assert 'site-packages' in m.__file__ and not m.__file__.startswith(root), m.__file__\n"
             "assert DEFAULT_RECIPE.is_file() and MODEL_CARD_TEMPLATE.is_file()\n"
             "assert not str(RECIPE_DIR).startswith(root), RECIPE_DIR\n"
             "load_recipe(DEFAULT_RECIPE)\n"
             "print(DEFAULT_RECIPE)\n")
    out = subprocess.run([str(python), "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "site-packages" in out.stdout
    cli = subprocess.run([str(python.parent / "omnicelltosg"), "demo", "--help"], env=env, cwd=tmp_path,
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "usage: omnicelltosg demo" in cli.stdout
