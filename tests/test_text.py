"""Tests for ragpipe.text: English analysis, CJK bigrams, and the analyzer's stored config."""

from __future__ import annotations

import json

import pytest

from ragpipe.errors import RagpipeError
from ragpipe.retrievers.bm25 import BM25Index
from ragpipe.text import ENGLISH_STOPWORDS, Analyzer, AnalyzerConfig

# --- English -----------------------------------------------------------------------------------


def test_default_analyzer_lowercases_drops_stopwords_and_stems():
    analyzer = Analyzer()
    assert analyzer("The Running DOGS are NOT running quickly") == ["run", "dog", "run", "quick"]


def test_inflections_share_one_stem():
    analyzer = Analyzer()
    assert analyzer("connection connected connecting connects") == ["connect"] * 4


def test_repeated_terms_repeat_and_keep_order():
    assert Analyzer()("cells divide; cells die") == ["cell", "divid", "cell", "die"]


def test_punctuation_splits_and_digits_underscores_stay_in_words():
    assert Analyzer(AnalyzerConfig(stemmer=None))("covid_19 (2020): IL-6, TNF-α") == [
        "covid_19", "2020", "il", "6", "tnf", "α",
    ]


def test_every_listed_stopword_is_dropped():
    assert Analyzer()(" ".join(sorted(ENGLISH_STOPWORDS))) == []


def test_no_stopwords_and_no_stemmer_keep_every_word():
    analyzer = Analyzer(AnalyzerConfig(stopwords=None, stemmer=None))
    assert analyzer("The dogs are running") == ["the", "dogs", "are", "running"]


def test_without_lowercasing_case_is_kept_and_capitalised_stopwords_stay():
    # The stopword list is lower case, as Lucene's StopFilter without ignoreCase.
    analyzer = Analyzer(AnalyzerConfig(lowercase=False, stemmer=None))
    assert analyzer("The DOGS and the Cats") == ["The", "DOGS", "Cats"]


def test_empty_and_punctuation_only_text_has_no_terms():
    analyzer = Analyzer()
    assert analyzer("") == []
    assert analyzer("  -- !? ... \n\t") == []


# --- CJK ---------------------------------------------------------------------------------------

CHINESE = "我们在北京大学学习中文"  # "We study Chinese at Peking University"
JAPANESE = "東京都に住んでいます"  # "I live in Tokyo"


def test_chinese_sentence_becomes_characters_and_overlapping_bigrams():
    assert Analyzer()(CHINESE) == [
        "我", "们", "在", "北", "京", "大", "学", "学", "习", "中", "文",
        "我们", "们在", "在北", "北京", "京大", "大学", "学学", "学习", "习中", "中文",
    ]


@pytest.mark.parametrize(
    ("sentence", "word"),
    [(CHINESE, "北京"), (CHINESE, "大学"), (CHINESE, "中文"), (JAPANESE, "東京"), (JAPANESE, "住んで")],
)
def test_query_for_a_word_inside_an_unspaced_sentence_shares_its_terms(sentence, word):
    analyzer = Analyzer()
    query_terms = analyzer(word)
    sentence_terms = set(analyzer(sentence))
    assert query_terms, word
    assert set(query_terms) <= sentence_terms
    # the bigram, not only single characters, must match: it carries the word's precision
    assert word[:2] in query_terms and word[:2] in sentence_terms


def test_cjk_next_to_latin_is_split_at_the_script_boundary():
    assert Analyzer(AnalyzerConfig(stemmer=None))("iPhone販売") == ["iphone", "販", "売", "販売"]


def test_hangul_words_are_bigrammed_per_word():
    assert Analyzer()("한국어 문장") == ["한", "국", "어", "한국", "국어", "문", "장", "문장"]


def test_bm25_over_cjk_documents_ranks_the_document_holding_the_word_first():
    docs = [
        "我们在北京大学学习中文",  # 0: Peking University
        "上海是一个很大的城市",  # 1: Shanghai is a big city
        "北方的冬天很冷",  # 2: shares 北 but not 北京
        "東京都に住んでいます",  # 3: I live in Tokyo
        "京都の寺はとても古い",  # 4: Kyoto's temples; shares 京 and 京都 with doc 3
    ]
    index = BM25Index.build(docs)
    rows, scores = index.top_k("北京", 5)
    # 北京 matches doc 0 on the bigram and both characters; doc 2 on 北, docs 3 and 4 on 京 only.
    assert rows.tolist() == [0, 2, 3, 4]
    assert scores[0] > 2 * scores[1] and scores[1] > scores[2] == scores[3] > 0
    rows, scores = index.top_k("東京", 5)
    assert rows.tolist()[0] == 3 and scores[0] > 2 * scores[1]
    rows, _ = index.top_k("古い寺", 5)
    assert rows.tolist()[0] == 4


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        AnalyzerConfig(),
        AnalyzerConfig(lowercase=False, stopwords=None, stemmer=None),
        AnalyzerConfig(stemmer="porter"),
        AnalyzerConfig(stopwords=None, stemmer="german"),
    ],
)
def test_config_round_trip_through_json_rebuilds_the_same_analyzer(config):
    text = "The Häuser were RUNNING near 東京 and the connections"
    analyzer = Analyzer(config)
    stored = json.loads(json.dumps(analyzer.to_config()))
    rebuilt = Analyzer.from_config(stored)
    assert rebuilt.config == config
    assert rebuilt.to_config() == stored
    assert rebuilt(text) == analyzer(text)


def test_default_config_is_what_the_manifest_records():
    assert Analyzer().to_config() == {"lowercase": True, "stopwords": "english", "stemmer": "english"}


def test_unknown_stemmer_is_a_ragpipe_error_listing_the_available_ones():
    with pytest.raises(RagpipeError) as caught:
        Analyzer(AnalyzerConfig(stemmer="klingon"))
    message = str(caught.value)
    assert "unknown stemmer language 'klingon'" in message
    assert "english" in message and "german" in message


def test_unknown_stopword_list_is_a_ragpipe_error():
    with pytest.raises(RagpipeError, match=r"unknown stopword list 'french'; use 'english' or none"):
        Analyzer(AnalyzerConfig(stopwords="french"))

