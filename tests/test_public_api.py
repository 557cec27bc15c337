"""The public API lives in ``unisteer`` itself, and what needs no model imports no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import unisteer

PUBLIC = [
    "load_model",
    "new_delta",
    "steer",
    "train",
    "sweep",
    "score_pairs",
    "fit_sweep",
    "choose_multiplier",
    "generate",
    "load_delta",
    "save_delta",
    "merged_copy",
    "SteeringSet",
    "save_steering_set",
    "load_steering_set",
    "load_steerable",
    "export_control_vector",
    "export_peft",
    "export_merged",
    "import_control_vector",
    "import_peft",
    "import_steering_vector",
    "load_pairs",
    "PolarityPair",
    "PairSet",
    "Delta",
    "Steering",
    "UnisteerError",
    "DataError",
    "SiteError",
    "DeltaLoadError",
    "ModelLoadError",
    "SteeringError",
    "FitError",
]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_names_resolve(name: str) -> None:
    assert name in unisteer.__all__ and name in dir(unisteer)
    assert getattr(unisteer, name) is not None


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = unisteer.nope  # type: ignore[attr-defined]


def test_top_level_verbs_are_functions() -> None:
    """Folders are not named like the verbs: ``unisteer.train`` is always the function."""
    for name in ("train", "sweep", "generate", "steer"):
        assert callable(getattr(unisteer, name)) and not isinstance(
            getattr(unisteer, name), type(unisteer)
        )


def _imports_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_help_and_data_inspect_do_not_import_torch(tmp_path: Path) -> None:
    data = tmp_path / "p.jsonl"
    data.write_text('{"query": "q", "positive": "yes please", "negative": "no thanks"}\n')
    for argv in (["--help"], ["data", "inspect", str(data)]):
        code = (
            "import contextlib, io\nfrom unisteer.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            f"    main({argv!r})"
        )
        loaded = _imports_after(code)
        assert "torch" not in loaded and "transformers" not in loaded, argv
