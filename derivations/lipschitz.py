"""T11b, c — the Lipschitz sandwich and the Kantorovich–Rubinstein gap (MacDonald, Valmadre,
Lucey, "On progressive sharpening, flat minima and generalisation", arXiv 2305.14683; LipSDP:
Fazlyab, Robey, Hassani, Morari, Pappas, NeurIPS 2019).

Statement (b), ℓ₂ norms, f a chain of affine maps W_l (convolutions as operators), linear
pooling and elementwise σ slope-restricted in [α, β], ``Lip(σ) = max(|α|, |β|)``:

    max_i ‖J_x(x_i)‖₂ ≤ Lip(f) ≤ min(LipSDP(f), Π_l ‖W_l‖₂ · Π Lip(σ)),

the left side over samples where f is differentiable; any pair a ≠ b also gives
``‖f(a) − f(b)‖/‖a − b‖ ≤ Lip(f)``. Statement (c) **(derived)**: for cross-entropy and each
class k, with μ_k, ν_k the empirical train and test inputs of class k and g_k = ℓ(f(·), k):

    |E_ν g_k − E_μ g_k| ≤ √2 · Lip(f) · W_1(μ_k, ν_k).

Proof, step by step (checked by :meth:`Derivation.verify`):
(1) submultiplicativity ‖AB‖₂ ≤ ‖A‖₂‖B‖₂ and (2) slope restriction ⇒ ‖σ(a) − σ(b)‖ ≤
Lip(σ)‖a − b‖ coordinatewise, with GELU′'s extremes at ±√2 (3, 4) — so (5) a chain's
difference quotients are at most the product bound (random tanh/ReLU/sigmoid chains).
(6) Directional derivatives are limits of difference quotients, so ‖J_x(x)v‖ ≤ Lip(f) where f
is differentiable (mean value); (7) checks ‖J_x‖₂ ≤ product bound end to end.
(8) LipSDP soundness: with v = (Δx_0, Δx), the quadratic constraints give vᵀMv ≥
‖Δf‖² − ρ‖Δx_0‖², so M(ρ, T) ⪯ 0 for ANY diagonal T ⪰ 0 gives Lip(f) ≤ √ρ — that is why
certifying the solver's T (instead of trusting its optimum) suffices; checked on random chains
with random T and the smallest ρ for that T (a Schur complement).
(9) ‖softmax(z) − e_k‖² ≤ 2(1 − p_k)² ≤ 2, so ℓ(·, k) is √2-Lipschitz in z and g_k is
√2·Lip(f)-Lipschitz. (10) KR weak duality: for a coupling π of μ and ν,
|∫g dν − ∫g dμ| = |∫(g(y) − g(x)) dπ| ≤ Lip(g) ∫‖x − y‖ dπ, minimised over π: W_1; checked on
random point sets with the optimal assignment (equal sizes).
"""

from __future__ import annotations

import functools
import math
import random

import numpy as np
import sympy

from boundcheck.core.activations import GELU_INF_D1, GELU_SUP_D1
from boundcheck.core.theorem import Theorem

from .compression import random_matrix, spectral
from .proof import Derivation, Step

SOURCE = ("J. L. MacDonald, J. Valmadre, S. Lucey, On progressive sharpening, flat minima and "
          "generalisation, arXiv 2305.14683; M. Fazlyab et al., Efficient and accurate "
          "estimation of Lipschitz constants for deep neural networks (LipSDP), NeurIPS 2019")

# --- the theorems ----------------------------------------------------------------------------
lower = sympy.Symbol(r"\underline{\mathrm{Lip}}(f)", nonnegative=True)
upper = sympy.Symbol(r"\overline{\mathrm{Lip}}(f)", nonnegative=True)
jac_max = sympy.Symbol(r"\max_i \|J_x(x_i)\|_2", nonnegative=True)
quotient = sympy.Symbol(r"\max \frac{\|f(a)-f(b)\|}{\|a-b\|}", nonnegative=True)
lipsdp = sympy.Symbol(r"\mathrm{LipSDP}(f)", nonnegative=True)
product = sympy.Symbol(r"\prod_l \|W_l\|_2 \mathrm{Lip}(\sigma)^{L-1}", nonnegative=True)
kr_ratio = sympy.Symbol(r"\max_k \frac{|E_{\nu_k} g_k - E_{\mu_k} g_k|}{\sqrt{2} W_1(\mu_k,"
                        r"\nu_k)}", nonnegative=True)

