"""A small parser and evaluator for the GitHub Actions expression language (``${{ ... }}``).

Follows GitHub's documented semantics: loose equality with type coercion to numbers, case-insensitive
string comparison, ``&&``/``||`` returning operand values, null for missing properties, and GitHub's way
of printing values when a template is interpolated into a string.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CONTEXT_NAMES",
    "STATUS_FUNCTIONS",
    "ExpressionError",
    "ExpressionRuntimeError",
    "evaluate",
    "evaluate_template",
    "find_expressions",
    "has_expression",
    "interpolate",
    "is_truthy",
    "loose_equals",
    "parse",
    "to_string",
    "uses_status_function",
]


class ExpressionError(ValueError):
    """An expression that does not parse, names an unknown function or context, or fails to evaluate."""


class ExpressionRuntimeError(ExpressionError):
    """A valid expression that failed on its values (fromJSON of bad JSON, a bad format string): GitHub
    fails the step or job that evaluated it rather than refusing the workflow."""


CONTEXT_NAMES = frozenset(
    {
        "github",
        "inputs",
        "vars",
        "secrets",
        "env",
        "needs",
        "steps",
        "job",
        "jobs",
        "runner",
        "matrix",
        "strategy",
    }
)
STATUS_FUNCTIONS = frozenset({"success", "failure", "always", "cancelled"})

# name -> (min args, max args or None for unbounded)
_ARITY: dict[str, tuple[int, int | None]] = {
    "contains": (2, 2),
    "startswith": (2, 2),
    "endswith": (2, 2),
    "format": (1, None),
    "join": (1, 2),
    "tojson": (1, 1),
    "fromjson": (1, 1),
    "hashfiles": (1, None),
    "success": (0, 0),
    "failure": (0, 0),
    "always": (0, 0),
    "cancelled": (0, 0),
}


# ----------------------------------------------------------------------------------------------- lexer


@dataclass(frozen=True)
class _Token:
    kind: str  # "str" "num" "ident" "op" "eof"
    value: Any
    pos: int


_NUMBER = re.compile(r"-?(?:0x[0-9a-fA-F]+|0o[0-7]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_OPERATORS = ("&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "(", ")", "[", "]", ",", ".", "*")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
            continue
        if char == "'":
            j = i + 1
            parts: list[str] = []
            while True:
                end = text.find("'", j)
                if end < 0:
                    raise ExpressionError(f"Unterminated string literal at position {i + 1} in: {text}")
                parts.append(text[j:end])
                if end + 1 < len(text) and text[end + 1] == "'":
                    parts.append("'")
                    j = end + 2
                    continue
                i = end + 1
                break
            tokens.append(_Token("str", "".join(parts), i))
            continue
        previous = tokens[-1] if tokens else None
        after_dot = previous is not None and previous.kind == "op" and previous.value == "."
        if not after_dot and (
            char.isdigit() or (char == "-" and i + 1 < len(text) and text[i + 1].isdigit())
        ):
            match = _NUMBER.match(text, i)
            if match:
                tokens.append(_Token("num", _parse_number_literal(match.group(0), text), i))
                i = match.end()
                continue
        match = _IDENT.match(text, i)
        if match:
            tokens.append(_Token("ident", match.group(0), i))
            i = match.end()
            continue
        for op in _OPERATORS:
            if text.startswith(op, i):
                tokens.append(_Token("op", op, i))
                i += len(op)
                break
        else:
            raise ExpressionError(f"Unexpected symbol {char!r} at position {i + 1} in: {text}")
    tokens.append(_Token("eof", None, len(text)))
    return tokens


def _parse_number_literal(literal: str, text: str) -> int | float:
    sign = -1 if literal.startswith("-") else 1
    body = literal.lstrip("-")
    try:
        if body.lower().startswith("0x"):
            return sign * int(body, 16)
        if body.lower().startswith("0o"):
            return sign * int(body[2:], 8)
        if re.fullmatch(r"\d+", body):
            return sign * int(body)
        return sign * float(body)
    except ValueError as exc:  # pragma: no cover - the regex only admits valid literals
        raise ExpressionError(f"Invalid number {literal!r} in: {text}") from exc


# ----------------------------------------------------------------------------------------------- AST


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Context:
    name: str


@dataclass(frozen=True)
class Index:
    target: Node
    key: Node


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Call:
    name: str  # lower-cased
    args: tuple[Node, ...]


Node = Literal | Context | Index | Not | Binary | Call


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def accept(self, *ops: str) -> str | None:
        token = self.peek()
        if token.kind == "op" and token.value in ops:
            self.pos += 1
            return str(token.value)
        return None

    def expect(self, op: str) -> None:
        if self.accept(op) is None:
            token = self.peek()
            found = "end of expression" if token.kind == "eof" else repr(token.value)
            raise ExpressionError(
                f"Expected {op!r} at position {token.pos + 1}, found {found}, in: {self.text}"
            )

    def parse(self) -> Node:
        if self.peek().kind == "eof":
            raise ExpressionError("Empty expression")
        node = self.parse_or()
        token = self.peek()
        if token.kind != "eof":
            raise ExpressionError(f"Unexpected {token.value!r} at position {token.pos + 1} in: {self.text}")
        return node

    def parse_or(self) -> Node:
        node = self.parse_and()
        while self.accept("||"):
            node = Binary("||", node, self.parse_and())
        return node

    def parse_and(self) -> Node:
        node = self.parse_equality()
        while self.accept("&&"):
            node = Binary("&&", node, self.parse_equality())
        return node

    def parse_equality(self) -> Node:
        node = self.parse_comparison()
        while op := self.accept("==", "!="):
            node = Binary(op, node, self.parse_comparison())
        return node

    def parse_comparison(self) -> Node:
        node = self.parse_unary()
        while op := self.accept("<", "<=", ">", ">="):
            node = Binary(op, node, self.parse_unary())
        return node

    def parse_unary(self) -> Node:
        if self.accept("!"):
            return Not(self.parse_unary())
        return self.parse_postfix()

    def parse_postfix(self) -> Node:
        node = self.parse_primary()
        while True:
            if self.accept("."):
                token = self.take()
                if token.kind == "op" and token.value == "*":
                    raise ExpressionError(
                        f"Object filters (.*) are not supported by this harness: {self.text}"
                    )
                if token.kind != "ident":
                    raise ExpressionError(
                        f"Expected a property name at position {token.pos + 1} in: {self.text}"
                    )
                node = Index(node, Literal(token.value))
            elif self.accept("["):
                if self.peek().kind == "op" and self.peek().value == "*":
                    raise ExpressionError(
                        f"Object filters ([*]) are not supported by this harness: {self.text}"
                    )
                key = self.parse_or()
                self.expect("]")
                node = Index(node, key)
            else:
                return node

    def parse_primary(self) -> Node:
        token = self.take()
        if token.kind in ("str", "num"):
            return Literal(token.value)
        if token.kind == "op" and token.value == "(":
            node = self.parse_or()
            self.expect(")")
            return node
        if token.kind == "ident":
            name = str(token.value)
            if self.accept("("):
                return self.parse_call(name, token.pos)
            keyword = {"true": True, "false": False, "null": None, "NaN": math.nan, "Infinity": math.inf}
            if name in keyword:
                return Literal(keyword[name])
            if name.lower() not in CONTEXT_NAMES:
                raise ExpressionError(
                    f"Unrecognized named-value: {name!r}. Located at position {token.pos + 1} "
                    f"within expression: {self.text}"
                )
            return Context(name.lower())
        found = "end of expression" if token.kind == "eof" else repr(token.value)
        raise ExpressionError(f"Unexpected {found} at position {token.pos + 1} in: {self.text}")

    def parse_call(self, name: str, pos: int) -> Node:
        lowered = name.lower()
        if lowered not in _ARITY:
            raise ExpressionError(
                f"Unrecognized function: {name!r}. Located at position {pos + 1} "
                f"within expression: {self.text}"
            )
        args: list[Node] = []
        if not self.accept(")"):
            while True:
                args.append(self.parse_or())
                if self.accept(")"):
                    break
                self.expect(",")
        low, high = _ARITY[lowered]
        if len(args) < low or (high is not None and len(args) > high):
            expected = f"{low}" if low == high else f"{low}..{high if high is not None else 'n'}"
            raise ExpressionError(
                f"Function {name!r} takes {expected} argument(s), got {len(args)}, in: {self.text}"
            )
        return Call(lowered, tuple(args))


_CACHE: dict[str, Node] = {}


def parse(expression: str) -> Node:
    """Parse one expression (the text between ``${{`` and ``}}``), raising ExpressionError on errors."""
    node = _CACHE.get(expression)
    if node is None:
        node = _Parser(expression).parse()
        _CACHE[expression] = node
    return node


def uses_status_function(node: Node) -> bool:
    """Whether success()/failure()/always()/cancelled() appears anywhere in the expression."""
    if isinstance(node, Call):
        return node.name in STATUS_FUNCTIONS or any(uses_status_function(arg) for arg in node.args)
    if isinstance(node, Not):
        return uses_status_function(node.operand)
    if isinstance(node, Binary):
        return uses_status_function(node.left) or uses_status_function(node.right)
    if isinstance(node, Index):
        return uses_status_function(node.target) or uses_status_function(node.key)
    return False


# ----------------------------------------------------------------------------------------------- values


def is_truthy(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return not (value == 0 or math.isnan(value))
    if isinstance(value, str):
        return value != ""
    return True  # arrays and objects


def _to_number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return 0.0
        try:
            if re.fullmatch(r"[+-]?0x[0-9a-fA-F]+", text):
                return float(int(text, 16))
            if re.fullmatch(r"[+-]?0o[0-7]+", text):
                return float(int(text.replace("0o", ""), 8))
            if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?Infinity|NaN", text):
                return float(text.replace("Infinity", "inf"))
        except ValueError:
            return math.nan
        return math.nan
    return math.nan


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


def loose_equals(left: Any, right: Any) -> bool:
    """GitHub's ``==``: same kinds compare directly (strings case-insensitively), others as numbers."""
    left_kind, right_kind = _kind(left), _kind(right)
    if left_kind == right_kind:
        if left_kind == "null":
            return True
        if left_kind == "string":
            return bool(left.upper() == right.upper())
        if left_kind in ("array", "object"):
            return left is right
        if left_kind == "number":
            return float(left) == float(right)
        return bool(left == right)
    return _to_number(left) == _to_number(right)


