"""Layer 1, the vocabulary: what every other layer speaks.

``Estimate`` (a value with an interval and its kind), interval evaluation of sympy expressions,
``Theorem`` and ``Assumption``, verdicts and slack, ``Subject`` (model + data + loss), losses,
activation constants, layer discovery, and the formulas (sympy expressions) that the engines
evaluate and the derivations prove. Imports nothing else of boundcheck.

The layers, each a folder, import downwards only (``tests/test_layering.py`` keeps it so):
``core`` → ``engines`` → ``quantities`` → ``derivations/`` (top level) → ``verification`` →
``harness`` → ``outputs`` → ``cli``; ``boundcheck/__init__.py`` only re-exports.
"""
