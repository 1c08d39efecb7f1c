"""The one direction of imports: raters' deployments stay light."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules_loaded_by(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in out.stdout.split()}


def test_studio_and_launcher_never_load_training_libraries():
    loaded = _modules_loaded_by("import launch, studio.app, studio.service, storage.export, storage.imports")
    assert not loaded & {"torch", "transformers", "trl", "peft", "accelerate"}


def _imports(folder: str, package: str) -> list[Path]:
    pattern = re.compile(rf"^\s*(from|import)\s+{package}\b", re.MULTILINE)
    return [path for path in (ROOT / folder).rglob("*.py") if pattern.search(path.read_text())]


def test_storage_imports_neither_studio_nor_alignment():
    assert _imports("storage", "studio") == [] and _imports("storage", "alignment") == []


def test_alignment_never_imports_gradio():
    assert _imports("alignment", "gradio") == []
