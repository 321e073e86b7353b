"""Theorem families as sympy statements with step-by-step checked derivations.

One module per family; each exports ``THEOREMS`` (``boundcheck.Theorem`` objects, registered
on first use of the registry) and ``DERIVATION`` (a :class:`derivations.proof.Derivation`).
"""

FAMILIES = ("derivations.wolkowicz_styan",)
