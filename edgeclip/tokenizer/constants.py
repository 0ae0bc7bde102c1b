"""Fixed facts of the CLIP tokenizer as OpenCLIP's SimpleTokenizer defines them."""
from __future__ import annotations

import re

CONTEXT_LENGTH = 77
SOT_ID = 49406
EOT_ID = 49407
PAD_ID = 0
SOT_TOKEN = "<start_of_text>"  # OpenCLIP's names; OpenAI's "<|startoftext|>" is ordinary text to OpenCLIP
EOT_TOKEN = "<end_of_text>"
EOW = "</w>"  # end-of-word suffix of the last symbol of every word
N_MERGES = 49152 - 256 - 2  # CLIP uses this many merges of the list; vocab = 2*256 bytes + merges + 2 specials
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


def split_pattern(letters: str, numbers: str, specials: tuple[str, ...] = (SOT_TOKEN, EOT_TOKEN)) -> str:
    """OpenCLIP's pre-tokenizer regex, given the contents of a letter class and a number class.

    Alternatives are tried in this order: special tokens, contractions, a run of letters, one number
    character, a run of anything that is neither space, letter nor number. Matching is case-insensitive.
    """
    alts = [*(re.escape(s) for s in specials), *CONTRACTIONS, f"[{letters}]+", f"[{numbers}]", rf"[^\s{letters}{numbers}]+"]
    return "(?i)" + "|".join(alts)
