"""Experiment files: strict validation with file, key and line in every error."""

from __future__ import annotations

from pathlib import Path

import pytest

from unisteer.experiment import (
    BUILTIN,
    ExperimentError,
    builtin_experiment,
    load_experiment,
    parse_experiment,
)
from unisteer.experiment.config import (
    MethodSpec,
    quick_methods,
    resolve_layers,
    rule_layers,
    with_profile,
)

GOOD = """\
name = "t"
output = "out/t"

[model]
name = "smollm2-135m-instruct"
layer = 3

[data]
source = "default:formality"
train_pairs = 10

[train]
epochs = 1
lr = 0.01

[[method]]
kind = "vector"
objective = "diffmean"

[[method]]
kind = "lora"
objective = "split"
name = "my-lora"
[method.train]
gamma = 3.0
"""


def test_a_good_file_reads_into_an_experiment() -> None:
    exp = parse_experiment(GOOD, "t.toml")
    assert exp.layer == 3 and exp.data == "default:formality" and exp.train_pairs == 10
    assert [m.name for m in exp.methods] == ["vector-diffmean", "my-lora"]
    config = exp.method_config(exp.methods[1])
    assert (config.gamma, config.lr, config.epochs, config.seed) == (3.0, 0.01, 1, 0)
    assert exp.budget_level == 0.5  # the point rule unless asked
    assert parse_experiment(GOOD + "[fit]\nbudget_level = 0.9\n", "t.toml").budget_level == 0.9


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("layer = 3", "layers = 3"), r"t\.toml:6: model\.layers: unknown key"),
        (("epochs = 1", "epochs = 'one'"), r"t\.toml:13: train\.epochs: .*int"),
        (("train_pairs = 10", "train_pairs = 0"), r"t\.toml:10: data\.train_pairs: must be"),
        (("lr = 0.01", "learning_rate = 0.01"), r"t\.toml:14: train\.learning_rate: unknown"),
        (("gamma = 3.0", "gama = 3.0"), r"t\.toml:25: method\[1\]\.train\.gama: unknown"),
        (('objective = "split"', 'objective = "dpo"'), r"t\.toml:22: method\[1\]\.objective"),
        (('kind = "vector"', 'kind = "vectr"'), r"t\.toml:17: method\[0\]\.kind"),
        (('name = "t"', 'nam = "t"'), r"t\.toml:1: nam: unknown key"),
        (("layer = 3", "layer = true"), r"t\.toml:6: model\.layer: expected int"),
        (
            ('source = "default:formality"', 'source = "no/such/file.jsonl"'),
            r"t\.toml:9: data\.source: no such file",
        ),
        (('name = "my-lora"', 'name = "vector-diffmean"'), r"two methods are named"),
        (("[data]", "[data"), r"t\.toml: not valid TOML"),
        (
            ("gamma = 3.0", "gamma = 3.0\n[report]\nsamples = -1"),
            r"t\.toml:27: report\.samples: must",
        ),
        (("gamma = 3.0", "gamma = 3.0\n[sweep]\nrefine_rounds = 0"), r"sweep\.refine_rounds: must"),
        (
            ("gamma = 3.0", "gamma = 3.0\n[fit]\nbudget_level = 0.3"),
            r"t\.toml:27: fit\.budget_level: must be a one-sided confidence in \[0\.5, 1\)",
        ),
        (
            ("gamma = 3.0", "gamma = 3.0\n[fit]\nbudget_level = 1"),
            r"t\.toml:27: fit\.budget_level: must be",
        ),
        (("train_pairs = 10", "max_tokens = 0"), r"t\.toml:10: data\.max_tokens: must be"),
        (("train_pairs = 10", 'lenient = "yes"'), r"t\.toml:10: data\.lenient: expected bool"),
        (
            ("train_pairs = 10", "format = 'jsonl'"),
            r"t\.toml:10: data\.format: expected one of auto, pairs",
        ),
        (
            ('objective = "diffmean"', 'objective = "diffmean"\nlayers = "every:0"'),
            r"t\.toml:19: method\[0\]\.layers: expected a list of blocks, 'all' or 'every:K'",
        ),
        (
            ('objective = "diffmean"', 'objective = "diffmean"\nlayers = [1, 1]'),
            r"t\.toml:19: method\[0\]\.layers: expected distinct block indices",
        ),
        (
            ('objective = "diffmean"', 'objective = "diffmean"\nlayers = [-1]'),
            r"method\[0\]\.layers: expected distinct",
        ),
        (
            ('objective = "diffmean"', 'objective = "diffmean"\nlayers = []'),
            r"method\[0\]\.layers: expected distinct",
        ),
    ],
)
def test_every_mistake_names_file_key_and_line(change: tuple[str, str], message: str) -> None:
    text = GOOD.replace(*change)
    with pytest.raises(ExperimentError, match=message):
        parse_experiment(text, "t.toml")


