"""Formulas: the sympy expressions an engine evaluates and a derivation proves, written once
here (pure sympy and plain arithmetic; they import nothing else of boundcheck)."""
