"""unisteer: steer language models with one affine delta.

    import unisteer
    model, tok = unisteer.load_model()                       # SmolLM2-135M-Instruct, float32
    pairs = unisteer.load_pairs("default:optimism")
    delta = unisteer.train(model, tok, pairs, kind="vector", objective="split")
    with unisteer.steer(model, delta, m=8.0):
        ...                                                  # the model runs steered here
    result = unisteer.sweep(model, tok, pairs[:8], delta, [-8.0, 0.0, 8.0])
    fit = unisteer.fit_sweep(result.table)
    m = unisteer.choose_multiplier(fit, max_util_drop=1.0).m
    unisteer.save_delta(delta, "out/vec"); delta = unisteer.load_delta("out/vec", model)

The public names below are imported on first use (PEP 562), so ``import unisteer`` and the
commands that need no model do not import torch or transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unisteer._version import __version__
from unisteer.errors import (
    DataError,
    DeltaLoadError,
    ModelLoadError,
    SiteError,
    SteeringError,
    UnisteerError,
    UsageError,
)
from unisteer.lazy import lazy_exports

if TYPE_CHECKING:
    from unisteer.core.create import new_delta
    from unisteer.core.delta import Delta, Kind, SiteKind
    from unisteer.core.fingerprint import model_fingerprint
    from unisteer.core.io import (
        load_delta,
        load_steerable,
        load_steering_set,
        save_delta,
        save_steering_set,
    )
    from unisteer.core.merge import merged_copy
    from unisteer.core.sites import (
        Site,
        down_proj_site,
        find_blocks,
        middle_layer,
        residual_site,
        resolve_site,
    )
    from unisteer.core.steer import Steering, steer
    from unisteer.core.steering_set import SteeringSet
    from unisteer.data.pairs import PairSet, PolarityPair
    from unisteer.data.sources import load_pairs
    from unisteer.fit.derive import choose_multiplier
    from unisteer.fit.errors import FitError
    from unisteer.fit.fitting import fit_sweep
    from unisteer.generation import generate
    from unisteer.interop.gguf import export_control_vector, import_control_vector
    from unisteer.interop.merged import export_merged
    from unisteer.interop.peft import export_peft, import_peft
    from unisteer.interop.steering_vectors import import_steering_vector
    from unisteer.model import DEFAULT_MODEL
    from unisteer.model.load import load_model
    from unisteer.scoring.sweep import score_pairs, sweep
    from unisteer.scoring.table import SweepResult
    from unisteer.training.trainer import TrainingDiverged, train

#: Where each public name lives (imported on first access).
_HOMES: dict[str, str] = {
    "new_delta": "unisteer.core.create",
    "Delta": "unisteer.core.delta",
    "Kind": "unisteer.core.delta",
    "SiteKind": "unisteer.core.delta",
    "model_fingerprint": "unisteer.core.fingerprint",
    "load_delta": "unisteer.core.io",
    "save_delta": "unisteer.core.io",
    "load_steerable": "unisteer.core.io",
    "load_steering_set": "unisteer.core.io",
    "save_steering_set": "unisteer.core.io",
    "merged_copy": "unisteer.core.merge",
    "Site": "unisteer.core.sites",
    "down_proj_site": "unisteer.core.sites",
    "find_blocks": "unisteer.core.sites",
    "middle_layer": "unisteer.core.sites",
    "residual_site": "unisteer.core.sites",
    "resolve_site": "unisteer.core.sites",
    "Steering": "unisteer.core.steer",
    "steer": "unisteer.core.steer",
    "SteeringSet": "unisteer.core.steering_set",
    "PairSet": "unisteer.data.pairs",
    "PolarityPair": "unisteer.data.pairs",
    "load_pairs": "unisteer.data.sources",
    "choose_multiplier": "unisteer.fit.derive",
    "FitError": "unisteer.fit.errors",
    "fit_sweep": "unisteer.fit.fitting",
    "generate": "unisteer.generation",
    "export_control_vector": "unisteer.interop.gguf",
    "import_control_vector": "unisteer.interop.gguf",
    "export_merged": "unisteer.interop.merged",
    "export_peft": "unisteer.interop.peft",
    "import_peft": "unisteer.interop.peft",
    "import_steering_vector": "unisteer.interop.steering_vectors",
    "DEFAULT_MODEL": "unisteer.model",
    "load_model": "unisteer.model.load",
    "score_pairs": "unisteer.scoring.sweep",
    "sweep": "unisteer.scoring.sweep",
    "SweepResult": "unisteer.scoring.table",
    "TrainingDiverged": "unisteer.training.trainer",
    "train": "unisteer.training.trainer",
}

__all__ = [
    "DEFAULT_MODEL",
    "DataError",
    "Delta",
    "DeltaLoadError",
    "FitError",
    "Kind",
    "ModelLoadError",
    "PairSet",
    "PolarityPair",
    "Site",
    "SiteError",
    "SiteKind",
    "Steering",
    "SteeringError",
    "SteeringSet",
    "SweepResult",
    "TrainingDiverged",
    "UnisteerError",
    "UsageError",
    "__version__",
    "choose_multiplier",
    "down_proj_site",
    "export_control_vector",
    "export_merged",
    "export_peft",
    "find_blocks",
    "fit_sweep",
    "generate",
    "import_control_vector",
    "import_peft",
    "import_steering_vector",
    "load_delta",
    "load_model",
    "load_pairs",
    "load_steerable",
    "load_steering_set",
    "merged_copy",
    "middle_layer",
    "model_fingerprint",
    "new_delta",
    "residual_site",
    "resolve_site",
    "save_delta",
    "save_steering_set",
    "score_pairs",
    "steer",
    "sweep",
    "train",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _HOMES)
