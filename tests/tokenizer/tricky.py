"""Text pieces that exercise every corner of CLIP tokenization: special-token literals, case folding (İ, ǅ, ſ, K),
final sigma, combining marks, html entities, mojibake, ligatures, numbers of many scripts, CJK, emoji, controls."""

PIECES = ["<start_of_text>", "<end_of_text>", "<|startoftext|>", "!", "<", " ", "\n", "'s", "'S", "'ſ", "İ", "ǅ", "Σ",
          "ς", "\u0345", "&amp;", "&lt;", "Ã©", "ﬁ", "½", "²", "Ⅻ", "一", "猫", "🐶", "\u200b", "\xad", "\u0301", "e",
          "x", "ab", "The", "dog", "12", "٣", "\t", "K", "ß", "&#10;", "\r\n"]
