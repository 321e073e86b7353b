"""Bad input gets a clear error, and the user's model is never changed."""

import numpy as np
import pytest
import torch
from torch import nn

import boundcheck as bc
from boundcheck.harness.models import mlp


def data(n=8, d=3, k=3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


def test_nan_weights():
    net = mlp([3, 4, 3], seed=0)
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    with pytest.raises(bc.InvalidSubjectError, match="NaN/inf"):
        bc.Subject(net, data())


def test_empty_data():
    x, y = data()
    with pytest.raises(bc.InvalidSubjectError, match="empty"):
        bc.Subject(mlp([3, 4, 3], seed=0), (x[:0], y[:0]))


def test_mismatched_lengths():
    x, y = data()
    with pytest.raises(bc.InvalidSubjectError, match="8 samples but Y has 5"):
        bc.Subject(mlp([3, 4, 3], seed=0), (x, y[:5]))


def test_wrong_input_width():
    x, y = data(d=5)
    with pytest.raises(bc.InvalidSubjectError, match="cannot be applied"):
        bc.Subject(mlp([3, 4, 3], seed=0), (x, y))


def test_labels_out_of_range_and_mse_shape():
    x, y = data(k=7)
    with pytest.raises(bc.InvalidSubjectError, match="class labels"):
        bc.Subject(mlp([3, 4, 3], seed=0), (x, y))
    with pytest.raises(bc.InvalidSubjectError, match="MSE targets"):
        bc.Subject(mlp([3, 4, 3], seed=0), (x, torch.randn(8, 2)), "mse")


def test_nan_inputs():
    x, y = data()
    x[2, 1] = float("inf")
    with pytest.raises(bc.InvalidSubjectError, match="NaN or inf"):
        bc.Subject(mlp([3, 4, 3], seed=0), (x, y))


def test_unknown_theorem_id_suggests():
    x, y = data()
    s = bc.Subject(mlp([3, 4, 3], seed=0), (x, y))
    with pytest.raises(bc.UnknownTheoremError, match="did you mean hessian.ws_lambda_max"):
        bc.verify(s, ["hessian.ws_lambda_mx"])


def test_unknown_loss_and_quantity():
    x, y = data()
    with pytest.raises(ValueError, match="unknown loss"):
        bc.Subject(mlp([3, 4, 3], seed=0), (x, y), "hinge")
    s = bc.Subject(mlp([3, 4, 3], seed=0), (x, y))
    with pytest.raises(KeyError, match="unknown quantities"):
        bc.measure(s, ["hessian.nope"])


def test_train_mode_dropout_is_refused_then_explicit_eval_leaves_model_alone():
    x, y = data()
    net = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Tanh(), nn.Linear(4, 3))
    net.train()
    with pytest.raises(bc.ModelModeError, match="eval_mode=True"):
        bc.Subject(net, (x, y))
    s = bc.Subject(net, (x, y), eval_mode=True)
    assert net.training, "the user's model must stay in train mode"
    assert any("eval-mode copy" in n for n in s.describe()["notes"])
    assert net[0].weight.dtype == torch.float32


def test_batchnorm_in_train_mode_is_refused():
    x, y = data()
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    with pytest.raises(bc.ModelModeError, match="BatchNorm1d"):
        bc.Subject(net, (x, y))


