"""Jinja filters that write prompt answers into the generated files safely, and a
quieter refusal of bad answers.

Cookiecutter loads this module through `_extensions` in cookiecutter.json, in its own
process, before it generates anything.
"""
import json
import logging
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


class _RefusedAnswersWithoutTraceback(logging.Filter):
    """When the pre-generation hook refuses answers it has already said what was wrong and
    how to fix it; cookiecutter then logs "Stopping generation because pre_gen_project hook
    script didn't exit successfully" with a traceback of its own code, which buries that
    message. Keep cookiecutter's line, drop the traceback (of that one record only)."""

    def filter(self, record):
        if record.getMessage().startswith("Stopping generation because pre_gen_project"):
            record.exc_info = record.exc_text = None
        return True


logging.getLogger("cookiecutter.hooks").addFilter(_RefusedAnswersWithoutTraceback())
