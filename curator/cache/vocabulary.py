"""Word rarity for the lexical verifier: inverse document frequency of word stems.

Two prompts that differ in a rare word ("Newton" / "Carroll") ask different things more
often than two that differ in a common one ("best" / "good"). The document frequencies of
the stems seen at least `MIN_DF` times in qqp-dev's TRAIN questions are written by
`python -m bench.train_verifier` into vocabulary_table.py; a stem not in the table is rarer
than that and gets the highest IDF.
"""

from __future__ import annotations

import math
from functools import lru_cache

__all__ = ["MIN_DF", "idf", "table_text"]

MIN_DF = 3


@lru_cache(maxsize=1)
def _table() -> tuple[dict[str, float], float]:
    from curator.cache.vocabulary_table import DOCUMENTS, TABLE

    df: dict[str, float] = {}
    for item in TABLE.split():
        word, _, count = item.rpartition(":")
        df[word] = math.log((DOCUMENTS + 1) / (int(count) + 1))
    # an unknown stem was seen fewer than MIN_DF times: about once
    return df, math.log((DOCUMENTS + 1) / 2)


def idf(stem: str) -> float:
    """Inverse document frequency of a stem (lexical.stem), >= 0."""
    table, unknown = _table()
    return table.get(stem, unknown)


def table_text(counts: dict[str, int], documents: int) -> str:
    """The source of vocabulary_table.py for these stem document counts."""
    kept = sorted((w, c) for w, c in counts.items() if c >= MIN_DF and ":" not in w)
    lines, line = [], ""
    for w, c in kept:
        item = f"{w}:{c} "
        if len(line) + len(item) > 88:
            lines.append(f'    "{line}"')
            line = ""
        line += item
    lines.append(f'    "{line.rstrip()}"')
    body = "\n".join(lines)
    header = (
        "Stem document frequencies of qqp-dev's train questions (vocabulary.py reads them),\n"
        "written by `python -m bench.train_verifier` (do not edit)."
    )
    return f'"""{header}"""\n\nDOCUMENTS = {documents}\nTABLE = (\n{body}\n)\n'
