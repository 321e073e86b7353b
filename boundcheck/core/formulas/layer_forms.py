"""Per-layer forms of the compression theorems (T3, T4, T6, T7, T8): for each dense layer l a
sympy term over per-layer quantities (``layer.<l>.…``), whose maximum or sum over the dense
layers is a quantity (``boundcheck.quantities.compression``) and whose bound is proved in the
family's module in ``derivations/``.
"""

from __future__ import annotations

import sympy

LAYER = "<l>"  # stands for the dense layer's index in a quantity name

c = sympy.Symbol("c", positive=True)  # the MSE scale: ℓ = (c/2)‖z − y‖²
MSE_SCALE = "loss.mse_scale"

w_l_norm = sympy.Symbol(r"\|W_l\|_2", nonnegative=True)
trace_g_l = sympy.Symbol(r"\operatorname{tr}G_l", nonnegative=True)
r_l = sympy.Symbol("r_l", positive=True, integer=True)
gm_l = sympy.Symbol(r"\mathrm{GM}_i \|h_{l-1}(x_i)\|^2", positive=True)


def volume_bound(rank, weight_norm, trace_over_c, gmean):
    """``(r/2) log(‖W‖² · (tr G/c) / (r · GM ‖h‖²))``: the right side of T6 (and of each
    layer's term in T7)."""
    return rank / 2 * sympy.log(weight_norm**2 * trace_over_c / (rank * gmean))


# T3 at layer l: ρ_l = max_i ‖J_{h,l}‖ ‖h_{l−1}‖ / ‖∇_{W_l} f‖_F; the ratio ρ_l/‖W_l‖_2 ≤ 1
rho_l = sympy.Symbol(r"\rho_l", nonnegative=True)
INPUT_GRADIENT_LAYER_RATIO = rho_l / w_l_norm
INPUT_GRADIENT_BINDING_2 = {rho_l: "layer.<l>.sensitivity_ratio_max",
                            w_l_norm: "layer.<l>.weight_norm"}
INPUT_GRADIENT_BINDING_F = {rho_l: "layer.<l>.sensitivity_ratio_fro_max",
                            w_l_norm: "layer.<l>.weight_norm"}

# T4 at layer l: mean MLS_l over its bound ‖W_l‖_2 √(mean ‖h_{l−1}‖⁻²) √(tr G_l / c) ≤ 1
mls_l = sympy.Symbol(r"\overline{\mathrm{MLS}_l}", nonnegative=True)
inv_sq_l = sympy.Symbol(r"\overline{\|h_{l-1}\|^{-2}}", positive=True)
MLS_LAYER_RATIO = mls_l / (w_l_norm * sympy.sqrt(inv_sq_l) * sympy.sqrt(trace_g_l / c))
MLS_LAYER_BINDING = {mls_l: "layer.<l>.mls", w_l_norm: "layer.<l>.weight_norm",
                     inv_sq_l: "layer.<l>.input_inv_sq_mean", trace_g_l: "layer.<l>.ggn_trace",
                     c: MSE_SCALE}

# T6 at layer l: mean log LVR_l minus its bound ≤ 0
log_lvr_l = sympy.Symbol(r"\overline{\log \mathrm{LVR}_l}", real=True)
LVR_LAYER_BOUND = volume_bound(r_l, w_l_norm, trace_g_l / c, gm_l)
LVR_LAYER_GAP = log_lvr_l - LVR_LAYER_BOUND
LVR_LAYER_BINDING = {log_lvr_l: "layer.<l>.log_lvr", r_l: "layer.<l>.r",
                     w_l_norm: "layer.<l>.weight_norm", trace_g_l: "layer.<l>.ggn_trace",
                     gm_l: "layer.<l>.input_sq_gmean", c: MSE_SCALE}

# T7's sharpness form: Σ_l of this layer constant is compression.nvr_constant
NVR_LAYER_CONSTANT = r_l / 2 * sympy.log(w_l_norm**2 / (r_l * gm_l))
NVR_CONSTANT_BINDING = {r_l: "layer.<l>.r", w_l_norm: "layer.<l>.weight_norm",
                        gm_l: "layer.<l>.input_sq_gmean"}

# T8 at layer l: mean ‖h_{l−1}‖² MLS_l² over κ^G_Tr(W_l)/c ≤ 1
weighted_mls_sq = sympy.Symbol(r"\overline{\|h_{l-1}\|^2 \mathrm{MLS}_l^2}", nonnegative=True)
kappa = sympy.Symbol(r"\kappa^G_{\mathrm{Tr}}(W_l)", nonnegative=True)
FLATNESS_LAYER_RATIO = weighted_mls_sq / (kappa / c)
FLATNESS_LAYER_BINDING = {weighted_mls_sq: "layer.<l>.weighted_mls_sq",
                          kappa: "layer.<l>.kappa_ggn", c: MSE_SCALE}
KAPPA_BINDING = {kappa: "layer.<l>.kappa_ggn"}