def test_bad_matrices():
    with pytest.raises(bc.InvalidSubjectError, match="square"):
        bc.MatrixSubject(np.ones((2, 3)))
    with pytest.raises(bc.InvalidSubjectError, match="symmetric"):
        bc.MatrixSubject(np.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(bc.InvalidSubjectError, match="NaN"):
        bc.MatrixSubject(np.array([[np.nan]]))


def test_not_a_module():
    with pytest.raises(bc.InvalidSubjectError, match="nn.Module"):
        bc.Subject(lambda x: x, data())


def test_register_rejects_duplicates():
    t = bc.get("hessian.ws_lambda_max")
    import dataclasses

    clash = dataclasses.replace(t, title="different")
    with pytest.raises(ValueError, match="already registered"):
        bc.register(clash)


# -- issue 16: refused at once, with one clear line ---------------------------------------------
@pytest.mark.parametrize("confidence", [0, 1, 1.5, float("nan"), -0.5, True, "0.99", None])
def test_confidence_out_of_range_is_refused_at_once(confidence, monkeypatch):
    from boundcheck.quantities import registry

    s = bc.Subject(mlp([3, 4, 3], seed=0), data())

    def no_measuring(*_a, **_k):
        raise AssertionError("measured")

    monkeypatch.setattr(registry.Context, "get", no_measuring)
    for call in (lambda: bc.verify(s, "hessian.ws", confidence=confidence),
                 lambda: bc.measure(s, ["hessian.trace"], confidence=confidence),
                 lambda: bc.quantities.Context(s, confidence=confidence)):
        with pytest.raises(ValueError, match="confidence must be a number strictly between 0 "
                                             "and 1"):
            call()


@pytest.mark.parametrize("field, value", [("max_dense_params", -1), ("max_probes", 2.5),
                                          ("trace_rel_half_width", float("inf")),
                                          ("lanczos_max_iter", 0), ("trace_method", "magic"),
                                          ("max_refinements", True)])
def test_bad_budgets_are_refused(field, value):
    with pytest.raises(ValueError, match=f"Budget.{field} must be"):
        bc.Budget(**{field: value})


def test_meta_device_model_or_data_is_refused():
    x, y = data()
    with torch.device("meta"):
        ghost = mlp([3, 4, 3], seed=0)
    with pytest.raises(bc.InvalidSubjectError, match="'0.weight' is on the meta device"):
        bc.Subject(ghost, (x, y))
    with pytest.raises(bc.InvalidSubjectError, match="data is on the meta device"):
        bc.Subject(mlp([3, 4, 3], seed=0), (x.to("meta"), y))
    with pytest.raises(bc.InvalidSubjectError, match="meta device holds no values"):
        bc.Subject(mlp([3, 4, 3], seed=0), (x, y), device="meta")


class FunctionalDropout(nn.Module):
    """Dropout through the functional API: no Dropout module for a scan to find."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.b(nn.functional.dropout(torch.tanh(self.a(x)), 0.5,
                                            training=self.training))


def test_functional_dropout_in_train_mode_is_refused():
    x, y = data()
    net = FunctionalDropout()
    rng = torch.get_rng_state()
    with pytest.raises(bc.ModelModeError, match="outputs change between two forward passes"):
        bc.Subject(net, (x, y))
    assert torch.equal(torch.get_rng_state(), rng), "the probe must not move the global RNG"
    s = bc.Subject(net, (x, y), eval_mode=True)
    assert net.training and any("depend on the mode" in n for n in s.describe()["notes"])
    net.eval()
    assert bc.Subject(net, (x, y)).describe()["notes"] == []
    plain = mlp([3, 4, 3], seed=0).train()  # train mode, but nothing depends on it
    assert bc.Subject(plain, (x, y)).describe()["notes"] == []


def test_nan_in_a_batchnorm_buffer_is_refused():
    x, y = data()
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).eval()
    net[1].running_var[2] = float("nan")
    with pytest.raises(bc.InvalidSubjectError, match="buffer '1.running_var' has 1 NaN/inf"):
        bc.Subject(net, (x, y))


def test_a_parameter_the_forward_never_uses_is_named_and_freezing_it_works():
    """A layer built but never called has zero Hessian rows that would count in P and broke
    the products' second backward pass; it is named, and the fix the message gives works."""

    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.spare = mlp([3, 4, 3], seed=0), nn.Linear(3, 3)

        def forward(self, x):
            return self.body(x)

    net = Unused()
    with pytest.raises(bc.InvalidSubjectError, match=r"spare\.weight, spare\.bias do not"):
        bc.Subject(net, data())
    net.spare.requires_grad_(False)
    s = bc.Subject(net, data(), trainable_only=True)
    assert s.num_params == sum(p.numel() for p in net.body.parameters())
    assert bc.measure(s, ["hessian.trace"])["hessian.trace"].kind == "exact"
