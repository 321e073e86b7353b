"""The trace-moment relaxation's LMI blocks (T12): what the moment SDP (engine) solves and
certifies and ``derivations/trace_moments.py`` proves sound."""

from __future__ import annotations

from collections.abc import Sequence


def constraint_matrices(k: int, t, y: Sequence, n: int, ell) -> list[list[list]]:
    """The LMI blocks for a measure of mass N − 1 on [ℓ, t] with moments N y_j − t^j,
    normalised by N. Works for floats, mpmath intervals and cvxpy expressions alike."""
    nu = [y[0] - 1 / n] + [y[j] - t**j / n for j in range(1, k + 1)]

    def loc(j):  # E[(t − x)(x − ℓ) x^j]
        return -nu[j + 2] + (t + ell) * nu[j + 1] - t * ell * nu[j]

    mats = [[[nu[0], nu[1]], [nu[1], nu[2]]],
            [[nu[1] - ell * nu[0]]],
            [[t * nu[0] - nu[1]]],
            [[loc(0)]]]
    if k >= 3:
        mats.append([[nu[1] - ell * nu[0], nu[2] - ell * nu[1]],
                     [nu[2] - ell * nu[1], nu[3] - ell * nu[2]]])
        mats.append([[t * nu[0] - nu[1], t * nu[1] - nu[2]],
                     [t * nu[1] - nu[2], t * nu[2] - nu[3]]])
    if k >= 4:
        mats.append([[nu[i + j] for j in range(3)] for i in range(3)])
        mats.append([[loc(0), loc(1)], [loc(1), loc(2)]])
    return mats
