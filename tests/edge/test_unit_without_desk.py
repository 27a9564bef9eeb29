"""The unit runtime (every ``edge`` module) imports and runs with the desk and workstation dependencies unimportable,
and loads no ``desk`` module doing so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("duckdb", "pyarrow", "matplotlib", "torch", "transformers", "sklearn", "ray", "onnx", "desk", "export",
           "calibration")
BLOCKER = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {BLOCKED!r}:
            raise ModuleNotFoundError('blocked: ' + name, name=name)
sys.meta_path.insert(0, Block())
"""
IMPORT_ALL = BLOCKER + """
import importlib, pkgutil, edge
names = [m.name for m in pkgutil.walk_packages(edge.__path__, 'edge.') if m.name != 'edge.__main__']
for name in names:
    importlib.import_module(name)
print(len(names), 'modules', [m for m in sys.modules if m.split('.')[0] in ('desk', 'export', 'calibration')])
"""
CLI = BLOCKER + "from edge.cli import app\napp(prog_name='biolingual-edge')\n"


def blocked(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


def test_every_unit_module_imports_without_desk_dependencies() -> None:
    result = blocked(IMPORT_ALL)
    assert result.returncode == 0, result.stderr
    count, _, loaded = result.stdout.partition(" modules ")
    assert int(count) > 60 and loaded.strip() == "[]"


def test_analyze_and_run_keep_embeddings_without_desk_dependencies(example_bundle: Path,
                                                                   example_labels: tuple[Path, Path],
                                                                   toad_in_night: Path, tmp_path: Path) -> None:
    analyzed = blocked(CLI, "analyze", str(toad_in_night), "--labels", str(example_labels[0]), "--bundle",
                       str(example_bundle), "--out", str(tmp_path / "out"), "--embeddings", str(tmp_path / "emb"))
    assert analyzed.returncode == 0, analyzed.stderr
    assert len(list((tmp_path / "emb" / "embeddings").glob("*.emb"))) == 1
    ran = blocked(CLI, "run", "--labels", str(example_labels[0]), "--bundle", str(example_bundle), "--log-dir",
                  str(tmp_path / "card"), "--input", str(toad_in_night), "--fast", "--threshold", "0.5",
                  "--heartbeat", "3600")
    assert ran.returncode == 0, ran.stderr
    assert len(list((tmp_path / "card" / "embeddings").glob("*.emb"))) == 1
    # the block is real: the desk side, which needs duckdb, says so in one line
    desk = blocked(CLI, "logs", "collect", str(tmp_path / "card"), "--into", str(tmp_path / "season.duckdb"))
    assert desk.returncode != 0 and "need 'desk'" in desk.stderr and "Traceback" not in desk.stderr