_FAMILY = "lipschitz"
_CHAIN_CHECK = "lipschitz.chain_affine_layers"  # NOT_APPLICABLE off a chain, up front
_CHAIN = ("Chains only (nn.Sequential of Linear/Conv, Flatten, non-overlapping pooling and "
          "slope-restricted σ); other layers are NOT_APPLICABLE with the reason.")

SANDWICH = Theorem(
    id="lipschitz.sandwich",
    applies_to=_CHAIN_CHECK,
    title="T11b Lipschitz sandwich: best lower bound ≤ min(LipSDP, product bound)",
    lhs=lower, rhs=upper,
    symbols={lower: "lipschitz.lower", upper: "lipschitz.upper"},
    source=SOURCE, family=_FAMILY,
    notes="Slack = upper/lower: how far apart the certified sides of Lip(f) are. " + _CHAIN)

JACOBIAN_LIPSDP = Theorem(
    id="lipschitz.jacobian_le_lipsdp",
    applies_to=_CHAIN_CHECK,
    title="T11b max_i ‖J_x(x_i)‖₂ ≤ LipSDP(f) (certified multipliers)",
    lhs=jac_max, rhs=lipsdp,
    symbols={jac_max: "lipschitz.jacobian_lower", lipsdp: "lipschitz.lipsdp"},
    source=SOURCE, family=_FAMILY,
    notes="Samples at a ReLU kink or a max-pool tie are left out. " + _CHAIN)

JACOBIAN_PRODUCT = Theorem(
    id="lipschitz.jacobian_le_product",
    applies_to=_CHAIN_CHECK,
    title="T11b max_i ‖J_x(x_i)‖₂ ≤ Π_l ‖W_l‖₂ · Lip(σ)^{L−1}",
    lhs=jac_max, rhs=product,
    symbols={jac_max: "lipschitz.jacobian_lower", product: "lipschitz.product"},
    source=SOURCE, family=_FAMILY,
    notes="Lip(σ): tanh, ReLU 1, sigmoid ¼, GELU 1.1290; average pooling 1/√k. " + _CHAIN)

QUOTIENT_LIPSDP = Theorem(
    id="lipschitz.quotient_le_lipsdp",
    applies_to=_CHAIN_CHECK,
    title="T11b searched difference quotient ‖f(a) − f(b)‖/‖a − b‖ ≤ LipSDP(f)",
    lhs=quotient, rhs=lipsdp,
    symbols={quotient: "lipschitz.quotient_lower", lipsdp: "lipschitz.lipsdp"},
    source=SOURCE, family=_FAMILY,
    notes="Valid at kinks too. " + _CHAIN)

KANTOROVICH_RUBINSTEIN = Theorem(
    id="lipschitz.kr_cross_entropy",
    title="T11c (derived) per class: |E_test g_k − E_train g_k| ≤ √2 Lip(f) W_1(μ_k, ν_k)",
    lhs=kr_ratio, rhs=upper,
    symbols={kr_ratio: "kr.cross_entropy_ratio_max", upper: "lipschitz.upper"},
    source=SOURCE + " (derived)", family=_FAMILY,
    notes="Needs held-out data (Subject test_data / config test_fraction) and cross-entropy. "
          "Slack = the worst class's; loose by design (a worst-case slope times W_1).")

THEOREMS = (SANDWICH, JACOBIAN_LIPSDP, JACOBIAN_PRODUCT, QUOTIENT_LIPSDP,
            KANTOROVICH_RUBINSTEIN)


# --- random chains (numpy) -------------------------------------------------------------------
def _gelu(z):
    return 0.5 * z * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))


ACTIVATIONS = {  # name: (σ, α, β)
    "tanh": (np.tanh, 0.0, 1.0),
    "relu": (lambda z: np.maximum(z, 0.0), 0.0, 1.0),
    "sigmoid": (lambda z: 0.5 * (1 + np.tanh(0.5 * z)), 0.0, 0.25),
    "gelu": (_gelu, GELU_INF_D1, GELU_SUP_D1),
}


