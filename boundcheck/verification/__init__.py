"""Layer 5, the entry points: ``measure`` and ``verify`` (``api``), the theorem registry
(``registry``: the built-in theorems of ``derivations/`` and the user's own) and the results
they return (``results``: JSON in and out). Imports the vocabulary, the engines (through
``quantities``) and ``derivations``.
"""
