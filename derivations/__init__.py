"""Theorem families as sympy statements with step-by-step checked derivations.

Layer 4 of boundcheck: one module per family; each exports ``THEOREMS``
(``boundcheck.Theorem`` objects, registered on first use of the registry,
``boundcheck.verification.registry``) and ``DERIVATION`` (a
:class:`derivations.proof.Derivation`). A derivation imports only the vocabulary
(``boundcheck.core``): the formulas it proves live in ``boundcheck.core.formulas`` so the engines
evaluate the same expressions; a precondition that needs an engine to inspect a network is a
quantity named by ``Theorem.applies_to``.
"""

FAMILIES = ("derivations.wolkowicz_styan",
            "derivations.closed_form_ce", "derivations.closed_form_ce_tier_b",
            "derivations.closed_form_ce_depth", "derivations.closed_form_ce_depth_tier_b",
            "derivations.trace_moments",
            "derivations.input_gradient", "derivations.local_sensitivity",
            "derivations.network_sensitivity", "derivations.volume",
            "derivations.network_volume", "derivations.relative_flatness",
            "derivations.centered_sensitivity", "derivations.linear_stability",
            "derivations.random_projections", "derivations.lipschitz")
