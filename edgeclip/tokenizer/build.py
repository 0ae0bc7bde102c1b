r"""Build edgeclip's tokenizer data: the HF-format CLIP tokenizer.json and the letter/number class table.

tokenizer.json comes from OpenAI CLIP's BPE merge list (`bpe_simple_vocab_16e6.txt.gz`); the class table
records which code points the `regex` package (what OpenCLIP uses) calls \p{L} and \p{N}, and in which
Unicode version, so both backends split text the same way whatever `regex` or Oniguruma is installed.
Run by maintainers to refresh `edgeclip/data/`: `python -m edgeclip.tokenizer.build --out edgeclip/data`;
`--check` says whether the installed `regex` (a newer Unicode version) would classify any code point differently.
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import re
import string
import sys
from pathlib import Path
from typing import Optional

from edgeclip.files import atomic_path
from edgeclip.tokenizer.byte_alphabet import base_alphabet
from edgeclip.tokenizer.constants import EOT_TOKEN, EOW, N_MERGES, SOT_TOKEN, split_pattern
from edgeclip.tokenizer.pretokenize import shipped_classes

SOURCE_NAME = "bpe_simple_vocab_16e6.txt.gz"
TOKENIZER_NAME = "clip_tokenizer.json"
CLASSES_NAME = "unicode_classes.json"


def read_merges(source: Path) -> list[tuple[str, str]]:
    """The first N_MERGES merge pairs of CLIP's list (the file holds more; CLIP uses only these)."""
    with gzip.open(source, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    pairs = [tuple(line.split()) for line in lines[1 : 1 + N_MERGES]]
    bad = [p for p in pairs if len(p) != 2]
    if len(pairs) != N_MERGES or bad:
        raise ValueError(f"{source} is not CLIP's BPE merge list ({len(pairs)} merges, {len(bad)} malformed)")
    return pairs  # type: ignore[return-value]


def build_tokenizer_json(source: Path) -> dict:
    """The tokenizer.json document (HF `tokenizers` format) equivalent to OpenCLIP's SimpleTokenizer."""
    merges = read_merges(source)
    alphabet = base_alphabet()
    tokens = alphabet + [c + EOW for c in alphabet] + ["".join(p) for p in merges] + [SOT_TOKEN, EOT_TOKEN]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{source}: merges produce duplicate tokens; vocabulary would not be CLIP's")
    special = [
        {"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": True, "special": True}
        for t in (SOT_TOKEN, EOT_TOKEN)
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": special,
        # For plain `tokenizers` users; edgeclip itself cleans text in Python (ftfy, html, whitespace, lower()).
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
            {"type": "Lowercase"},
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": split_pattern(r"\p{L}", r"\p{N}")},
             "behavior": "Removed", "invert": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": SOT_TOKEN, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": EOT_TOKEN, "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": SOT_TOKEN, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": EOT_TOKEN, "type_id": 0}}],
            "special_tokens": {t: {"id": t, "ids": [vocab[t]], "tokens": [t]} for t in (SOT_TOKEN, EOT_TOKEN)},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            {"type": "Replace", "pattern": {"String": EOW}, "content": " "},
            {"type": "Strip", "content": " ", "start": 0, "stop": 1},
        ]},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": EOW,
            "fuse_unk": False,
            "vocab": vocab,
            "merges": [f"{a} {b}" for a, b in merges],
        },
    }


def build_unicode_classes() -> dict:
    """What each part of OpenCLIP's case-insensitive pattern matches, per code point, in the installed `regex`.

    source / unicode_version: the `regex` release and the Unicode version it implements; assigned: code
    scalar values that Unicode version assigns (General_Category other than Cn); letters / numbers / other: ranges of
    [\\p{L}], [\\p{N}] and [^\\s\\p{L}\\p{N}] under IGNORECASE (the last one leaves out e.g. U+0345,
    which folds to a letter, so OpenCLIP drops it); case_variants: what each ASCII letter of a literal
    (contraction or special token) matches.
    """
    import regex

    text = "".join(chr(cp) for cp in range(0x110000) if not 0xD800 <= cp < 0xE000)  # every scalar value, once

    def matching(pattern: str, flags: int = regex.IGNORECASE) -> list[int]:
        found = (m.start() for m in regex.finditer(pattern, text, flags))
        return [i if i < 0xD800 else i + 0x800 for i in found]  # string index -> code point (no surrogates)

    doc: dict = {"source": f"regex {regex.__version__}", "unicode_version": regex_unicode_version()}
    unassigned = set(matching(r"\p{Cn}", 0)) | set(range(0xD800, 0xE000))
    doc["assigned"] = _to_ranges([cp for cp in range(0x110000) if cp not in unassigned])
    for name, body in {"letters": r"[\p{L}]", "numbers": r"[\p{N}]", "other": r"[^\s\p{L}\p{N}]"}.items():
        doc[name] = _to_ranges(matching(body))
    folding = matching("[a-z]")  # every code point that matches some ASCII letter case-insensitively
    doc["case_variants"] = {
        ch: [cp for cp in folding if regex.fullmatch(ch, chr(cp), regex.IGNORECASE)] for ch in string.ascii_lowercase
    }
    return doc


