"""The 3-Equations grammar: random equations, how they are shown and how they are read aloud.

Grammar (the authors' generator): ``equation = term (+|-) term = term``. A term is

- optionally ``log`` (spoken "log of"),
- a coefficient: an integer 2-50, or a fraction numerator 1-50 over denominator 2-50, simplified
  (a fraction that simplifies to an integer, e.g. 8/4, is *redrawn*, so a shown fraction is always
  a proper reduced fraction and a shown integer always lies in 2-50); an integer coefficient is left
  out at times when a variable follows,
- an optional variable a-z,
- an optional exponent 2-10, on the variable, or on the integer when there is no variable
  (a fraction without a variable gets no exponent: "3/4^2" would be ambiguous on screen).

``display()`` is the ASCII text of the equation as stored in the manifest, e.g.
``"log 3/4x^2 + 5y = 12"``; the image draws ``^N`` as a raised, smaller ``N`` (see
:mod:`dmlm.corpus.image`). ``spoken()`` uses exactly the authors' words (plus, minus, equals, over,
to the power of, log of) with numbers as digits: ``"log of 3 over 4 x to the power of 2 plus 5 y
equals 12"``.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass

import numpy as np

from dmlm.errors import DmlmError

# Probabilities of the optional parts (our choice; the authors' values are not published in our
# summary). They give about 12 spoken words per equation (the paper: about 11).
P_LOG = 0.15
P_FRACTION = 0.3
P_VARIABLE = 0.6
P_OMIT_COEFFICIENT = 0.3  # of an integer coefficient, when a variable follows
P_EXPONENT = 0.25

VARIABLES = string.ascii_lowercase
OPERATOR_WORDS = {"+": "plus", "-": "minus"}

#: Every word a transcript can contain: numbers 1-50 as digits, the letters a-z and the operator
#: words (85 types).
VOCABULARY: frozenset[str] = frozenset(
    [str(n) for n in range(1, 51)]
    + list(VARIABLES)
    + ["plus", "minus", "equals", "over", "to", "the", "power", "of", "log"]
)


@dataclass(frozen=True)
class Term:
    """One term. ``numerator``/``denominator`` is the coefficient (denominator 1: an integer);
    ``numerator`` None means an omitted coefficient (only with a variable)."""

    log: bool
    numerator: int | None
    denominator: int
    variable: str | None
    exponent: int | None

    def __post_init__(self):
        if self.numerator is None and self.variable is None:
            raise ValueError("a term without a coefficient needs a variable")
        if self.numerator is not None and self.denominator > 1:
            if math.gcd(self.numerator, self.denominator) != 1:
                raise ValueError(f"fraction {self.numerator}/{self.denominator} is not simplified")

    @property
    def is_fraction(self) -> bool:
        return self.numerator is not None and self.denominator > 1

    def segments(self) -> list[tuple[str, bool]]:
        """The displayed text as (text, is_superscript) pieces."""
        out = "log " if self.log else ""
        if self.numerator is not None:
            out += str(self.numerator)
            if self.denominator > 1:
                out += f"/{self.denominator}"
        if self.variable is not None:
            out += self.variable
        pieces = [(out, False)]
        if self.exponent is not None:
            pieces.append((str(self.exponent), True))
        return pieces

    def display(self) -> str:
        return "".join(f"^{t}" if sup else t for t, sup in self.segments())

    def spoken(self) -> str:
        words = ["log", "of"] if self.log else []
        if self.numerator is not None:
            words.append(str(self.numerator))
            if self.denominator > 1:
                words += ["over", str(self.denominator)]
        if self.variable is not None:
            words.append(self.variable)
        if self.exponent is not None:
            words += ["to", "the", "power", "of", str(self.exponent)]
        return " ".join(words)


@dataclass(frozen=True)
class Equation:
    """``left op middle = right``."""

    left: Term
    op: str  # "+" or "-"
    middle: Term
    right: Term

    def segments(self) -> list[tuple[str, bool]]:
        """The displayed text as (text, is_superscript) pieces, for the renderer."""
        pieces = (
            self.left.segments()
            + [(f" {self.op} ", False)]
            + self.middle.segments()
            + [(" = ", False)]
            + self.right.segments()
        )
        merged: list[tuple[str, bool]] = []
        for text, sup in pieces:
            if merged and merged[-1][1] == sup:
                merged[-1] = (merged[-1][0] + text, sup)
            else:
                merged.append((text, sup))
        return merged

    def display(self) -> str:
        return f"{self.left.display()} {self.op} {self.middle.display()} = {self.right.display()}"

    def spoken(self) -> str:
        return (
            f"{self.left.spoken()} {OPERATOR_WORDS[self.op]} {self.middle.spoken()} "
            f"equals {self.right.spoken()}"
        )

    def __str__(self) -> str:
        return self.display()


def random_term(rng: np.random.Generator) -> Term:
    log = bool(rng.random() < P_LOG)
    variable = str(VARIABLES[rng.integers(len(VARIABLES))]) if rng.random() < P_VARIABLE else None
    if rng.random() < P_FRACTION:
        while True:  # redraw fractions that simplify to an integer
            num, den = int(rng.integers(1, 51)), int(rng.integers(2, 51))
            g = math.gcd(num, den)
            num, den = num // g, den // g
            if den > 1:
                break
    else:
        num, den = int(rng.integers(2, 51)), 1
        if variable is not None and rng.random() < P_OMIT_COEFFICIENT:
            num = None
    exponent = None
    if rng.random() < P_EXPONENT and (variable is not None or den == 1):
        exponent = int(rng.integers(2, 11))
    return Term(log=log, numerator=num, denominator=den, variable=variable, exponent=exponent)


def random_equation(rng: np.random.Generator) -> Equation:
    left = random_term(rng)
    op = "+" if rng.random() < 0.5 else "-"
    return Equation(left, op, random_term(rng), random_term(rng))


_TERM_RE = re.compile(
    r"^(?P<log>log )?(?P<num>\d+)?(?:/(?P<den>\d+))?(?P<var>[a-z])?(?:\^(?P<exp>\d+))?$"
)


def parse_term(text: str) -> Term:
    m = _TERM_RE.match(text)
    if not m or not (m["num"] or m["var"]):
        raise DmlmError(f"not a 3-Equations term: {text!r}")
    return Term(
        log=bool(m["log"]),
        numerator=int(m["num"]) if m["num"] else None,
        denominator=int(m["den"]) if m["den"] else 1,
        variable=m["var"],
        exponent=int(m["exp"]) if m["exp"] else None,
    )


def parse_equation(text: str) -> Equation:
    """Inverse of :meth:`Equation.display` (for reading the manifest's ``equations`` column)."""
    m = re.match(r"^(.+) ([+-]) (.+) = (.+)$", text)
    if not m:
        raise DmlmError(f"not a 3-Equations equation: {text!r}")
    return Equation(parse_term(m[1]), m[2], parse_term(m[3]), parse_term(m[4]))


def check_transcript(text: str) -> None:
    """Raise DmlmError listing every word of ``text`` outside :data:`VOCABULARY`."""
    bad = sorted({w for w in text.split() if w not in VOCABULARY})
    if bad:
        raise DmlmError(f"transcript has words outside the 3-Equations vocabulary: {bad}")


def ocr_clean(text: str) -> str:
    """The authors' OCR post-processing of one text line: upper-case, keep only letters, digits
    and ``+ - =`` (spaces between kept characters are collapsed to one)."""
    kept = re.sub(r"[^A-Z0-9+\-= ]", "", text.upper())
    return " ".join(kept.split())


def ocr_reference(equations) -> str:
    """What a perfect OCR would give for these equations in this order (display strings through
    :func:`ocr_clean`; a fraction bar and the exponent mark are not kept)."""
    return " ".join(ocr_clean(eq.display() if isinstance(eq, Equation) else eq) for eq in equations)
