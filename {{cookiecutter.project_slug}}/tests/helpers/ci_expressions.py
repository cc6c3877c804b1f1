"""GitHub Actions expressions (dollar sign, two braces), as the CI harness evaluates them.

A small evaluator of GitHub's syntax: literals, contexts, the comparison and logical
operators, contains/startsWith/endsWith and the status functions. Anything it does not
know raises ValueError, so a test fails rather than guessing.
"""
import re

TOKEN = re.compile(r"""\s*(?:
    (?P<string>'(?:[^']|'')*')
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<operator>==|!=|<=|>=|&&|\|\||[<>!(),])
  | (?P<name>[A-Za-z_][\w-]*(?:\.[\w-]+|\[\s*'[^']*'\s*\])*)
)""", re.X)


def _number(value):
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value.strip() or 0)
    except ValueError:
        return float("nan")


def _equal(left, right):
    """GitHub's loose equality: same types compare (strings ignoring case), else numbers."""
    if isinstance(left, str) and isinstance(right, str):
        return left.casefold() == right.casefold()
    if type(left) is type(right):
        return left == right
    return _number(left) == _number(right)


def truthy(value):
    return value not in (None, False, "", 0) and value == value


class Expression:
    """Evaluate one GitHub Actions expression against `contexts` and `status`."""

    def __init__(self, text, contexts, status):
        self.tokens = []
        position = 0
        text = text.strip()
        while position < len(text):
            match = TOKEN.match(text, position)
            if not match or match.end() == position:
                raise ValueError(f"cannot parse expression {text!r} at {text[position:]!r}")
            kind = match.lastgroup
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.index = 0
        self.contexts = contexts
        self.status = status

    def value(self):
        result = self._or()
        if self.index != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.index]}")
        return result

    def _peek(self):
        return self.tokens[self.index][1] if self.index < len(self.tokens) else None

    def _take(self, expected=None):
        kind, token = self.tokens[self.index]
        if expected and token != expected:
            raise ValueError(f"expected {expected!r}, got {token!r}")
        self.index += 1
        return kind, token

    def _or(self):
        left = self._and()
        while self._peek() == "||":
            self._take()
            right = self._and()
            left = left if truthy(left) else right
        return left

    def _and(self):
        left = self._comparison()
        while self._peek() == "&&":
            self._take()
            right = self._comparison()
            left = right if truthy(left) else left
        return left

    def _comparison(self):
        left = self._unary()
        while self._peek() in ("==", "!=", "<", ">", "<=", ">="):
            _, operator = self._take()
            right = self._unary()
            if operator in ("==", "!="):
                left = _equal(left, right) == (operator == "==")
            else:
                a, b = _number(left), _number(right)
                left = {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[operator]
        return left

    def _unary(self):
        if self._peek() == "!":
            self._take()
            return not truthy(self._unary())
        return self._primary()

    def _primary(self):
        kind, token = self._take()
        if token == "(":
            result = self._or()
            self._take(")")
            return result
        if kind == "string":
            return token[1:-1].replace("''", "'")
        if kind == "number":
            return float(token)
        if token in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[token]
        if self._peek() == "(":
            return self._call(token)
        return self._lookup(token)

    def _call(self, function):
        self._take("(")
        arguments = []
        while self._peek() != ")":
            arguments.append(self._or())
            if self._peek() == ",":
                self._take()
        self._take(")")
        if function in ("success", "failure", "always", "cancelled"):
            return {"success": not self.status["failed"], "failure": self.status["failed"],
                    "always": True, "cancelled": False}[function]
        text = [str(argument or "").casefold() for argument in arguments]
        if function == "contains":
            return text[1] in text[0]
        if function == "startsWith":
            return text[0].startswith(text[1])
        if function == "endsWith":
            return text[0].endswith(text[1])
        raise ValueError(f"the harness does not know the function {function}()")

    def _lookup(self, path):
        keys = re.findall(r"\[\s*'([^']*)'\s*\]|([\w-]+)", path)
        parts = [quoted or plain for quoted, plain in keys]
        if parts[0] not in self.contexts:
            raise ValueError(f"the harness has no context {parts[0]!r}")
        value = self.contexts
        for part in parts:
            value = value.get(part) if isinstance(value, dict) else None
        return value


EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def render(text, contexts, status):
    """Substitute every GitHub expression in a string, as GitHub does before a step runs."""
    def value(match):
        result = Expression(match.group(1), contexts, status).value()
        if result is None:
            return ""
        if isinstance(result, bool):
            return str(result).lower()
        if isinstance(result, float) and result.is_integer():
            return str(int(result))
        return str(result)
    return EXPRESSION.sub(value, str(text))


def condition_holds(condition, contexts, status):
    """An `if:`; without a status function GitHub prepends `success() &&`."""
    if condition is None:
        return not status["failed"]
    text = str(condition).strip()
    match = EXPRESSION.fullmatch(text)
    text = match.group(1) if match else text
    if not re.search(r"\b(success|failure|always|cancelled)\(", text):
        text = f"success() && ({text})"
    return truthy(Expression(text, contexts, status).value())
