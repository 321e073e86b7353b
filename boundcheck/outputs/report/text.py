"""Prose with inline mathematics, as theorem titles are written (``"upper bound on λ_max"``,
``"‖J_x‖_F and s²"``), turned into LaTeX or matplotlib mathtext.

Greek letters, operators (‖ ≤ × √ …), ``>=``/``<=`` and letters carrying a subscript
(``_max``, ``_{ij}``) or superscript (``^2``, ``²``) become math; the rest is escaped text.
Backquoted spans (```hessian.ws_lambda_max```) are identifiers, set in typewriter type.
"""

from __future__ import annotations

import re

_GREEK = dict(zip(
    "αβγδεζηθικλμνξπρστυφχψωΓΔΘΛΞΠΣΦΨΩ",
    [r"\alpha", r"\beta", r"\gamma", r"\delta", r"\varepsilon", r"\zeta", r"\eta", r"\theta",
     r"\iota", r"\kappa", r"\lambda", r"\mu", r"\nu", r"\xi", r"\pi", r"\rho", r"\sigma",
     r"\tau", r"\upsilon", r"\varphi", r"\chi", r"\psi", r"\omega", r"\Gamma", r"\Delta",
     r"\Theta", r"\Lambda", r"\Xi", r"\Pi", r"\Sigma", r"\Phi", r"\Psi", r"\Omega"],
    strict=True))
_OPERATORS = {"‖": r"\|", "∇": r"\nabla", "√": r"\surd", "≤": r"\le", "≥": r"\ge",
              "<=": r"\le", ">=": r"\ge", "×": r"\times", "·": r"\cdot", "∈": r"\in",
              "≠": r"\ne", "∞": r"\infty", "−": "-", "→": r"\to", "≈": r"\approx",
              "∂": r"\partial", "⊤": r"\top", "ᵀ": r"^{\top}", "ℓ": r"\ell",
              "∑": r"\sum", "∏": r"\prod", "∫": r"\int", "≲": r"\lesssim",
              "≳": r"\gtrsim", "⊙": r"\odot", "⊗": r"\otimes", "∘": r"\circ", "±": r"\pm",
              "∓": r"\mp", "∝": r"\propto", "⪯": r"\preceq", "⪰": r"\succeq",
              "≼": r"\preceq", "≽": r"\succeq", "⊆": r"\subseteq", "⊂": r"\subset",
              "∪": r"\cup", "∩": r"\cap", "∀": r"\forall", "∃": r"\exists",
              "⟨": r"\langle", "⟩": r"\rangle", "⌈": r"\lceil", "⌉": r"\rceil",
              "⌊": r"\lfloor", "⌋": r"\rfloor", "ℝ": r"\mathbb{R}", "ℕ": r"\mathbb{N}",
              "≡": r"\equiv", "≅": r"\cong", "∼": r"\sim", "⇒": r"\Rightarrow",
              "⇔": r"\Leftrightarrow", "←": r"\leftarrow", "↦": r"\mapsto", "′": "'",
              "∗": "*", "⋅": r"\cdot", "∣": r"\mid"}
_SUPERSCRIPTS = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-", strict=True))
_OPERATOR_NAMES = {"max", "min", "log", "exp", "sup", "inf", "det", "tr"}
_TEXT_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                 "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "\\": r"\textbackslash{}", "–": "--", "—": "---", "’": "'", "‘": "`",
                 "“": "``", "”": "''", "…": r"\dots{}", "<": r"\textless{}",
                 ">": r"\textgreater{}", "|": r"\textbar{}",
                 **{c: rf"\textsubscript{{{d}}}" for c, d in zip("₀₁₂₃₄₅₆₇₈₉", "0123456789",
                                                                  strict=True)}}

