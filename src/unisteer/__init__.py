"""unisteer: steer language models with one affine delta.

model, tok = unisteer.load_model()                      # SmolLM2-135M-Instruct, float32
delta = unisteer.new_delta(model, "vector", layer=15)   # or "lora", "local_weight"
with unisteer.steer(model, delta, m=4.0):
    ...                                                 # model runs steered here
delta.save("out/vec"); delta = unisteer.load_delta("out/vec", model)
"""

from unisteer._version import __version__
from unisteer.create import new_delta
from unisteer.delta import Delta, Kind, SiteKind
from unisteer.errors import (
    DeltaLoadError,
    ModelLoadError,
    SiteError,
    SteeringError,
    UnisteerError,
)
from unisteer.fingerprint import model_fingerprint
from unisteer.merge import merged_copy
from unisteer.models import DEFAULT_MODEL, load_model
from unisteer.persistence import load_delta, save_delta
from unisteer.sites import Site, down_proj_site, find_blocks, residual_site, resolve_site
from unisteer.steer import Steering, steer

__all__ = [
    "DEFAULT_MODEL",
    "Delta",
    "DeltaLoadError",
    "Kind",
    "ModelLoadError",
    "Site",
    "SiteError",
    "SiteKind",
    "Steering",
    "SteeringError",
    "UnisteerError",
    "__version__",
    "down_proj_site",
    "find_blocks",
    "load_delta",
    "load_model",
    "merged_copy",
    "model_fingerprint",
    "new_delta",
    "residual_site",
    "resolve_site",
    "save_delta",
    "steer",
]
