"""Bad input to ``boundcheck run`` fails before any work, and the embedded default run and
examples/default_mlp.toml are the same run (the same config digest)."""

from pathlib import Path

from boundcheck.cli import main
from boundcheck.harness.config import RunConfig

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "default_mlp.toml"


def test_unknown_theorem_id_is_rejected_before_training(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--theorems", "hessian.nope", "-o", str(out), "-q"]) == 2
    assert "unknown theorem id 'hessian.nope'" in capsys.readouterr().err
    assert not out.exists()  # no empty output folder left behind


def test_unknown_model_option_is_rejected_before_training(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[subject]\nmodel = "mlp"\n[subject.model_options]\nwidth = 3\n')
    assert main(["run", str(cfg), "-o", str(tmp_path / "out"), "-q"]) == 2
    assert "does not take option(s) ['width']" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_default_run_and_its_example_hash_the_same():
    assert RunConfig().digest() == RunConfig.from_toml(EXAMPLE).digest()
    changed = RunConfig.from_toml(EXAMPLE)
    changed.subject.hidden = [16]
    assert changed.digest() != RunConfig().digest()