def test_no_methods_and_diffmean_for_lora() -> None:
    with pytest.raises(ExperimentError, match="at least one"):
        parse_experiment('name = "x"\n', "x.toml")
    bad = GOOD.replace(
        'kind = "vector"\nobjective = "diffmean"', 'kind = "lora"\nobjective = "diffmean"'
    )
    with pytest.raises(ExperimentError, match="vectors only"):
        parse_experiment(bad, "x.toml")


def test_relative_data_paths_are_read_beside_the_file(tmp_path: Path) -> None:
    (tmp_path / "pairs.jsonl").write_text('{"query": "q", "positive": "a", "negative": "b"}\n')
    (tmp_path / "e.toml").write_text(GOOD.replace("default:formality", "pairs.jsonl"))
    exp = load_experiment(tmp_path / "e.toml")
    assert exp.data == str(tmp_path / "pairs.jsonl")
    with pytest.raises(ExperimentError, match="cannot read the experiment file"):
        load_experiment(tmp_path / "missing.toml")


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_experiments_are_valid(name: str) -> None:
    exp = builtin_experiment(name)
    # fewer than 21 coarse points only where the adaptive sweep refines them
    assert exp.methods and (exp.sweep_points >= 21 or (exp.adaptive and exp.sweep_points >= 7))
    quick = with_profile(exp, "quick")
    assert quick.sweep_points == 7 and quick.output.endswith("-quick")
    full = with_profile(exp, "full")
    assert full.train_pairs is None and full.test_pairs is None


def test_quick_keeps_every_kind_objective_and_layer_once() -> None:
    def spec(kind: str, objective: str, layer: int | None = None) -> MethodSpec:
        return MethodSpec(kind, objective, f"{kind}-{objective}-{layer}", layer=layer)

    methods = (
        spec("vector", "diffmean"),
        spec("vector", "sft"),
        spec("lora", "sft"),
        spec("lora", "split"),  # a new objective
        spec("lora", "reps", 3),  # a new objective and layer
        spec("local_weight", "sft"),  # a new kind
        spec("local_weight", "split"),  # nothing new: left out
        spec("vector", "diffmean", 3),  # nothing new (layer 3 seen): left out
        spec("vector", "diffmean", 5),  # a new layer
    )
    kept = [m.name for m in quick_methods(methods)]
    assert kept == [m.name for i, m in enumerate(methods) if i not in (6, 7)]
    quick = with_profile(builtin_experiment("default"), "quick")
    assert len(quick.methods) == 6 and not quick.adaptive and quick.train_pairs == 4


def test_default_experiment_has_every_kind_and_objective() -> None:
    exp = builtin_experiment("default")
    pairs = {(m.kind, m.objective) for m in exp.methods}
    assert ("vector", "diffmean") in pairs
    for kind in ("vector", "lora", "local_weight"):
        for objective in ("sft", "reps", "split"):
            assert (kind, objective) in pairs
    with pytest.raises(ExperimentError, match="no built-in experiment"):
        load_experiment("nonesuch")


def test_a_list_of_layers_makes_one_method_per_block() -> None:
    exp = parse_experiment(
        GOOD.replace('objective = "diffmean"', 'objective = "diffmean"\nlayers = [2, 0]'), "t.toml"
    )
    names = [(m.name, m.layer) for m in exp.methods]
    assert names == [("vector-diffmean-L2", 2), ("vector-diffmean-L0", 0), ("my-lora", None)]
    assert resolve_layers(exp, 4).methods == exp.methods  # nothing left to expand
    with pytest.raises(ExperimentError, match=r"t\.toml: method 'vector-diffmean-L2': block 2"):
        resolve_layers(exp, 2)


def test_a_layer_rule_is_expanded_once_the_model_is_known() -> None:
    assert rule_layers("all", 3) == [0, 1, 2]
    assert rule_layers("every:3", 8) == [0, 3, 6]
    assert rule_layers("every:10", 8) == [0]
    with pytest.raises(ValueError, match="every:K"):
        rule_layers("every:x", 8)
    exp = parse_experiment(
        GOOD.replace('objective = "diffmean"', 'objective = "diffmean"\nlayers = "every:3"'),
        "t.toml",
    )
    assert exp.methods[0].layers == "every:3" and exp.methods[0].layer is None
    resolved = resolve_layers(exp, 8)
    assert [(m.name, m.layer) for m in resolved.methods] == [
        ("vector-diffmean-L0", 0),
        ("vector-diffmean-L3", 3),
        ("vector-diffmean-L6", 6),
        ("my-lora", None),
    ]
    # the experiment's own layer is checked too (layer = 3 in GOOD)
    with pytest.raises(
        ExperimentError, match=r"\[model\] layer: block 3 does not exist; the model has 3"
    ):
        resolve_layers(exp, 3)
    clash = GOOD.replace('name = "my-lora"', 'name = "vector-diffmean-L3"').replace(
        'objective = "diffmean"', 'objective = "diffmean"\nlayers = "every:3"'
    )
    with pytest.raises(ExperimentError, match="two methods are named 'vector-diffmean-L3'"):
        resolve_layers(parse_experiment(clash, "t.toml"), 8)