def _compare(op: str, left: Any, right: Any) -> bool:
    if _kind(left) == "string" and _kind(right) == "string":
        a: Any = left.upper()
        b: Any = right.upper()
    else:
        a, b = _to_number(left), _to_number(right)
        if math.isnan(a) or math.isnan(b):
            return False
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _format_number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    text = f"{value:.15g}"
    return text.replace("e+", "E+").replace("e-", "E-")


def to_string(value: Any) -> str:
    """How GitHub prints a value in string interpolation: null -> '', booleans lower-case, ints plain."""
    kind = _kind(value)
    if kind == "null":
        return ""
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "number":
        return _format_number(float(value))
    if kind == "string":
        return str(value)
    return "Array" if kind == "array" else "Object"


def _json_ready(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            return int(value)
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return str(value)


def _lookup(target: Any, key: Any) -> Any:
    if isinstance(target, Mapping):
        if not isinstance(key, str):
            key = to_string(key)
        if key in target:
            return target[key]
        lowered = key.lower()
        for name, value in target.items():
            if isinstance(name, str) and name.lower() == lowered:
                return value
        return None
    if isinstance(target, list | tuple):
        if isinstance(key, bool) or key is None:
            return None
        number = _to_number(key)
        if math.isnan(number) or not number.is_integer() or number < 0 or number >= len(target):
            return None
        return target[int(number)]
    return None


# ----------------------------------------------------------------------------------------------- functions


def _fn_contains(search: Any, item: Any) -> bool:
    if isinstance(search, list | tuple):
        return any(loose_equals(element, item) for element in search)
    return to_string(item).upper() in to_string(search).upper()


def _fn_format(template: Any, *args: Any) -> str:
    text = to_string(template)
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "{":
            if text.startswith("{{", i):
                out.append("{")
                i += 2
                continue
            end = text.find("}", i)
            index_text = text[i + 1 : end] if end > 0 else ""
            if end < 0 or not index_text.isdigit():
                raise ExpressionRuntimeError(f"The following format string is invalid: {text}")
            index = int(index_text)
            if index >= len(args):
                raise ExpressionRuntimeError(
                    f"The following format string references more arguments than were supplied: {text}"
                )
            out.append(to_string(args[index]))
            i = end + 1
        elif char == "}":
            if text.startswith("}}", i):
                out.append("}")
                i += 2
                continue
            raise ExpressionRuntimeError(f"The following format string is invalid: {text}")
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _fn_join(value: Any, separator: Any = ",") -> str:
    if isinstance(value, list | tuple):
        return to_string(separator).join(to_string(item) for item in value)
    return to_string(value)


def _fn_from_json(value: Any) -> Any:
    text = to_string(value)
    if text.strip() == "":
        raise ExpressionRuntimeError("fromJSON: the input is empty (a missing output or input?)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExpressionRuntimeError(f"fromJSON: invalid JSON {text[:200]!r}: {exc}") from exc


def hash_files(workspace: Path, *patterns: Any) -> str:
    """``hashFiles``: SHA-256 over the SHA-256 of each matched file (sorted), '' when nothing matches."""
    include: set[Path] = set()
    exclude: set[Path] = set()
    root = workspace.resolve()
    for pattern in patterns:
        text = to_string(pattern).strip()
        negate = text.startswith("!")
        text = text.removeprefix("!")
        matches = {p.resolve() for p in root.glob(text) if p.is_file()}
        (exclude if negate else include).update(m for m in matches if m.is_relative_to(root))
    files = sorted(include - exclude)
    if not files:
        return ""
    outer = hashlib.sha256()
    for path in files:
        outer.update(hashlib.sha256(path.read_bytes()).digest())
    return outer.hexdigest()


Function = Callable[..., Any]

_BUILTINS: dict[str, Function] = {
    "contains": _fn_contains,
    "startswith": lambda a, b: to_string(a).upper().startswith(to_string(b).upper()),
    "endswith": lambda a, b: to_string(a).upper().endswith(to_string(b).upper()),
    "format": _fn_format,
    "join": _fn_join,
    "tojson": lambda value: json.dumps(_json_ready(value), indent=2),
    "fromjson": _fn_from_json,
}


# ----------------------------------------------------------------------------------------------- evaluation


def evaluate(
    expression: str | Node,
    contexts: Mapping[str, Any],
    functions: Mapping[str, Function] | None = None,
) -> Any:
    """Evaluate one expression against ``contexts`` (name -> value).

    ``functions`` supplies the functions that depend on where the expression runs: ``success``,
    ``failure``, ``always``, ``cancelled`` (no arguments) and ``hashFiles`` (patterns); names are matched
    case-insensitively. A known function that is not supplied here raises ExpressionError.
    """
    node = parse(expression) if isinstance(expression, str) else expression
    available = {name.lower(): fn for name, fn in (functions or {}).items()}
    lowered_contexts = {name.lower(): value for name, value in contexts.items()}
    return _Evaluator(lowered_contexts, available, expression).eval(node)


class _Evaluator:
    def __init__(self, contexts: dict[str, Any], functions: dict[str, Function], source: Any) -> None:
        self.contexts = contexts
        self.functions = functions
        self.source = source

    def eval(self, node: Node) -> Any:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Context):
            if node.name not in self.contexts:
                raise ExpressionError(f"Unrecognized named-value: {node.name!r} (not available here)")
            return self.contexts[node.name]
        if isinstance(node, Index):
            return _lookup(self.eval(node.target), self.eval(node.key))
        if isinstance(node, Not):
            return not is_truthy(self.eval(node.operand))
        if isinstance(node, Binary):
            return self.eval_binary(node)
        return self.eval_call(node)

    def eval_binary(self, node: Binary) -> Any:
        left = self.eval(node.left)
        if node.op == "&&":
            return self.eval(node.right) if is_truthy(left) else left
        if node.op == "||":
            return left if is_truthy(left) else self.eval(node.right)
        right = self.eval(node.right)
        if node.op == "==":
            return loose_equals(left, right)
        if node.op == "!=":
            return not loose_equals(left, right)
        return _compare(node.op, left, right)

    def eval_call(self, node: Call) -> Any:
        fn = self.functions.get(node.name) or _BUILTINS.get(node.name)
        if fn is None:
            raise ExpressionError(f"Function {node.name}() is not available here (in: {self.source})")
        return fn(*(self.eval(arg) for arg in node.args))


# ----------------------------------------------------------------------------------------------- templates


def find_expressions(text: str) -> Iterator[tuple[int, int, str]]:
    """Yield (start, end, expression) for each ``${{ ... }}`` in ``text`` (``}}`` inside quotes is kept)."""
    i = 0
    while True:
        start = text.find("${{", i)
        if start < 0:
            return
        j = start + 3
        in_string = False
        while j < len(text):
            if text[j] == "'":
                in_string = not in_string
            elif not in_string and text.startswith("}}", j):
                break
            j += 1
        else:
            raise ExpressionError(f"Unclosed expression (missing '}}}}') in: {text}")
        yield start, j + 2, text[start + 3 : j].strip()
        i = j + 2


def has_expression(value: Any) -> bool:
    return isinstance(value, str) and "${{" in value


def _single_expression(text: str) -> str | None:
    stripped = text.strip()
    found = list(find_expressions(stripped))
    if len(found) == 1 and found[0][0] == 0 and found[0][1] == len(stripped):
        return found[0][2]
    return None


def interpolate(
    text: str, contexts: Mapping[str, Any], functions: Mapping[str, Function] | None = None
) -> str:
    """Replace every ``${{ expr }}`` in ``text`` with the expression's string form."""
    out: list[str] = []
    last = 0
    for start, end, expression in find_expressions(text):
        out.append(text[last:start])
        out.append(to_string(evaluate(expression, contexts, functions)))
        last = end
    out.append(text[last:])
    return "".join(out)


def evaluate_template(
    value: Any, contexts: Mapping[str, Any], functions: Mapping[str, Function] | None = None
) -> Any:
    """Evaluate a workflow value: a string that is exactly one ``${{ }}`` keeps the expression's type,
    other strings are interpolated, mappings and lists are evaluated element-wise, anything else is kept."""
    if isinstance(value, str):
        if "${{" not in value:
            return value
        single = _single_expression(value)
        if single is not None:
            return evaluate(single, contexts, functions)
        return interpolate(value, contexts, functions)
    if isinstance(value, Mapping):
        return {key: evaluate_template(item, contexts, functions) for key, item in value.items()}
    if isinstance(value, list):
        return [evaluate_template(item, contexts, functions) for item in value]
    return value


def condition_expression(value: Any) -> str | None:
    """The expression text of an ``if:`` value (``${{ }}`` optional); None when it is a template with
    text around its expressions (GitHub then evaluates it as a non-empty string, i.e. truthy)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return None
    if isinstance(value, int | float):
        return to_string(value)
    text = str(value).strip()
    if "${{" not in text:
        return text
    return _single_expression(text)
