"""Typesetting sympy expressions whose symbol names are already LaTeX.

Theorem symbols are named by the LaTeX they stand for (``\\|W_1\\|_2``, ``\\sum_l r_l``,
``B_3(N,\\mu_1,\\mu_2,\\mu_3)``). ``sympy.latex`` re-reads such a name as ``base_subscript``
and mangles it (``\\|W_{1\\| 2}``); here a name that is LaTeX is kept verbatim (sympy braces a
base that carries a superscript; a compound name such as ``\\operatorname{tr}H`` raised to a
power gets parentheses), and a plain name (``lambda_max``) is typeset by sympy.

For terminals, :func:`unicode` writes an expression as one line of readable math
(``λ_max ≤ m + s·√(N − 1)``), translating the LaTeX of symbol names to Unicode.
"""

from __future__ import annotations

import re

import sympy
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter

_LATEX_MARKS = re.compile(r"[\\{}()|^ ,]")


def is_latex_name(name: str) -> bool:
    """Whether a symbol's name is LaTeX (a macro, braces, a group) rather than a plain name."""
    return bool(_LATEX_MARKS.search(name))


def symbol_latex(name: str) -> str:
    """One symbol name as LaTeX: verbatim if it is LaTeX, else sympy's rendering."""
    if is_latex_name(name):
        return name
    return sympy.latex(sympy.Symbol(name))


# A LaTeX name with an operator or a space in it is compound: raised to a power it needs
# parentheses ((tr H)², not tr H², which reads as tr(H²)).
_COMPOUND = re.compile(r"\\(operatorname|max|min|sum|log|frac|mathrm\{GM\})|\s")


class _LatexPrinter(LatexPrinter):
    def _print_Symbol(self, expr: sympy.Symbol, style: str = "plain") -> str:
        if is_latex_name(expr.name):
            return symbol_latex(expr.name)
        return super()._print_Symbol(expr, style)

    def _print_Pow(self, expr: sympy.Pow) -> str:
        base = expr.base
        if isinstance(base, sympy.Symbol) and _COMPOUND.search(base.name) and \
                expr.exp.is_Integer and expr.exp > 1:
            return rf"\left({base.name}\right)^{{{self._print(expr.exp)}}}"
        return super()._print_Pow(expr)


def latex(expr: sympy.Basic) -> str:
    """``sympy.latex`` with LaTeX symbol names kept as written."""
    return _LatexPrinter().doprint(sympy.sympify(expr))


# --- LaTeX → Unicode, for symbol names shown in a terminal -----------------------------------

_MACROS = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "varepsilon": "ε", "epsilon": "ε",
    "eta": "η", "theta": "θ", "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν", "rho": "ρ",
    "sigma": "σ", "tau": "τ", "phi": "φ", "chi": "χ", "psi": "ψ", "omega": "ω",
    "Sigma": "Σ", "Lambda": "Λ", "sum": "Σ", "prod": "Π", "nabla": "∇", "perp": "⊥",
    "|": "‖", "cdot": "·", "dots": "…", "ldots": "…", "cdots": "⋯", "infty": "∞",
    "le": "≤", "ge": "≥", "max": "max", "min": "min", "log": "log", "exp": "exp",
    "left": "", "right": "", ",": " ", ";": " ", "quad": " ", "!": "",
}
_ARG1 = {"mathrm": "{}", "operatorname": "{} ", "text": "{}", "mathbf": "{}", "mathcal": "{}",
         "overline": "mean[{}]", "sqrt": "√({})", "bar": "mean[{}]", "hat": "{}̂"}


def _group(s: str, i: int) -> tuple[str, int]:
    """The brace group (or single token) starting at ``s[i]``: (content, index after it)."""
    if i < len(s) and s[i] == "{":
        depth = 0
        for j in range(i, len(s)):
            depth += {"{": 1, "}": -1}.get(s[j], 0)
            if depth == 0:
                return s[i + 1:j], j + 1
        raise ValueError(f"unbalanced braces in {s!r}")
    if i < len(s) and s[i] == "\\":
        m = re.match(r"\\([A-Za-z]+|.)", s[i:])
        assert m is not None
        return s[i:i + m.end()], i + m.end()
    return s[i:i + 1], i + 1


def _wrap(text: str) -> str:
    """``text`` in parentheses unless it is a single token."""
    return text if re.fullmatch(r"[\w‖.^{},]+", text) else f"({text})"


def latex_to_unicode(s: str) -> str:
    """Readable Unicode for the LaTeX of a symbol name (``\\|W_1\\|_2`` → ``‖W_1‖_2``)."""
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            m = re.match(r"\\([A-Za-z]+|.)", s[i:])
            assert m is not None
            name, i = m.group(1), i + m.end()
            if name == "frac":
                num, i = _group(s, i)
                den, i = _group(s, i)
                out.append(f"{_wrap(latex_to_unicode(num))}/{_wrap(latex_to_unicode(den))}")
            elif name in _ARG1:
                arg, i = _group(s, i)
                out.append(_ARG1[name].format(latex_to_unicode(arg)))
            else:
                out.append(_MACROS.get(name, name))
        elif c in "_^":
            arg, i = _group(s, i + 1)
            text = latex_to_unicode(arg)
            out.append(c + (text if len(text) == 1 or text.isalnum() else "{" + text + "}"))
        elif c == "{":
            arg, i = _group(s, i)
            out.append(latex_to_unicode(arg))
        else:
            out.append(c)
            i += 1
    return re.sub(r" {2,}", " ", "".join(out)).strip()


class _UnicodePrinter(StrPrinter):
    def _print_Symbol(self, expr: sympy.Symbol) -> str:
        return latex_to_unicode(expr.name) if is_latex_name(expr.name) else expr.name

    def parenthesize(self, item: sympy.Basic, level: int, strict: bool = False) -> str:
        if isinstance(item, sympy.Symbol):  # a compound name inside a product or power
            return _wrap(self._print(item))
        return super().parenthesize(item, level, strict)

    def _print_Pow(self, expr: sympy.Pow, rational: bool = False) -> str:
        if expr.exp == sympy.S.Half:
            return f"√({self._print(expr.base)})"
        if expr.exp == -sympy.S.Half:
            return f"1/√({self._print(expr.base)})"
        return super()._print_Pow(expr, rational)


def unicode(expr: sympy.Basic) -> str:
    """One line of readable math for a terminal: ``*`` → ``·``, ``**`` → ``^``, √, Greek."""
    text = _UnicodePrinter().doprint(sympy.sympify(expr))
    return text.replace("**", "^").replace("*", "·").replace(" - ", " − ")
