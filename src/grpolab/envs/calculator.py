"""A calculator tool that evaluates arithmetic by walking the `ast`, never with `eval`.

Allowed: int and float literals, + - * / // % **, unary - and +, parentheses. Everything else
(names, calls, attributes, subscripts, lambdas, strings, comparisons, bit operators) is a ToolError.

Why limits and not just "no names": pure arithmetic can still hang or exhaust memory (`9**9**9` is
a 370-million-digit integer). Each limit bounds the work of every step *before* it is done:
- expression length and AST depth bound the parse and the recursion;
- integer literals and every integer result have at most `max_digits` digits, and an exponent's
  magnitude is at most `max_exponent`, so the biggest possible computation is a
  `max_digits`-digit base to the power `max_exponent` (microseconds), checked afterwards;
- floats must stay finite (overflow, inf and nan are errors, as is a complex result such as
  `(-8) ** 0.5`).

>>> evaluate("12 * (3 + 4)")
84
>>> format_number(evaluate("7 / 2"))
'3.5'
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from grpolab.envs.tools import Tool, ToolError, text_tool

Number = int | float


@dataclass(frozen=True)
class CalculatorLimits:
    max_chars: int = 200  # expression length
    max_depth: int = 30  # AST nesting depth (each parenthesised operation adds a level)
    max_digits: int = 60  # digits of any integer literal or intermediate integer result
    max_exponent: int = 200  # |exponent| of **

    def __post_init__(self) -> None:
        if not 1 <= self.max_digits <= 1000:
            raise ValueError("CalculatorLimits.max_digits must be in [1, 1000]")
        if min(self.max_chars, self.max_depth, self.max_exponent) < 1:
            raise ValueError("CalculatorLimits: every limit must be >= 1")


_BINARY: dict[type[ast.operator], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.FloorDiv: ("//", operator.floordiv),
    ast.Mod: ("%", operator.mod),
    ast.Pow: ("**", operator.pow),
}
# Operators models write that Python reads differently: say what to use instead.
_HINTS: dict[type[ast.AST], str] = {
    ast.BitXor: "'^' is bitwise xor here; use ** for powers",
    ast.Name: "names and variables are not allowed; write the numbers",
    ast.Call: "function calls are not allowed; only + - * / // % ** and parentheses",
    ast.Tuple: "tuples are not allowed (write 1000, not 1,000)",
}


def evaluate(expression: str, limits: CalculatorLimits = CalculatorLimits()) -> Number:
    """The value of an arithmetic expression, or ToolError; never another exception, never a hang."""
    if not isinstance(expression, str):
        raise ToolError("expression must be a string")
    text = expression.strip()
    if not text:
        raise ToolError("empty expression")
    if len(text) > limits.max_chars:
        raise ToolError(f"expression longer than {limits.max_chars} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as err:
        # ValueError: null bytes; MemoryError/RecursionError: the parser's own nesting limits.
        raise ToolError(f"invalid expression: {type(err).__name__}") from None
    return _Walker(limits).visit(tree.body, depth=1)


class _Walker:
    def __init__(self, limits: CalculatorLimits) -> None:
        self.limits = limits

    def visit(self, node: ast.AST, depth: int) -> Number:
        if depth > self.limits.max_depth:
            raise ToolError(f"expression nested deeper than {self.limits.max_depth} levels")
        if isinstance(node, ast.Constant):
            return self._literal(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            value = self.visit(node.operand, depth + 1)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left = self.visit(node.left, depth + 1)
            right = self.visit(node.right, depth + 1)
            return self._apply(type(node.op), left, right)
        kind = type(node.op) if isinstance(node, ast.BinOp | ast.UnaryOp) else type(node)
        hint = _HINTS.get(kind, f"{kind.__name__} is not allowed; only + - * / // % ** and parentheses")
        raise ToolError(hint)

    def _literal(self, value: object) -> Number:
        # bool is an int subclass: `True + 1` is not arithmetic a model should rely on.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ToolError(f"{type(value).__name__} literals are not allowed; only numbers")
        return self._checked(value)

    def _apply(self, op: type[ast.operator], left: Number, right: Number) -> Number:
        symbol, fn = _BINARY[op]
        if op is ast.Pow and abs(right) > self.limits.max_exponent:
            # Checked before computing: this is what keeps 9**9**9 from running for minutes.
            raise ToolError(f"exponent {format_number(right)} too large (limit {self.limits.max_exponent})")
        try:
            result = fn(left, right)
        except ZeroDivisionError:
            raise ToolError(f"division by zero in {symbol}") from None
        except (OverflowError, ValueError, MemoryError) as err:
            raise ToolError(f"cannot compute {symbol}: {err}") from None
        if isinstance(result, complex):
            raise ToolError("the result is not a real number")
        return self._checked(result)

    def _checked(self, value: Number) -> Number:
        if isinstance(value, float) and not math.isfinite(value):
            raise ToolError("number too large (overflow)")
        if isinstance(value, int) and _digits(value) > self.limits.max_digits:
            raise ToolError(f"number longer than {self.limits.max_digits} digits")
        return value


def _digits(value: int) -> int:
    # A b-bit number has more than (b-1)*log10(2) digits, so past 3400 bits (> 1023 digits, above
    # any allowed max_digits) a lower bound decides without str(), which Python caps at 4300 digits.
    bits = abs(value).bit_length()
    if bits > 3400:
        return int((bits - 1) * 0.30103) + 1
    return len(str(abs(value)))


def format_number(value: Number) -> str:
    """Integers exactly; floats to 12 significant digits, so 0.1 + 0.2 reads 0.3, and 6/3 reads 2."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}"


def calculator_tool(limits: CalculatorLimits = CalculatorLimits()) -> Tool:
    def calculator(expression: str) -> str:
        return format_number(evaluate(expression, limits))

    description = "Evaluate an arithmetic expression with + - * / // % ** and parentheses."
    return text_tool(calculator, description, "expression", "e.g. (12 + 7) * 3")
