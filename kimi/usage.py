"""Token estimates for the ``usage`` object: Kimi's web backend reports none.

CJK characters count about one token each; other text about four characters a token.
"""

from __future__ import annotations

import math
import re
from typing import Any

_WIDE = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """A rough but honest token count for ``text`` (0 for empty text)."""
    if not text:
        return 0
    wide = len(_WIDE.findall(text))
    return wide + math.ceil((len(text) - wide) / CHARS_PER_TOKEN)


def usage(prompt: str, completion: str, reasoning: str = "") -> dict[str, Any]:
    """The OpenAI ``usage`` object; ``completion`` is the answer, ``reasoning`` the thinking.

    Completion tokens include reasoning tokens, as OpenAI counts them; the reasoning share is
    told in ``completion_tokens_details`` when there was any.
    """
    prompt_tokens = estimate_tokens(prompt)
    reasoning_tokens = estimate_tokens(reasoning)
    completion_tokens = estimate_tokens(completion) + reasoning_tokens
    body: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if reasoning_tokens:
        body["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return body
