"""MACs as a formula of the input dims that stay symbolic (`4.05K·height·width`), when the user
has not given them values.

ONNX shape inference does not carry arithmetic on symbolic dims through a graph, so the formula
is not derived op by op: the count is taken at several values of the dims and a polynomial of
degree at most 2 in each dim (what convolutions, matmuls and attention give) is fitted exactly,
in rationals, then checked at one more point. A model whose count does not fit (a cubic op, a
Reshape to fixed sizes, a dim that must take particular values) keeps MACs unknown. Values are
multiples of 64 (or of 512), so that strided and pooled dims divide evenly and the count stays
polynomial; the formula says on which multiples it was fitted.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from typing import Callable

# Values the dims take to fit the polynomial, and where it is checked: small multiples of 64
# first (a transformer's position table may cap the sequence at 512), then multiples of 512
# (audio front ends hop by hundreds of samples).
LADDERS = (((64, 128, 192), 320), ((512, 1024, 1536), 2560))
MAX_DIMS = 2  # 3**2 counts per ladder; a third dim would need 27
MAX_DEGREE = 2

Count = Callable[[dict[str, int]], "int | None"]  # the MACs with these dims, None if not countable


def counts_needed(dims: int) -> int:
    return sum(len(values) ** dims + 1 for values, _ in LADDERS)


def fit(dims: list[str], count: Count) -> tuple[dict[tuple[int, ...], Fraction], int] | None:
    """(coefficients by exponent tuple, one exponent per dim in `dims` order; the multiple the
    fit holds on), or None when the counts are not such a polynomial on either ladder."""
    if not 1 <= len(dims) <= MAX_DIMS:
        return None
    for values, check in LADDERS:
        coefficients = _fit_on(dims, count, values, check)
        if coefficients is not None:
            return coefficients, values[0]
    return None


def _fit_on(dims: list[str], count: Count, values: tuple[int, ...], check_at: int
            ) -> dict[tuple[int, ...], Fraction] | None:
    exponents = list(itertools.product(range(MAX_DEGREE + 1), repeat=len(dims)))
    points = list(itertools.product(values, repeat=len(dims)))
    rows: list[list[Fraction]] = []
    counts: list[Fraction] = []
    for point in points:
        value = count(dict(zip(dims, point)))
        if value is None:
            return None
        rows.append([Fraction(_monomial(point, e)) for e in exponents])
        counts.append(Fraction(value))
    solution = _solve(rows, counts)
    if solution is None:
        return None
    coefficients = {e: c for e, c in zip(exponents, solution) if c}
    check = (check_at,) * len(dims)
    expected = count(dict(zip(dims, check)))
    if expected is None or evaluate(coefficients, check) != expected:
        return None
    return coefficients


def evaluate(coefficients: dict[tuple[int, ...], Fraction], point: tuple[int, ...]) -> Fraction:
    return sum((c * _monomial(point, e) for e, c in coefficients.items()), Fraction(0))


def render(dims: list[str], coefficients: dict[tuple[int, ...], Fraction], *, exact: bool) -> str:
    """`4050·height·width + 27·height + 12`, largest degree first; `exact=False` rounds the
    coefficients for people (`4.05K·height·width`)."""
    from bloatguard.units import format_amount

    def term(exponents: tuple[int, ...], coefficient: Fraction) -> str:
        factors = [name if power == 1 else f"{name}²" for name, power in zip(dims, exponents) if power]
        if coefficient.denominator != 1:
            number = f"{float(coefficient):.6g}" if exact else f"{float(coefficient):.3g}"
        else:
            number = str(coefficient.numerator) if exact else format_amount(coefficient.numerator, "count")
        if factors and number == "1":
            return "·".join(factors)
        return "·".join([number, *factors])

    ordered = sorted(coefficients.items(), key=lambda item: (-sum(item[0]), [-p for p in item[0]]))
    text = " + ".join(term(e, c) for e, c in ordered) or "0"
    return text.replace("+ -", "- ")


def _monomial(point: tuple[int, ...], exponents: tuple[int, ...]) -> int:
    value = 1
    for x, power in zip(point, exponents):
        value *= x ** power
    return value


def _solve(rows: list[list[Fraction]], values: list[Fraction]) -> list[Fraction] | None:
    """Gaussian elimination in rationals; None for a singular system (never for the
    tensor-product Vandermonde systems `fit` builds, whose points are distinct)."""
    size = len(rows)
    matrix = [row[:] + [value] for row, value in zip(rows, values)]
    for column in range(size):
        pivot = next((r for r in range(column, size) if matrix[r][column] != 0), None)
        if pivot is None:
            return None
        matrix[column], matrix[pivot] = matrix[pivot], matrix[column]
        for r in range(size):
            if r != column and matrix[r][column] != 0:
                factor = matrix[r][column] / matrix[column][column]
                matrix[r] = [a - factor * b for a, b in zip(matrix[r], matrix[column])]
    return [matrix[r][size] / matrix[r][r] for r in range(size)]
