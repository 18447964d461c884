"""Texts two tasks share: the near-duplicate index that keeps evaluation texts out of sources, and the overlap card.

Three levels of "the same text", each catching what the one before misses:

* ``exact``: the normalised form (``tasks.normalised``: whitespace collapsed, case folded), as the loader removes
  leaks between a task's own splits;
* ``letters``: ``letters_and_digits``, the text reduced to lower-case ASCII letters and digits after HTML entities
  are decoded, accents stripped and Penn Treebank bracket tokens (``-lrb-``) dropped: tokenisation variants of one
  sentence (``moore 's`` / ``moore's``, ``does n't`` / ``doesn't``, ``&amp;`` / ``&``) meet here. SST-2 and MR come
  from the same Rotten Tomatoes corpus tokenised differently: a quarter of SST-2's test texts are MR training texts
  in this form and not in the normalised one;
* ``near``: near-duplicates, found with MinHash LSH (``datasketch``) over character 5-grams of the letters-and-digits
  form and confirmed by their exact Jaccard similarity of at least ``NEAR_DUPLICATE_JACCARD`` (0.8, the threshold
  Lee et al. 2022, "Deduplicating Training Data Makes Language Models Better", use for near-duplicate documents):
  a word changed or added in a long sentence.

``EvaluationIndex`` holds a study's evaluation texts; ``Task.without_matches`` drops every source example that
matches one at any level (``study.load_study_tasks``), never an example of the target's own evaluation splits.
"""
from __future__ import annotations

import html
import itertools
import re
import unicodedata

import numpy as np
import pandas as pd

from fusionkit.data.tasks import Task, normalised

NEAR_DUPLICATE_JACCARD = 0.8
SHINGLE = 5  # characters of the letters-and-digits form per shingle
NUM_PERM = 128  # MinHash permutations: the LSH's estimate of the Jaccard similarity has a standard error ~0.04
LEVELS = ("exact", "letters", "near")
_BRACKETS = re.compile(r"-[lr][rsc]b-")  # Penn Treebank's -lrb- -rrb- -lsb- -rsb- -lcb- -rcb-
_NOT_LETTER_OR_DIGIT = re.compile(r"[^a-z0-9]")


def letters_and_digits(text: str) -> str:
    """The text as lower-case ASCII letters and digits only: HTML entities decoded, accents stripped, Treebank
    brackets dropped, everything else (spaces, punctuation, apostrophes) removed."""
    text = _BRACKETS.sub(" ", html.unescape(text).casefold())
    text = unicodedata.normalize("NFKD", text)
    return _NOT_LETTER_OR_DIGIT.sub("", text)


def shingles(key: str) -> set[str]:
    """The character ``SHINGLE``-grams of a letters-and-digits form (the whole form when it is shorter)."""
    return {key[i:i + SHINGLE] for i in range(max(1, len(key) - SHINGLE + 1))}


def jaccard(first: set, second: set) -> float:
    return len(first & second) / len(first | second) if first or second else 1.0


class Prepared:
    """Texts in the forms every level compares (normalised, letters and digits, MinHash signatures), computed once
    for all the indexes they are matched against (``overlap_card`` matches each split against every other)."""

    def __init__(self, texts):
        self.texts = list(texts)
        self.exact = [normalised(text) for text in self.texts]
        self.keys = [letters_and_digits(text) for text in self.texts]
        self._signatures: dict[str, object] = {}

    def signatures(self, keys: list[str]) -> list:
        missing = [key for key in dict.fromkeys(keys) if key not in self._signatures]
        self._signatures.update(zip(missing, _signatures(missing)))
        return [self._signatures[key] for key in keys]


def _signatures(keys: list[str]) -> list:
    from datasketch import LeanMinHash, MinHash

    if not keys:
        return []
    return [LeanMinHash(m) for m in MinHash.bulk([[s.encode() for s in shingles(k)] for k in keys],
                                                 num_perm=NUM_PERM, seed=1)]


class EvaluationIndex:
    """The texts no source may hold (a study's evaluation texts), to test other texts against at every level.

    ``match(texts)`` gives, per text, the first level at which it matches an indexed text ("exact", "letters",
    "near") or "" for none. A text without a letter or digit matches only exactly."""

    def __init__(self, texts):
        from datasketch import MinHashLSH

        prepared = texts if isinstance(texts, Prepared) else Prepared(texts)
        self.exact = set(prepared.exact)
        self.letters = set(prepared.keys) - {""}
        keys = sorted(self.letters)
        self._shingles = {key: shingles(key) for key in keys}
        self._lsh = MinHashLSH(threshold=NEAR_DUPLICATE_JACCARD, num_perm=NUM_PERM)
        with self._lsh.insertion_session() as session:
            for key, signature in zip(keys, prepared.signatures(keys)):
                session.insert(key, signature)

    def match(self, texts) -> np.ndarray:
        prepared = texts if isinstance(texts, Prepared) else Prepared(texts)
        levels = np.full(len(prepared.texts), "", dtype=object)
        unresolved = []
        for i, (exact, key) in enumerate(zip(prepared.exact, prepared.keys)):
            if exact in self.exact:
                levels[i] = "exact"
            elif key in self.letters:
                levels[i] = "letters"
            elif key:
                unresolved.append(i)
        keys = [prepared.keys[i] for i in unresolved]
        for i, key, signature in zip(unresolved, keys, prepared.signatures(keys)):
            own = shingles(key)
            if any(jaccard(own, self._shingles[candidate]) >= NEAR_DUPLICATE_JACCARD
                   for candidate in self._lsh.query(signature)):
                levels[i] = "near"
        return levels


COLUMNS = ["task", "split", "other_task", "other_split", "shared_texts", "share_of_split", "shared_letters",
           "shared_near"]


def overlap_card(tasks: list[Task]) -> pd.DataFrame:
    """One row per (task, split) and (other task, other split) of two different tasks: how many of the first
    split's distinct texts the other split also holds, at each level (``shared_texts``: the same normalised text;
    ``shared_letters``: that or a tokenisation variant; ``shared_near``: any of these or a near-duplicate), and the
    first count's share of the split's distinct texts. Every ordered pair of tasks appears, so each row reads as
    "this many of <task>'s <split> texts are also in <other task>'s <split>"."""
    prepared = {(task.name, split): Prepared(dict.fromkeys(data["text"][:]))
                for task in tasks for split, data in task.splits.items()}
    indexes = {where: EvaluationIndex(texts) for where, texts in prepared.items()}
    rows = []
    for first, second in itertools.permutations([task.name for task in tasks], 2):
        for (name, split), texts in prepared.items():
            if name != first:
                continue
            distinct = len(set(texts.exact))
            for (other, other_split), index in indexes.items():
                if other != second:
                    continue
                levels = index.match(texts)
                exact = len({text for text, level in zip(texts.exact, levels) if level == "exact"})
                rows.append({"task": first, "split": split, "other_task": second, "other_split": other_split,
                             "shared_texts": exact, "share_of_split": exact / distinct if distinct else 0.0,
                             "shared_letters": int(np.isin(levels, ["exact", "letters"]).sum()),
                             "shared_near": int((levels != "").sum())})
    return pd.DataFrame(rows, columns=COLUMNS)