_WORD = r"(?:\{[^}]*\}|[A-Za-z0-9]+(?![A-Za-z0-9]))"  # whole words only: no backtracking
_SUB = r"_" + _WORD
_SUP = r"(?:\^" + _WORD + r"|[⁰¹²³⁴⁵⁶⁷⁸⁹⁻]+)"
_SCRIPT = _SUB + "|" + _SUP
_MATH_CHARS = "".join(_GREEK) + "".join(k for k in _OPERATORS if len(k) == 1)
_TOKEN = re.compile(
    r"`(?P<code>[^`]+)`"
    r"|(?P<core>>=|<=|−[0-9]+(?:\.[0-9]+)?|[" + _MATH_CHARS + r"]"
    r"|(?<![A-Za-z0-9_])(?:max|min|sup|inf|log|exp|det|[A-Za-z]|[A-Z]{2,})(?=" + _SCRIPT
    + r"))"
    # at most one subscript and one superscript; a snake_case word (a_b_c) stays text
    r"(?P<scripts>(?:" + _SUB + ")?(?:" + _SUP + r")?)(?!_)")
_ONE_SCRIPT = re.compile(_SCRIPT)
_RELATIONS = (r"\le", r"\ge", r"\in", r"\ne", r"\approx", r"\to")
# A lone letter or number beside a relation joins it in math: "N >= 2" -> "$N \ge 2$".
_OPERAND_BEFORE = re.compile(r"(?<![A-Za-z0-9.])([A-Za-z]|[0-9]+(?:\.[0-9]+)?)(\s*)$")
_OPERAND_AFTER = re.compile(r"^(\s*)(−?[A-Za-z]|−?[0-9]+(?:\.[0-9]+)?)(?![A-Za-z0-9])")

# What a slack number means (the kind is declared per theorem: Theorem.slack).
SLACK_LEGEND = ("Slack: ×k is the ratio rhs/lhs, for theorems declared with ratio slack whose "
                "sides are both positive; a signed number is the difference rhs − lhs, for "
                "theorems declared with difference slack (eigenvalue, trace-moment and "
                "log-volume bounds, whose sides can be ≤ 0) and for a ratio theorem with a "
                "side ≤ 0. Intervals are rounded outward; one number means the interval is "
                "narrower than its last digit.")


def _math_body(text: str) -> str:
    """Characters inside a braced script (``_{l−1}``) as math-mode LaTeX."""
    out = []
    for ch in text:
        latex = _GREEK.get(ch) or _OPERATORS.get(ch)
        if latex:
            out.append(latex + (" " if latex[-1].isalpha() and latex[0] == "\\" else ""))
        elif ch in "%#&$":
            out.append("\\" + ch)
        elif ord(ch) > 0x7E:
            out.append(r"\mbox{?}")
        else:
            out.append(ch)
    return "".join(out).strip()


def _script(token: str) -> str:
    if token[0] in _SUPERSCRIPTS:
        return "^{" + "".join(_SUPERSCRIPTS[c] for c in token) + "}"
    mark, body = token[0], token[1:]
    if body.startswith("{"):
        body = _math_body(body[1:-1])
    elif body in _OPERATOR_NAMES:
        body = "\\" + body
    elif len(body) > 1 and body.isalpha():
        body = r"\mathrm{" + body + "}"
    return f"{mark}{{{body}}}"


def _math(core: str, scripts: str) -> str:
    base = _GREEK.get(core) or _OPERATORS.get(core) or core.replace("−", "-")
    if base in ("max", "min", "sup", "inf", "log", "exp", "det"):
        base = "\\" + base
    elif len(base) > 1 and base.isalpha():
        base = r"\mathrm{" + base + "}"
    if base.startswith("\\") and base[-1].isalpha() and scripts == "":
        base += " "
    return base + "".join(_script(m.group(0)) for m in _ONE_SCRIPT.finditer(scripts))


def chunks(text: str) -> list[tuple[str, str]]:
    """Split prose into ``("text" | "math" | "code", content)``; math content is LaTeX."""
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        if m.start() > pos:
            out.append(("text", text[pos:m.start()]))
        if m.group("code") is not None:
            out.append(("code", m.group("code")))
        else:
            math = _math(m.group("core"), m.group("scripts"))
            if out and out[-1][0] == "math":
                out[-1] = ("math", out[-1][1] + math)
            else:
                out.append(("math", math))
        pos = m.end()
    if pos < len(text):
        out.append(("text", text[pos:]))
    return _merge(_absorb_operands(out))


