"""The TOML config format: existing keys keep working, the zoo / data / checkpoint / sweep
keys parse, the example configs are valid, and mistakes give clear errors."""

from pathlib import Path

import pytest

from boundcheck.harness.config import RunConfig, flatten_paths, set_path
from boundcheck.harness.pipeline import prepare
from boundcheck.harness.sweep import expand

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.toml"))


def test_the_original_format_still_works(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text("""
name = "digits-mlp"
theorems = ["hessian.ws"]
confidence = 0.95
seed = 3
[subject]
dataset = "digits"
n_samples = 100
model = "mlp"
hidden = [8]
activation = "gelu"
bias = false
loss = "mse:0.5"
[recipe]
optimizer = "sgd"
lr = 0.1
steps = 10
[budget]
max_dense_params = 500
""")
    cfg = RunConfig.from_toml(path)
    assert cfg.subject.model_config() == {"model": "mlp", "seed": 0, "hidden": [8],
                                          "activation": "gelu", "bias": False}
    assert cfg.recipe.lr == 0.1 and cfg.recipe.momentum == 0.9  # unset: the embedded demo's
    assert cfg.budget.max_dense_params == 500 and cfg.confidence == 0.95
    net, data, targets = prepare(cfg)
    assert data.x.shape == (100, 64) and targets.shape == (100, 10)  # one-hot for MSE
    assert net[0].in_features == 64 and net[0].bias is None


def test_the_embedded_default_is_the_one_hidden_layer_tanh_mlp():
    net, data, _ = prepare(RunConfig())
    assert [type(m).__name__ for m in net] == ["Linear", "Tanh", "Linear"]
    assert net[0].out_features == 32 and data.x.shape == (1797, 64)


def test_zoo_data_and_checkpoint_keys():
    cfg = RunConfig.from_dict({
        "device": "cpu",
        "subject": {"dataset": "orthogonal", "n_samples": 6, "model": "lenet",
                    "dataset_options": {"dim": 8, "rho": 0.2}},
        "recipe": {"checkpoints": [5, 0]}})
    assert cfg.recipe.checkpoints == [0, 5]
    with pytest.raises(ValueError, match="needs image inputs"):
        prepare(cfg)
    cfg.subject.model = "mlp"
    cfg.subject.model_options = {"hidden": [3], "activation": "softplus"}
    net, data, _ = prepare(cfg)
    assert data.x.shape == (6, 8) and net[0].out_features == 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path):
    cfg = RunConfig.from_toml(path)
    jobs = expand(cfg)
    assert jobs and len({j.id for j in jobs}) == len(jobs)
    net, data, _ = prepare(RunConfig.from_dict(jobs[0].config))
    assert net(data.x[:2]).shape == (2, data.num_outputs)


def test_required_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"default_mlp.toml", "lr_batch_sweep.toml", "width_sweep.toml", "cnn.toml",
            "transformer.toml"} <= names
    sweep = RunConfig.from_toml(EXAMPLES[0].parent / "lr_batch_sweep.toml")
    jobs = expand(sweep)
    assert len(jobs) >= 12 and {RunConfig.from_dict(j.config).subject.dataset
                                for j in jobs} == {"digits"}


def test_sweep_grid_written_nested_or_dotted_is_the_same():
    a = RunConfig.from_dict({"sweep": {"grid": {"recipe": {"lr": [0.1, 0.2]}}}})
    b = RunConfig.from_dict({"sweep": {"grid": {"recipe.lr": [0.1, 0.2]}}})
    assert a.sweep == b.sweep and a.sweep.grid == {"recipe.lr": [0.1, 0.2]}


def test_digest_ignores_device_and_sweep_but_not_what_is_computed():
    a = RunConfig()
    b = RunConfig.from_dict({"device": "cuda", "sweep": {"grid": {"recipe.lr": [1.0]}}})
    c = RunConfig.from_dict({"recipe": {"lr": 0.25}})
    assert a.digest() == b.digest() != c.digest()


def test_paths():
    assert flatten_paths({"a": {"b": 1, "c": {"d": [1, 2]}}, "e.f": 3}) == {
        "a.b": 1, "a.c.d": [1, 2], "e.f": 3}
    d = {"a": {"b": 1}}
    set_path(d, "a.c.d", 2)
    assert d == {"a": {"b": 1, "c": {"d": 2}}}
    with pytest.raises(ValueError, match="not a table"):
        set_path(d, "a.b.x", 1)


@pytest.mark.parametrize("config, match", [
    ({"subjet": {}}, r"unknown config keys \['subjet'\]"),
    ({"subject": {"modle": "mlp"}}, r"unknown \[subject\] keys \['modle'\]"),
    ({"recipe": {"rate": 0.1}}, r"unknown \[recipe\] keys"),
    ({"budget": {"max_params": 1}}, r"unknown \[budget\] keys"),
    ({"recipe": {"optimizer": "rmsprop"}}, "unknown optimizer"),
    ({"sweep": {"grid": {"recipe.lr": []}}}, "non-empty list"),
    ({"sweep": {"grid": {"recipe.lr": 0.1}}}, "non-empty list"),
    ({"sweep": {"list": [1, 2]}}, r"\[\[sweep.list\]\]"),
    ({"sweep": {"zip": {}}}, r"unknown \[sweep\] keys"),
])
def test_bad_configs(config, match):
    with pytest.raises(ValueError, match=match):
        RunConfig.from_dict(config)


def test_shorthand_and_model_options_cannot_both_set_a_key():
    cfg = RunConfig.from_dict({"subject": {"hidden": [4], "model_options": {"hidden": [5]}}})
    with pytest.raises(ValueError, match="both directly and in model_options"):
        cfg.subject.model_config()


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        RunConfig.from_toml(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ValueError, match="invalid TOML"):
        RunConfig.from_toml(bad)


def test_subject_product_dtype_is_validated():
    from boundcheck.harness.config import SubjectConfig

    assert SubjectConfig(product_dtype="float32").product_dtype == "float32"
    with pytest.raises(ValueError):
        SubjectConfig(product_dtype=32)