def regex_unicode_version() -> str:
    """The Unicode version the installed `regex` implements, as its package description states ("unknown" if not)."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        meta = metadata("regex")
    except PackageNotFoundError:
        return "unknown"
    description = f"{meta.get('Description') or ''}\n{meta.get_payload() or ''}"  # older / newer metadata layouts
    found = re.search(r"supports Unicode (\d+(?:\.\d+)*)", description)
    return found.group(1) if found else "unknown"


def differing_code_points(shipped: dict, fresh: dict) -> list[int]:
    """Code points that two class tables treat differently: assigned or not, class, or case variant of a letter."""
    def members(table: dict) -> dict[str, set[int]]:
        sets = {name: _from_ranges(table[name]) for name in ("assigned", "letters", "numbers", "other")}
        sets.update({f"case {ch}": set(cps) for ch, cps in table["case_variants"].items()})
        return sets

    a, b = members(shipped), members(fresh)
    return sorted(set().union(*(a[key] ^ b.get(key, set()) for key in a)))


def _from_ranges(runs: list[list[int]]) -> set[int]:
    """Inclusive [first, last] runs -> the set of code points."""
    return {cp for first, last in runs for cp in range(first, last + 1)}


def _to_ranges(points: list[int]) -> list[list[int]]:
    """Sorted code points -> inclusive [first, last] runs."""
    runs: list[list[int]] = []
    for cp in points:
        if runs and runs[-1][1] == cp - 1:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp])
    return runs


def write_json(doc: dict, out: Path) -> Path:
    """Write `doc` as compact UTF-8 JSON, atomically, readable by everyone like any installed package file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, mode=0o644) as tmp:
        tmp.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    return out


def describe_drift(shipped: dict, fresh: dict, limit: int = 8) -> str:
    """One line naming both sources and Unicode versions and the code points they treat differently."""
    points = differing_code_points(shipped, fresh)
    versions = (f"shipped table: {shipped['source']} (Unicode {shipped.get('unicode_version', 'unknown')}); "
                f"installed: {fresh['source']} (Unicode {fresh.get('unicode_version', 'unknown')})")
    if not points:
        return f"{versions}: same classes for every code point"
    old, new = _from_ranges(shipped["assigned"]), _from_ranges(fresh["assigned"])
    groups = {
        "assigned only in the installed version": [cp for cp in points if cp in new and cp not in old],
        "assigned only in the shipped table's version": [cp for cp in points if cp in old and cp not in new],
        "assigned in both but classified differently": [cp for cp in points if cp in old and cp in new],
    }
    parts = [f"{len(cps)} {what} ({_names(cps, limit)})" for what, cps in groups.items() if cps]
    return f"{versions}: {len(points)} code points differ: " + "; ".join(parts)


def _names(points: list[int], limit: int) -> str:
    """'U+0558, U+058B, ...' for the first `limit` code points."""
    return ", ".join(f"U+{cp:04X}" for cp in points[:limit]) + (", ..." if len(points) > limit else "")


def default_source() -> Optional[Path]:
    """OpenCLIP's copy of the merge list, located without importing open_clip (None when it is not installed)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SOURCE_NAME
    return path if path.is_file() else None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgeclip.tokenizer.build",
        description="Convert OpenAI CLIP's BPE merge list into an HF-format tokenizer.json that edgeclip ships.",
    )
    parser.add_argument("--source", type=Path, default=None,
                        help=f"path to {SOURCE_NAME} (default: the copy inside an installed open_clip_torch)")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--out", type=Path,
                        help=f"output folder; receives {TOKENIZER_NAME} and {CLASSES_NAME} (needs the `regex` package)")
    action.add_argument("--check", action="store_true",
                        help=f"compare the shipped {CLASSES_NAME} with the installed `regex`; exit 1 if they differ")
    args = parser.parse_args(argv)
    if args.check:
        return check_classes()
    source = args.source or default_source()
    if source is None:
        parser.error(f"no --source given and open_clip_torch is not installed to provide {SOURCE_NAME}")
    try:
        print(write_json(build_tokenizer_json(source), args.out / TOKENIZER_NAME))
        print(write_json(build_unicode_classes(), args.out / CLASSES_NAME))
    except (OSError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def check_classes() -> int:
    """Print how the shipped class table and the installed `regex` differ; 0 if they agree, 1 if not, 2 without `regex`."""
    try:
        fresh = build_unicode_classes()
    except ImportError:
        print("error: --check needs the `regex` package (pip install regex)", file=sys.stderr)
        return 2
    shipped = shipped_classes()
    print(describe_drift(shipped, fresh))
    return 1 if differing_code_points(shipped, fresh) else 0


if __name__ == "__main__":
    sys.exit(main())
