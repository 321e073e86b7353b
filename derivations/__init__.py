"""Theorem families as sympy statements with step-by-step checked derivations.

One module per family; each exports ``THEOREMS`` (``boundcheck.Theorem`` objects, registered
on first use of the registry) and ``DERIVATION`` (a :class:`derivations.proof.Derivation`).
"""

FAMILIES = ("derivations.wolkowicz_styan",
            "derivations.closed_form_ce", "derivations.closed_form_ce_tier_b",
            "derivations.trace_moments",
            "derivations.input_gradient", "derivations.local_sensitivity",
            "derivations.network_sensitivity", "derivations.volume",
            "derivations.network_volume", "derivations.relative_flatness",
            "derivations.centered_sensitivity")
