"""Text analysis for lexical (BM25) retrieval.

The default analyzer lowercases, splits on Unicode word characters, drops English stopwords and
applies the Snowball English stemmer: on SciFact that scores higher than unstemmed BM25 (see the
README's table). Scripts written without spaces (Chinese, Japanese, Korean) are split into
overlapping character bigrams plus single characters, as Lucene's CJK analyzer does, so a query
for a word inside a sentence still matches.

An :class:`Analyzer` is fully described by :meth:`Analyzer.config`, which the index manifest stores;
loading an index rebuilds the same analyzer from it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from ragpipe.errors import MissingDependencyError, RagpipeError

# Lucene's EnglishAnalyzer stopword set, the one Anserini's BM25 baselines use: short, so content
# words survive; stemmed BM25 with it reaches 0.686 nDCG@10 on SciFact (README).
ENGLISH_STOPWORDS = frozenset(
    """a an and are as at be but by for if in into is it no not of on or such that the their then
    there these they this to was will with""".split()
)

# Hiragana, Katakana, CJK ideographs (with extension A and compatibility block) and Hangul syllables.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN_RE = re.compile(rf"[{_CJK}]+|[^\W{_CJK}]+")
_CJK_RE = re.compile(rf"[{_CJK}]")


@dataclass(frozen=True)
class AnalyzerConfig:
    lowercase: bool = True
    stopwords: str | None = "english"
    stemmer: str | None = "english"


class Analyzer:
    """Turns text into BM25 terms. Thread-safe after construction except for the stemmer cache."""

    def __init__(self, config: AnalyzerConfig | None = None):
        self.config = config or AnalyzerConfig()
        if self.config.stopwords not in (None, "english"):
            raise RagpipeError(
                f"unknown stopword list {self.config.stopwords!r}; use 'english' or none"
            )
        self._stopwords = ENGLISH_STOPWORDS if self.config.stopwords == "english" else frozenset()
        self._stem = None
        if self.config.stemmer is not None:
            try:
                import Stemmer
            except ImportError as exc:  # pragma: no cover - PyStemmer is a core dependency
                raise MissingDependencyError(
                    "stemming needs PyStemmer: pip install PyStemmer"
                ) from exc
            try:
                self._stem = Stemmer.Stemmer(self.config.stemmer).stemWords
            except KeyError as exc:
                raise RagpipeError(
                    f"unknown stemmer language {self.config.stemmer!r}; "
                    f"available: {', '.join(Stemmer.algorithms())}"
                ) from exc

    @classmethod
    def from_config(cls, config: dict) -> Analyzer:
        return cls(AnalyzerConfig(**config))

    def to_config(self) -> dict:
        return asdict(self.config)

    def __call__(self, text: str) -> list[str]:
        """Return the terms of ``text`` in order; repeated terms repeat."""
        if self.config.lowercase:
            text = text.lower()
        tokens: list[str] = []
        for match in _TOKEN_RE.finditer(text):
            token = match.group()
            if _CJK_RE.match(token):
                tokens.extend(_cjk_terms(token))
            elif token not in self._stopwords:
                tokens.append(token)
        if self._stem is not None and tokens:
            tokens = self._stem(tokens)
        return tokens


def _cjk_terms(run: str) -> list[str]:
    """Single characters and overlapping bigrams of a run of CJK characters.

    Bigrams carry most of the precision for words of two or more characters; unigrams let a
    one-character query match at all.
    """
    return list(run) + [run[i : i + 2] for i in range(len(run) - 1)]