def _absorb_operands(parts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    parts = list(parts)
    for i, (kind, body) in enumerate(parts):
        if kind != "math" or body.strip() not in _RELATIONS:
            continue
        if i > 0 and parts[i - 1][0] == "text":
            m = _OPERAND_BEFORE.search(parts[i - 1][1])
            if m:
                parts[i - 1] = ("text", parts[i - 1][1][:m.start()])
                body = m.group(1) + " " + body.lstrip()
        if i + 1 < len(parts) and parts[i + 1][0] == "text":
            m = _OPERAND_AFTER.match(parts[i + 1][1])
            if m:
                parts[i + 1] = ("text", parts[i + 1][1][m.end():])
                body = body.rstrip() + " " + m.group(2).replace("−", "-")
        parts[i] = ("math", body)
    return [p for p in parts if p[1]]


_JOINER = re.compile(r"\s*(?:[A-Za-z0-9]|[/+=()-])?\s*")


def _merge(parts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Join math chunks separated only by spaces, a lone letter or digit, or an operator
    (``‖∇_W f‖_F / ‖h‖``) into one formula."""
    out: list[tuple[str, str]] = []
    for kind, body in parts:
        if (kind == "math" and len(out) >= 2 and out[-1][0] == "text"
                and _JOINER.fullmatch(out[-1][1]) and out[-2][0] == "math"):
            joiner = out.pop()[1].strip()
            out[-1] = ("math", " ".join(p for p in (out[-1][1].rstrip(), joiner, body.strip())
                                        if p))
        elif kind == "math" and out and out[-1][0] == "math":
            out[-1] = ("math", out[-1][1] + body)
        else:
            out.append((kind, body))
    return out


# pdfLaTeX with T1 fonts typesets Latin-1 and Latin Extended-A; anything else that no table
# here maps would stop the build, so it is replaced by a visible placeholder.
_LAST_TYPESET = 0x17F


def latex_escape(text: object) -> str:
    """Plain text for LaTeX: special characters escaped, nothing turned into math."""
    out = []
    for ch in str(text):
        if ch in _TEXT_SPECIAL:
            out.append(_TEXT_SPECIAL[ch])
        elif ord(ch) <= _LAST_TYPESET:
            out.append(ch)
        elif ch in _GREEK or ch in _OPERATORS:
            out.append("$" + _math(ch, "").strip() + "$")
        elif ch in _SUPERSCRIPTS:
            out.append(r"	extsuperscript{" + _SUPERSCRIPTS[ch] + "}")
        else:
            out.append(f"[U+{ord(ch):04X}]")
    return "".join(out)


# A title "prose: formula[ at/for/when ... prose]" whose formula is set as one piece of math.
_FORMULA_TITLE = re.compile(
    r"^(?P<prose>[^:]*:\s+)(?P<formula>[^:]*?(?:[≤≥<>=]|<=|>=)[^:]*?)"
    r"(?P<tail>\s+(?:at|for|when|if|on|with|where|under|in)\s[^:]*)?$")
_FUNCTIONS = {"log", "exp", "max", "min", "sup", "inf", "det"}
_FORMULA_OPERATORS = {**_OPERATORS, "Σ": r"\sum", "Π": r"\prod"}


def _closing(text: str, start: int, opening: str, closing: str) -> int:
    """Index of the bracket closing the one at ``start`` (−1 if unbalanced)."""
    depth = 0
    for i in range(start, len(text)):
        depth += (text[i] == opening) - (text[i] == closing)
        if depth == 0:
            return i
    return -1


def _word(word: str) -> str:
    if len(word) == 1:
        return word
    if word in _FUNCTIONS:
        return "\\" + word + " "
    if word == "tr":
        return r"\operatorname{tr} "
    return r"\mathrm{" + word + "}"


def formula_latex(text: str) -> str:
    """A formula written in plain unicode (``(1/n)Σ log LVR(x_i) ≤ √(tr G / c)``) as
    math-mode LaTeX (``(1/n)\\sum \\log \\mathrm{LVR}(x_{i}) \\le \\sqrt{...}``)."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch in "_^":
            i += 1
            if text[i:i + 1] == "{":
                end = _closing(text, i, "{", "}")
                body, i = formula_latex(text[i + 1:end]), end + 1
            else:
                m = re.match(r"[A-Za-z]+|[0-9]+|.", text[i:])
                body, i = _word(m.group(0)).strip(), i + len(m.group(0))
            if out and out[-1].startswith(ch):
                out.append("{}")  # x_a_b: a second subscript needs a base of its own
            out.append(f"{ch}{{{body}}}")
        elif ch in _SUPERSCRIPTS:
            m = re.match("[" + "".join(_SUPERSCRIPTS) + "]+", text[i:])
            out.append("^{" + "".join(_SUPERSCRIPTS[c] for c in m.group(0)) + "}")
            i += len(m.group(0))
        elif ch == "√" and text[i + 1:i + 2] == "(":
            end = _closing(text, i + 1, "(", ")")
            out.append(r"\sqrt{" + formula_latex(text[i + 2:end]) + "}")
            i = end + 1
        elif ch.isascii() and ch.isalpha():
            m = re.match(r"[A-Za-z]+", text[i:])
            out.append(_word(m.group(0)))
            i += len(m.group(0))
        else:
            latex = _FORMULA_OPERATORS.get(ch) or _GREEK.get(ch)
            if latex:
                out.append(latex + (" " if latex[-1].isalpha() else ""))
            elif ch in "%#&$":
                out.append("\\" + ch)
            else:
                out.append(r"\mbox{?}" if ord(ch) > 0x7E else ch)
            i += 1
    return "".join(out)


def _is_formula(text: str) -> bool:
    """Balanced brackets and no prose words (two or more lowercase letters, not a function
    name, and not a sub/superscript)."""
    if any(text.count(a) != text.count(b) for a, b in ("()", "{}", "[]")):
        return False
    words = re.findall(r"(?<![_^A-Za-z])[a-z]{2,}(?![A-Za-z])", text)
    return all(w in _FUNCTIONS or w == "tr" for w in words)


def latex_text(text: object) -> str:
    """Prose with inline math, as LaTeX (``λ_max`` → ``$\\lambda_{\\max}$``); a title of the
    form "prose: formula" gets its formula typeset as one formula."""
    text = str(text)
    m = _FORMULA_TITLE.match(text)
    if m and _is_formula(m.group("formula")):
        return (_prose_latex(m.group("prose")) + "$" + formula_latex(m.group("formula"))
                + "$" + _prose_latex(m.group("tail") or ""))
    return _prose_latex(text)


def _prose_latex(text: str) -> str:
    parts = []
    for kind, body in chunks(text):
        if kind == "math":
            parts.append(f"${body.strip()}$")
        elif kind == "code":
            parts.append(r"\texttt{" + latex_escape(body) + "}")
        else:
            parts.append(latex_escape(body))
    return "".join(parts)


def pdf_string(text: object) -> str:
    """A PDF bookmark for ``\\texorpdfstring``: the text with scripts flattened."""
    plain = str(text).replace("`", "").replace(">=", "≥").replace("<=", "≤")
    plain = re.sub(r"_\{?([A-Za-z0-9]+)\}?", r" \1", plain)
    return "".join(_TEXT_SPECIAL.get(ch, ch) for ch in plain)


def heading(text: object) -> str:
    """Section-title LaTeX that also gives a clean PDF bookmark."""
    latex = latex_text(text)
    if "$" not in latex and r"\texttt" not in latex:
        return latex
    return r"\texorpdfstring{" + latex + "}{" + pdf_string(text) + "}"


_MATHTEXT = {r"\le": r"\leq", r"\ge": r"\geq", r"\ne": r"\neq", r"\surd": "√"}


def mathtext(text: object) -> str:
    """Prose with inline math for matplotlib labels (mathtext's dialect of LaTeX)."""
    parts = []
    for kind, body in chunks(str(text)):
        if kind == "math":
            body = re.sub(r"\\(le|ge|ne|surd)(?![A-Za-z])",
                          lambda m: _MATHTEXT[m.group(0)], body)
            parts.append(f"${body.strip()}$")
        else:
            parts.append(body.replace("$", r"\$"))
    return "".join(parts)
