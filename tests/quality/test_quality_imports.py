import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _top_level_modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in out.stdout.split()}


def test_quality_engine_loads_no_database_ui_or_training_library():
    loaded = _top_level_modules_after(
        "import storage.quality.agreement, storage.quality.raters, storage.quality.consensus, storage.quality.flags"
    )
    assert "krippendorff" in loaded and "statsmodels" in loaded  # the statement did import the engine
    assert not loaded & {"sqlmodel", "sqlalchemy", "gradio", "torch", "transformers", "trl"}


def test_consensus_alone_stays_light():
    loaded = _top_level_modules_after("import storage.quality.consensus")
    assert "pandas" in loaded
    assert not loaded & {"statsmodels", "sklearn", "krippendorff", "scipy"}
