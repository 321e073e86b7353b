"""Hyper-dual numbers over mpmath, for high-precision reference Hessians in tests.

``a + b ε₁ + c ε₂ + d ε₁ε₂`` with ``ε₁² = ε₂² = 0``: the ``ε₁ε₂`` part of
``L(θ + ε₁e_i + ε₂e_j)`` is exactly ``∂²L/∂θ_i∂θ_j``, with no truncation error.
"""

import mpmath


class HyperDual:
    """``a + b ε₁ + c ε₂ + d ε₁ε₂`` over mpmath numbers."""

    __slots__ = ("a", "b", "c", "d")

    def __init__(self, a, b=0, c=0, d=0):
        self.a, self.b, self.c, self.d = a, b, c, d

    @staticmethod
    def lift(x):
        return x if isinstance(x, HyperDual) else HyperDual(x)

    def __add__(self, other):
        o = HyperDual.lift(other)
        return HyperDual(self.a + o.a, self.b + o.b, self.c + o.c, self.d + o.d)

    __radd__ = __add__

    def __neg__(self):
        return HyperDual(-self.a, -self.b, -self.c, -self.d)

    def __sub__(self, other):
        return self + (-HyperDual.lift(other))

    def __mul__(self, other):
        o = HyperDual.lift(other)
        return HyperDual(self.a * o.a, self.a * o.b + self.b * o.a, self.a * o.c + self.c * o.a,
                         self.a * o.d + self.b * o.c + self.c * o.b + self.d * o.a)

    __rmul__ = __mul__

    def apply(self, f, f1, f2):
        """``f(self)`` given f and its first two derivatives at the real part."""
        a = self.a
        return HyperDual(f(a), f1(a) * self.b, f1(a) * self.c,
                         f1(a) * self.d + f2(a) * self.b * self.c)


def hd_exp(x):
    return x.apply(mpmath.exp, mpmath.exp, mpmath.exp)


def hd_log(x):
    return x.apply(mpmath.log, lambda a: 1 / a, lambda a: -1 / a**2)


def hd_tanh(x):
    t = mpmath.tanh
    return x.apply(t, lambda a: 1 - t(a) ** 2, lambda a: -2 * t(a) * (1 - t(a) ** 2))


def seeded(base, i: int, j: int) -> list:
    """``θ + ε₁e_i + ε₂e_j`` at the real point ``base``: the ε₁ε₂ part of a function of it is
    ``∂²/∂θ_i∂θ_j``."""
    theta = [HyperDual(v) for v in base]
    if i == j:
        theta[i] = HyperDual(base[i], 1, 1, 0)
    else:
        theta[i] = HyperDual(base[i], 1, 0, 0)
        theta[j] = HyperDual(base[j], 0, 1, 0)
    return theta
