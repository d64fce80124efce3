"""Token estimates for the ``usage`` object: Kimi's web backend reports none.

CJK characters count about one token each; other text about four characters a token.
"""

from __future__ import annotations

import math
import re

_WIDE = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """A rough but honest token count for ``text`` (0 for empty text)."""
    if not text:
        return 0
    wide = len(_WIDE.findall(text))
    return wide + math.ceil((len(text) - wide) / CHARS_PER_TOKEN)


def usage(prompt: str, completion: str) -> dict[str, int]:
    """The OpenAI ``usage`` object for a prompt and everything generated."""
    prompt_tokens = estimate_tokens(prompt)
    completion_tokens = estimate_tokens(completion)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