def _random_chain(rng: random.Random):
    sizes = [rng.randint(1, 5) for _ in range(rng.randint(3, 5))]
    mats = [random_matrix(rng, b, a) * 10 ** rng.uniform(-1, 0.5)
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    biases = [np.asarray([rng.gauss(0, 1) for _ in range(m.shape[0])]) for m in mats]
    name = rng.choice(sorted(ACTIVATIONS))
    sigma, a, b = ACTIVATIONS[name]

    def f(x):
        h = x
        for k, (w, c) in enumerate(zip(mats, biases, strict=True)):
            h = w @ h + c
            if k < len(mats) - 1:
                h = sigma(h)
        return h

    lip_sigma = max(abs(a), abs(b))
    bound = math.prod(spectral(w) for w in mats) * lip_sigma ** (len(mats) - 1)
    return f, mats, (a, b), bound, sizes[0]


def _random_pair(rng: random.Random, dim: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray([rng.gauss(0, 2) for _ in range(dim)])
    return a, a + np.asarray([rng.gauss(0, 10 ** rng.uniform(-3, 0)) for _ in range(dim)])


def _chain_quotient(rng: random.Random) -> tuple[float, float]:
    f, _, _, bound, dim = _random_chain(rng)
    a, b = _random_pair(rng, dim)
    return float(np.linalg.norm(f(a) - f(b)) / np.linalg.norm(a - b)), bound


def _submultiplicative(rng: random.Random) -> tuple[float, float]:
    k, h, d = (rng.randint(1, 6) for _ in range(3))
    a, w = random_matrix(rng, k, h), random_matrix(rng, h, d)
    return spectral(a @ w), spectral(a) * spectral(w)


def _slope(rng: random.Random) -> tuple[float, float]:
    """max(|q − (α+β)/2|) ≤ (β − α)/2 for σ's difference quotient q, i.e. α ≤ q ≤ β."""
    name = rng.choice(sorted(ACTIVATIONS))
    sigma, a, b = ACTIVATIONS[name]
    x = rng.uniform(-6, 6)
    y = x + rng.choice((-1, 1)) * 10 ** rng.uniform(-4, 1)
    q = float((sigma(np.asarray(y)) - sigma(np.asarray(x))) / (y - x))
    return abs(q - (a + b) / 2), (b - a) / 2 * (1 + 1e-9) + 1e-12


def _jacobian_below_product(rng: random.Random) -> tuple[float, float]:
    f, mats, _, bound, dim = _random_chain(rng)
    x = np.asarray([rng.gauss(0, 2) for _ in range(dim)])
    eps = 1e-6
    jac = np.stack([(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in np.eye(dim)], axis=1)
    return spectral(jac), bound * (1 + 1e-5) + 1e-9


def lipsdp_rho(mats, slopes, t: np.ndarray) -> float | None:
    """Smallest ρ with M(ρ, T) ⪯ 0 for fixed T (Schur complement on the hidden block), or None
    when the hidden block is not negative definite (no ρ works). Built layer by layer."""
    n0 = mats[0].shape[1]
    widths = [w.shape[0] for w in mats[:-1]]
    offs = np.cumsum([n0] + widths)
    d = int(offs[-1])
    m = np.zeros((d, d))
    alpha, beta = slopes
    row = 0
    for k, w in enumerate(mats[:-1]):
        src = slice(0 if k == 0 else int(offs[k - 1]), int(offs[k]))
        dst = slice(int(offs[k]), int(offs[k + 1]))
        tk = t[row:row + w.shape[0]]
        row += w.shape[0]
        pick = np.zeros((w.shape[0], d))
        pick[:, src] = w
        out = np.zeros((w.shape[0], d))
        out[:, dst] = np.eye(w.shape[0])
        m += -2 * alpha * beta * pick.T @ (tk[:, None] * pick)
        m += (alpha + beta) * (pick.T @ (tk[:, None] * out) + out.T @ (tk[:, None] * pick))
        m += -2 * out.T @ (tk[:, None] * out)
    last = mats[-1]
    m[d - last.shape[1]:, d - last.shape[1]:] += last.T @ last
    hid = m[n0:, n0:]
    if np.linalg.eigvalsh(hid)[-1] >= 0:
        return None
    schur = m[:n0, :n0] - m[:n0, n0:] @ np.linalg.solve(hid, m[n0:, :n0])
    return max(float(np.linalg.eigvalsh(schur)[-1]), 0.0)


def _lipsdp_sound(rng: random.Random) -> tuple[float, float]:
    f, mats, slopes, _, dim = _random_chain(rng)
    widths = [w.shape[0] for w in mats[:-1]]
    t = np.asarray([10 ** rng.uniform(-1, 1) for _ in range(sum(widths))])
    # earlier layers' multipliers grow faster, so the coupling terms are dominated
    grow = np.concatenate([np.full(w, 4.0 ** (len(widths) - k)) for k, w in enumerate(widths)])
    rho = lipsdp_rho(mats, slopes, t)
    while rho is None:
        t = t * grow
        rho = lipsdp_rho(mats, slopes, t)
    a, b = _random_pair(rng, dim)
    q = float(np.linalg.norm(f(a) - f(b)) / np.linalg.norm(a - b))
    return q, math.sqrt(rho) * (1 + 1e-8) + 1e-12


def _softmax_gap(rng: random.Random) -> tuple[float, float]:
    k = rng.randint(2, 8)
    z = np.asarray([rng.gauss(0, 10 ** rng.uniform(-1, 1.5)) for _ in range(k)])
    p = np.exp(z - z.max())
    p /= p.sum()
    cls = rng.randrange(k)
    e = np.zeros(k)
    e[cls] = 1.0
    return float(np.sum((p - e) ** 2)), 2 * (1 - p[cls]) ** 2 + 1e-15


def _kr_weak_duality(rng: random.Random) -> tuple[float, float]:
    from scipy.optimize import linear_sum_assignment

    n, dim = rng.randint(1, 8), rng.randint(1, 4)
    gen = np.random.default_rng(rng.getrandbits(32))
    xs, ys = gen.standard_normal((n, dim)), gen.standard_normal((n, dim)) + rng.uniform(0, 2)
    w = gen.standard_normal(dim)
    lip_g = float(np.linalg.norm(w))

    def g(p):
        return np.abs(p @ w - 0.3)  # Lipschitz with constant ‖w‖

    cost = np.linalg.norm(xs[:, None, :] - ys[None, :, :], axis=2)
    r, c = linear_sum_assignment(cost)
    w1 = float(cost[r, c].mean())
    return abs(float(g(ys).mean() - g(xs).mean())), lip_g * w1 * (1 + 1e-12)


@functools.lru_cache(maxsize=1)
def _derivation() -> Derivation:
    z = sympy.Symbol("z", real=True)
    gelu = z * (1 + sympy.erf(z / sympy.sqrt(2))) / 2
    d1 = sympy.diff(gelu, z)
    d2 = sympy.diff(gelu, z, 2)
    d1_sym, d2_sym = sympy.symbols(r"\mathrm{GELU}'(\sqrt{2}) \mathrm{GELU}''(\pm\sqrt{2})")
    sup = (1 + sympy.erf(1)) / 2 + sympy.sqrt(2) * sympy.exp(-1) / sympy.sqrt(2 * sympy.pi)
    t, v = sympy.symbols("t v", real=True)
    x0 = sympy.Symbol("x_0", real=True)
    smooth = sympy.tanh(2 * x0 + 1) * 3
    lim_sym, deriv_sym = sympy.symbols(r"\lim_{t\to0}\frac{f(x+tv)-f(x)}{t} f'(x)v")
    names = sympy.symbols(r"\|AB\|_2 \|A\|_2\|B\|_2 |q-\frac{\alpha+\beta}{2}| "
                          r"\frac{\beta-\alpha}{2} \frac{\|f(a)-f(b)\|}{\|a-b\|} "
                          r"\prod\|W_l\|\mathrm{Lip}(\sigma)^{L-1} \|J_x\|_2 \sqrt{\rho(T)} "
                          r"\|p-e_k\|^2 2(1-p_k)^2 |E_\nu\,g-E_\mu\,g| \mathrm{Lip}(g)W_1",
                          nonnegative=True)
    ab, a_b, qdev, half, quo, prod, jnorm, sqrt_rho, pe, two, gap, lw = names
    steps = (
        Step("submultiplicativity ‖AB‖₂ ≤ ‖A‖₂‖B‖₂", ab, a_b, relation="<=", check="numeric",
             evaluate=_submultiplicative, because="random matrices, sizes 1–6"),
        Step("slope restriction: α ≤ (σ(x) − σ(y))/(x − y) ≤ β (tanh, ReLU, sigmoid, GELU)",
             qdev, half, relation="<=", check="numeric", evaluate=_slope,
             because="so |σ(x) − σ(y)| ≤ max(|α|, |β|)|x − y| coordinatewise"),
        Step("GELU″(±√2) = 0: GELU′'s extremes are at ±√2 (GELU″ = φ(z)(2 − z²))", d2_sym,
             sympy.Integer(0), substitutions={d2_sym: d2.subs(z, sympy.sqrt(2))},
             because="and GELU′ − ½ is odd, so inf GELU′ = 1 − sup GELU′"),
        Step("sup GELU′ = GELU′(√2) = Φ(√2) + √2 φ(√2) = 1.1290", d1_sym, sup,
             substitutions={d1_sym: d1.subs(z, sympy.sqrt(2))},
             because="Lip(GELU) = 1.1290, not 1 (core.activations.GELU_SUP_D1)"),
        Step("product bound: ‖f(a) − f(b)‖/‖a − b‖ ≤ Π‖W_l‖₂ · Lip(σ)^{L−1}", quo, prod,
             relation="<=", check="numeric", evaluate=_chain_quotient,
             because="steps 1–2 layer by layer; random chains, widths 1–5, 1–3 hidden layers"),
        Step("directional derivative = limit of difference quotients", lim_sym, deriv_sym,
             substitutions={lim_sym: sympy.limit((smooth.subs(x0, x0 + t * v) - smooth) / t,
                                                 t, 0),
                            deriv_sym: sympy.diff(smooth, x0) * v},
             because="so ‖J_x(x)v‖ ≤ Lip(f)‖v‖ where f is differentiable (mean value)"),
        Step("Jacobian lower bound: ‖J_x(x)‖₂ ≤ product bound", jnorm, prod, relation="<=",
             check="numeric", evaluate=_jacobian_below_product,
             because="step 6 with step 5; central differences, smooth and ReLU chains"),
        Step("LipSDP soundness: M(ρ, T) ⪯ 0 for a diagonal T ⪰ 0 ⇒ Lip(f) ≤ √ρ", quo, sqrt_rho,
             relation="<=", check="numeric", evaluate=_lipsdp_sound,
             because="any T, ρ(T) the smallest feasible (Schur complement): the certificate "
                     "needs no optimal T"),
        Step("cross-entropy: ‖softmax(z) − e_k‖² ≤ 2(1 − p_k)² ≤ 2", pe, two, relation="<=",
             check="numeric", evaluate=_softmax_gap,
             because="Σ_{j≠k} p_j² ≤ (Σ_{j≠k} p_j)² = (1 − p_k)²; so Lip(g_k) ≤ √2 Lip(f)"),
        Step("KR weak duality: |E_ν g − E_μ g| ≤ Lip(g) W_1(μ, ν)", gap, lw, relation="<=",
             check="numeric", evaluate=_kr_weak_duality,
             because="integrate g(y) − g(x) against the optimal coupling (an assignment)"),
    )
    return Derivation(
        title="T11 Lipschitz sandwich and Kantorovich–Rubinstein gap",
        source=SOURCE, steps=steps,
        conclusion="max_i ‖J_x(x_i)‖₂ ≤ Lip(f) ≤ min(LipSDP, Π‖W_l‖₂ Lip(σ)^{L−1}); "
                   "|E_ν g_k − E_μ g_k| ≤ √2 Lip(f) W_1(μ_k, ν_k)")


def __getattr__(name: str):
    """``DERIVATION`` is built on first access (its symbolic steps take a moment)."""
    if name == "DERIVATION":
        return _derivation()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
