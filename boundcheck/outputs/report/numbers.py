"""Numbers for reports, formatted in Python: values, enclosures and slacks, as LaTeX or text.

Enclosures are rounded outward (the lower end down, the upper end up) so a printed interval
still contains the true value. An enclosure narrower than the printed digits is shown as one
number; otherwise as ``[lo, hi]`` with just enough significant digits to tell the ends apart,
and a common power of ten factored out.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any

# Significant digits of a single value, and the range of decimal exponents printed without
# scientific notation.
VALUE_DIGITS = 5
PLAIN_EXPONENTS = range(-3, 5)
_ROUNDING = {"down": ROUND_FLOOR, "up": ROUND_CEILING, "nearest": ROUND_HALF_EVEN}
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _decimal(x: float, digits: int, rounding: str) -> Decimal:
    """``x`` rounded to ``digits`` significant digits in the given direction (exactly)."""
    d = Decimal(x)
    if d == 0:
        return d
    step = Decimal(1).scaleb(d.adjusted() - digits + 1)
    return d.quantize(step, rounding=_ROUNDING[rounding])


def _digits_text(d: Decimal, exponent: int, digits: int) -> str:
    """The mantissa of ``d / 10**exponent`` with ``digits`` significant digits, no exponent."""
    scaled = d.scaleb(-exponent)
    decimals = max(digits - 1 - (scaled.adjusted() if scaled != 0 else 0), 0)
    text = f"{scaled:.{decimals}f}"
    return text.replace("-", "−")


def _join(mantissa: str, exponent: int, style: str) -> str:
    if exponent == 0:
        return mantissa
    if style == "latex":
        return rf"{mantissa}\times10^{{{exponent}}}"
    return f"{mantissa}×10{str(exponent).translate(_SUPERSCRIPT)}"


def _minus(text: str, style: str) -> str:
    return text.replace("−", "-") if style == "latex" else text


def number(x: Any, digits: int = VALUE_DIGITS, style: str = "latex",
           rounding: str = "nearest") -> str:
    """One number: ``0.01375``, ``1.949×10⁻⁴`` (text) / ``1.949\\times10^{-4}`` (LaTeX math)."""
    if x is None:
        return r"\text{--}" if style == "latex" else "–"
    x = float(x)
    if math.isnan(x):
        return r"\text{--}" if style == "latex" else "–"
    if math.isinf(x):
        sign = "" if x > 0 else "-" if style == "latex" else "−"
        return sign + (r"\infty" if style == "latex" else "∞")
    if x == 0:
        return "0"
    d = _decimal(x, digits, rounding)
    exp = d.adjusted()
    shown = 0 if exp in PLAIN_EXPONENTS else exp
    return _minus(_join(_digits_text(d, shown, digits), shown, style), style)


def integer(x: Any) -> str:
    """A count with thin-space thousands separators in LaTeX text (``1\\,797``)."""
    if x is None or x == "":
        return "--"
    return f"{int(x):,}".replace(",", r"\,")


def interval_digits(lower: float, upper: float) -> int:
    """Significant digits needed to show both ends of an interval as different numbers."""
    if not (math.isfinite(lower) and math.isfinite(upper)):
        return VALUE_DIGITS - 1
    scale = max(abs(lower), abs(upper))
    width = upper - lower
    if scale == 0 or width <= 0:
        return VALUE_DIGITS
    return min(max(math.ceil(-math.log10(width / scale)) + 1, 2), 8)


def is_point(est: dict[str, Any], digits: int = VALUE_DIGITS) -> bool:
    """True when the enclosure is narrower than the last of ``digits`` printed digits."""
    lo, hi = float(est["lower"]), float(est["upper"])
    if lo == hi:
        return True
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return False
    scale = max(abs(lo), abs(hi))
    return (hi - lo) <= 0.5 * scale * 10.0 ** (1 - digits)


def enclosure(est: dict[str, Any] | None, style: str = "latex") -> str:
    """An Estimate dict as one value (when its interval is below print resolution) or an
    outward-rounded interval."""
    if not est:
        return r"\text{--}" if style == "latex" else "–"
    if is_point(est):
        value = float(est["value"])
        if float(est["lower"]) == float(est["upper"]) == value and value.is_integer():
            return _minus(str(int(value)).replace("-", "−"), style)  # a count, e.g. P
        return number(value, style=style)
    lo, hi = float(est["lower"]), float(est["upper"])
    digits = interval_digits(lo, hi)
    sep = r",\," if style == "latex" else ", "
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo == 0 or hi == 0 or lo * hi < 0:
        ends = (number(lo, digits, style, "down"), number(hi, digits, style, "up"))
        return f"[{ends[0]}{sep}{ends[1]}]"
    dlo, dhi = _decimal(lo, digits, "down"), _decimal(hi, digits, "up")
    exp = max(dlo.adjusted(), dhi.adjusted())
    shown = 0 if exp in PLAIN_EXPONENTS else exp
    body = f"[{_digits_text(dlo, shown, digits)}{sep}{_digits_text(dhi, shown, digits)}]"
    return _minus(_join(body, shown, style), style)


def slack(sl: dict[str, Any] | None, style: str = "latex") -> str:
    """``×2.53`` for a ratio slack (rhs/lhs), ``+0.021`` for a difference slack (rhs − lhs)."""
    if not sl:
        return r"\text{--}" if style == "latex" else "–"
    v = float(sl["value"])
    if sl["kind"] == "ratio":
        return (r"\times" if style == "latex" else "×") + number(v, 3, style)
    text = number(v, 3, style)
    return text if text.startswith(("-", "−")) or math.isnan(v) else "+" + text


def finite_number(x: Any) -> bool:
    """True for a finite float (JSON infinities are the strings "inf" / "-inf")."""
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
