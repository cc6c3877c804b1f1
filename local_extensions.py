"""Jinja filters that write prompt answers into the generated files safely.

Cookiecutter loads this module through `_extensions` in cookiecutter.json.
"""
import json
import re

from cookiecutter.utils import simple_filter

# Left raw by json.dumps but not allowed raw by TOML (DEL) or YAML (DEL, C1 controls),
# or read by YAML as line breaks (NEL U+0085, U+2028, U+2029).
RAW_IN_JSON_ONLY = re.compile("[\x7f-\x9f\u2028\u2029]")


@simple_filter
def double_quote_escape(value):
    """`value` escaped for the inside of a double-quoted string, which then reads back
    unchanged as a TOML basic string, a YAML double-quoted scalar and a JSON string:
    quotes, backslashes and control characters are escaped (`\\"`, `\\\\`, `\\n` and
    `\\uXXXX` mean the same in all three); every other character is kept as it is, so
    names stay readable."""
    quoted = json.dumps(str(value), ensure_ascii=False)
    return RAW_IN_JSON_ONLY.sub(lambda match: f"\\u{ord(match.group()):04x}", quoted[1:-1])
