"""Declarative checks of the arguments of every public constructor and ``fit``.

A parameter is described by constraints, and :func:`check` tests a value
against them and returns it normalised::

    patience = check("patience", patience, Interval(Integral, 1))
    seed = check("seed", seed, None, Interval(Integral, 0))
    progress = check("progress", progress, Boolean(), Options("bar", "lines"))

The constraints are :class:`Interval` (integers or finite reals in a
range), :class:`Options` (a fixed set of values), :class:`Boolean`,
:class:`Instance` (any value of a type, such as a callable) and ``None``
(None itself is allowed). The same rules hold everywhere:

- NumPy integer and float scalars count as integers and numbers, and come
  back as Python ``int`` / ``float`` (``np.bool_`` as ``bool``);
- a bool is never a number, and only a bool is a bool;
- a real number must be finite (NaN and inf are out of every interval);
- a value of a kind no constraint takes raises TypeError, one of the right
  kind out of range (or not among the options) ValueError, both worded
  ``"<name> must be <what>, got <value>"``, e.g.
  ``"patience must be an integer >= 1, got 0"``.
"""

import math
from numbers import Integral, Real

import numpy as np

__all__ = ["Interval", "Options", "Boolean", "Instance", "check"]


class Interval:
    """Integers (``kind=Integral``) or finite real numbers (``kind=Real``;
    integers are taken too, as floats) between ``lo`` and ``hi`` (None: no
    bound); ``closed`` says which ends are included: "both" (default),
    "left", "right" or "neither"."""

    def __init__(self, kind, lo=None, hi=None, closed="both"):
        if kind not in (Integral, Real):
            raise TypeError(f"an Interval holds Integral or Real values, got {kind!r}")
        if closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"closed must be 'both', 'left', 'right' or 'neither', got {closed!r}")
        self.kind, self.lo, self.hi, self.closed = kind, lo, hi, closed

    def fits(self, value):
        """Whether ``value`` is of the interval's kind (range aside)."""
        return isinstance(value, self.kind) and not isinstance(value, (bool, np.bool_))

    def normalise(self, value):
        return int(value) if self.kind is Integral else float(value)

    def holds(self, value):
        """Whether ``value`` (of the right kind, normalised) lies in the interval."""
        if self.kind is Real and not math.isfinite(value):
            return False
        left_in = self.closed in ("both", "left")
        right_in = self.closed in ("both", "right")
        if self.lo is not None and (value < self.lo or (value == self.lo and not left_in)):
            return False
        return self.hi is None or value < self.hi or (value == self.hi and right_in)

    def __str__(self):
        what = "an integer" if self.kind is Integral else "a number"
        lo, hi = _bound(self.lo), _bound(self.hi)
        if lo is None and hi is None:
            return what if self.kind is Integral else "a finite number"
        if hi is None:
            what = what if self.kind is Integral else "a finite number"
            return f"{what} {'>=' if self.closed in ('both', 'left') else '>'} {lo}"
        if lo is None:
            return f"{what} {'<=' if self.closed in ('both', 'right') else '<'} {hi}"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"{what} in {left}{lo}, {hi}{right}"


class Options:
    """One of a fixed set of values (compared by ``==``, with bools and
    numbers never mistaken for each other)."""

    def __init__(self, *values):
        self.values = values

    def fits(self, value):
        return True                       # any kind may be an option: a miss is a ValueError

    def normalise(self, value):
        return value

    def holds(self, value):
        for v in self.values:
            if isinstance(v, (bool, np.bool_)) != isinstance(value, (bool, np.bool_)):
                continue                  # 1 == True, but 1 is not the option True
            try:
                if bool(v == value):
                    return True
            except (TypeError, ValueError):        # arrays and other odd values: not an option
                pass
        return False

    def __str__(self):
        return f"one of {list(self.values)}"


class Boolean:
    """True or False (``np.bool_`` too): never a string, a number or None."""

    def fits(self, value):
        return isinstance(value, (bool, np.bool_))

    def normalise(self, value):
        return bool(value)

    def holds(self, value):
        return True

    def __str__(self):
        return "a bool (True or False)"


class Instance:
    """Any value that ``test(value)`` accepts (``test`` a type, or a predicate
    such as ``callable``), described as ``what``."""

    def __init__(self, test, what):
        self.test, self.what = test, what

    def fits(self, value):
        return isinstance(value, self.test) if isinstance(self.test, type) else self.test(value)

    def normalise(self, value):
        return value

    def holds(self, value):
        return True

    def __str__(self):
        return self.what


class _None:
    def fits(self, value):
        return value is None

    def normalise(self, value):
        return None

    def holds(self, value):
        return True

    def __str__(self):
        return "None"


def describe(*constraints):
    """What the constraints ask for, in words: ``"None or an integer >= 0"``."""
    return " or ".join(str(_None() if c is None else c) for c in constraints)


def check(name, value, *constraints):
    """``value`` normalised by the first constraint it meets; TypeError when
    it is of a kind none takes, ValueError when it is out of range."""
    found = [_None() if c is None else c for c in constraints]
    kind_ok = False
    for c in found:
        if c.fits(value):
            kind_ok = True
            try:
                v = c.normalise(value)
            except OverflowError:          # an int beyond float's range: out of any interval
                continue
            if c.holds(v):
                return v
    error = ValueError if kind_ok else TypeError
    raise error(f"{name} must be {describe(*constraints)}, got {_shown(value)}")


def _bound(x):
    """A bound as written: 0.0 as 0, 1e-08 as 1e-08."""
    return int(x) if isinstance(x, float) and x.is_integer() else x


def _shown(value):
    """A value as the user would have typed it: NumPy scalars as plain numbers."""
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return repr(value.item())
    return repr(value)
