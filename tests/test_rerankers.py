"""Second stage: spec parsing, rerank_run semantics, the cross-encoder (truncation, windows,
offline errors) and a tiny offline training run whose loss falls and whose ranking improves."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ragpipe.errors import ModelError, QueryError
from ragpipe.rerankers import parse_spec, rerank_run
from ragpipe.rerankers.cross_encoder import CrossEncoderReranker, train_cross_encoder
from ragpipe.training import TrainingExample


class WordOverlap:
    """A transparent scorer: how many query words a document contains (ranks are easy to check)."""

    name = "word-overlap"

    def score(self, query, documents):
        words = set(query.split())
        return np.array([len(words & set(d.split())) for d in documents], dtype=float)


DOCS = {"a": "red apple", "b": "green apple pie", "c": "blue sky", "d": "apple pie with red cream"}


def test_spec_parsing():
    spec = parse_spec("cross-encoder:models/ce,max_tokens=128,interpolation=0.3")
    assert spec.kind == "cross-encoder" and spec.model == "models/ce"
    assert spec.options == {"max_tokens": "128", "interpolation": "0.3"}
    assert parse_spec("llm").model is None
    with pytest.raises(QueryError, match="unknown reranker 'bm25'"):
        parse_spec("bm25")
    with pytest.raises(QueryError, match="key=value"):
        parse_spec("llm,layer")


def test_check_spec_takes_out_depth_and_interpolation_and_checks_backend_options():
    from ragpipe.rerankers.base import check_spec

    spec, weight, depth = check_spec("llm:models/head,depth=20,interpolation=0.3,layer=18")
    assert (spec.model, spec.options, weight, depth) == ("models/head", {"layer": "18"}, 0.3, 20)
    assert check_spec("cross-encoder:m")[1:] == (None, None)
    with pytest.raises(QueryError, match="depth='0' must be a whole number >= 1"):
        check_spec("llm,depth=0")
    with pytest.raises(QueryError, match="has no option 'max_token'"):
        check_spec("cross-encoder:m,max_token=64")
    with pytest.raises(QueryError, match="layer='twelve'"):
        check_spec("llm,layer=twelve")
    with pytest.raises(QueryError, match="'depth' is given twice"):
        check_spec("cross-encoder:m,depth=5,depth=6")


@pytest.mark.parametrize("value,expected", [("1", True), ("on", True), ("True", True), ("yes", True),
                                            ("0", False), ("off", False), ("FALSE", False), ("no", False)])
def test_yes_no_options_read_the_usual_spellings(value, expected):
    from ragpipe.rerankers.base import check_options
    from ragpipe.rerankers.llm import OPTIONS

    assert check_options(parse_spec(f"llm,share_prefix={value}"), OPTIONS) == {"share_prefix": expected}


def test_rerank_reorders_the_head_and_keeps_the_tail_below():
    run = {"q": {"c": 4.0, "b": 3.0, "a": 2.0, "d": 1.0}}
    out = rerank_run(run, {"q": "red apple pie"}, DOCS.__getitem__, WordOverlap(), depth=3).run["q"]
    # head c, b, a rescored: a=2, b=2, c=0 -> a, b (tie by doc id), c; tail d stays below
    assert [d for d, _ in sorted(out.items(), key=lambda kv: (-kv[1], kv[0]))] == ["a", "b", "c", "d"]
    assert out["d"] < min(out["a"], out["b"], out["c"])


def test_interpolation_zero_keeps_the_first_stage_order_and_one_follows_the_reranker():
    run = {"q": {"c": 4.0, "a": 3.0, "d": 2.0, "b": 1.0}}
    queries = {"q": "red apple pie"}
    keep = rerank_run(run, queries, DOCS.__getitem__, WordOverlap(), depth=4, interpolation=0.0).run["q"]
    assert sorted(keep, key=lambda d: -keep[d]) == ["c", "a", "d", "b"]
    follow = rerank_run(run, queries, DOCS.__getitem__, WordOverlap(), depth=4, interpolation=1.0).run["q"]
    assert sorted(follow, key=lambda d: -follow[d])[0] == "d"  # d holds all three query words
    with pytest.raises(QueryError, match="interpolation"):
        rerank_run(run, queries, DOCS.__getitem__, WordOverlap(), interpolation=1.5)
    with pytest.raises(QueryError, match="depth"):
        rerank_run(run, queries, DOCS.__getitem__, WordOverlap(), depth=0)


def test_a_specs_depth_and_weight_are_rerank_runs_defaults(encoder):
    from ragpipe.rerankers import load_reranker

    reranker = load_reranker(f"cross-encoder:{encoder.folder},max_tokens=64,interpolation=0,depth=2")
    assert (reranker.interpolation, reranker.depth, reranker.max_tokens) == (0.0, 2, 64)
    run = {"q": {"c": 4.0, "a": 3.0, "d": 2.0, "b": 1.0}}
    result = rerank_run(run, {"q": "red apple pie"}, DOCS.__getitem__, reranker)
    # w = 0 on a head of 2: the first stage's minmax scores, then the tail one step apart below
    assert result.run["q"] == {"c": 1.0, "a": 0.0, "d": -1.0, "b": -2.0}
    explicit = rerank_run(run, {"q": "red apple pie"}, DOCS.__getitem__, reranker, depth=4, interpolation=1.0)
    assert len(explicit.run["q"]) == 4 and min(explicit.run["q"].values()) == 0.0  # all four mixed, none below

    class Counting(WordOverlap):
        depth = 3
        scored: list[int] = []

        def score(self, query, documents):
            self.scored.append(len(documents))
            return super().score(query, documents)

    counting = Counting()
    rerank_run(run, {"q": "red apple pie"}, DOCS.__getitem__, counting)
    assert counting.scored == [3]  # the reranker's depth, not the default 50


@pytest.fixture(scope="module")
def untrained(encoder):
    """The bundled MiniLM weights read as a cross-encoder: a real model with an untrained head."""
    return CrossEncoderReranker(str(encoder.folder), max_tokens=64, max_passages=50, overlap=8)


def test_long_pairs_drop_document_tokens_never_query_tokens(untrained):
    query = "does vitamin d reduce fracture risk in older adults"
    document = "background " * 500
    pairs, owners = untrained._pairs(query, [document])
    query_ids = untrained.tokenizer(query, add_special_tokens=False)["input_ids"]
    assert len(pairs) > 5 and set(owners) == {0}  # a long document becomes several windows
    for ids, types in pairs:
        assert len(ids) <= 64 and len(types) == len(ids)
        assert ids[1 : 1 + len(query_ids)] == query_ids  # [CLS] query ... intact in every window


def test_long_document_scores_as_its_best_window(untrained):
    import torch

    from ragpipe.rerankers.cross_encoder import _collate, _relevance

    query = "glacier ice flows downhill"
    filler = "unrelated words about cooking and recipes " * 30
    buried = filler + " glacier ice flows downhill carving valleys " + filler
    scores = untrained.score(query, [buried, "short text"])
    pairs, owners = untrained._pairs(query, [buried, "short text"])
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=untrained.precision == "bf16"):
        each = [float(_relevance(untrained.model(**_collate([p], untrained.tokenizer)).logits.float())[0]) for p in pairs]
    windows = [s for s, owner in zip(each, owners) if owner == 0]
    assert len(windows) > 3
    assert scores[0] == pytest.approx(max(windows), abs=2e-2)  # batching in bf16 moves the last digits
    assert scores[1] == pytest.approx(each[owners.index(1)], abs=2e-2)


def test_missing_cross_encoder_offline_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from ragpipe.models import resolve_model

    resolve_model.cache_clear()
    with pytest.raises(ModelError, match="train-reranker"):
        CrossEncoderReranker("cross-encoder/ms-marco-MiniLM-L-6-v2")
    with pytest.raises(ModelError, match="does not exist"):
        CrossEncoderReranker(str(tmp_path / "nope"))
    with pytest.raises(QueryError, match="no option 'bogus'"):
        from ragpipe.rerankers import load_reranker

        load_reranker("cross-encoder:x,bogus=3")


def _scifact_examples(data_dir, count: int, offset: int):
    """Real SciFact training claims with negatives taken from other claims' relevant abstracts."""
    import json

    from ragpipe.trec import read_qrels

    qrels = read_qrels(data_dir / "scifact" / "qrels" / "train.tsv")
    queries = {}
    with open(data_dir / "scifact" / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            queries[row["_id"]] = row["text"]
    corpus = {}
    with open(data_dir / "scifact" / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            corpus[row["_id"]] = f"{row['title']}\n{row['text']}"
    qids = sorted(qrels, key=int)[offset : offset + count]
    pool = [corpus[d] for q in sorted(qrels, key=int)[:400] for d in qrels[q]]
    rng = np.random.default_rng(offset)
    examples = []
    for qid in qids:
        positives = [corpus[d] for d in qrels[qid] if d in corpus]
        negatives = [pool[i] for i in rng.choice(len(pool), 3, replace=False) if pool[i] not in positives]
        examples.append(TrainingExample(qid, queries[qid], positives[:1], negatives))
    return examples


@pytest.mark.slow
def test_tiny_training_lowers_the_loss_and_improves_held_out_ranking(data_dir, tmp_path):
    train = _scifact_examples(data_dir, 48, offset=0)
    held_out = _scifact_examples(data_dir, 24, offset=300)
    record = train_cross_encoder(train, tmp_path / "ce", epochs=3, group_size=4, groups_per_step=4,
                                 learning_rate=1e-4, max_tokens=96, held_out=held_out, progress=False)
    assert record["loss"][-1] < record["loss"][0]
    assert record["held_out_top1"][-1] > record["held_out_top1"][0]
    trained = CrossEncoderReranker(str(tmp_path / "ce"), max_tokens=96)
    example = held_out[0]
    assert trained.score(example.query, [*example.positives, *example.negatives]).shape == (1 + len(example.negatives),)


def test_held_out_split_keeps_queries_that_share_a_relevant_document_together():
    from ragpipe.training import split_examples

    # Claims 0-9 each cite their own abstract; claims 10-29 come in pairs (a claim and its
    # negation) citing one abstract each.
    examples = [TrainingExample(f"q{i}", f"claim {i}", [f"abstract {i if i < 10 else 10 + (i - 10) // 2}"], ["x"])
                for i in range(30)]
    for seed in range(20):
        train, held = split_examples(examples, 0.2, seed=seed)
        assert len(train) + len(held) == 30 and held and train
        held_docs = {p for e in held for p in e.positives}
        assert not held_docs & {p for e in train for p in e.positives}


def test_the_window_scored_is_the_one_holding_the_query_terms(untrained):
    from ragpipe.rerankers.cross_encoder import pair_inputs

    query = "glacier ice flows downhill"
    filler = "unrelated words about cooking and recipes " * 30
    document = filler + " glacier ice flows downhill carving valleys " + filler
    every, _ = untrained._pairs(query, [document])
    chosen, owners = pair_inputs(untrained.tokenizer, untrained.template, query, [document, "short text"],
                                 untrained.max_tokens, 1, untrained.overlap)
    assert owners == [0, 1] and len(every) > 3
    query_ids = untrained.tokenizer(query, add_special_tokens=False)["input_ids"]
    start = len(untrained.template.prefix) + len(query_ids) + len(untrained.template.middle)
    assert "glacier ice flows downhill" in untrained.tokenizer.decode(chosen[0][0][start:])
    assert chosen[0] in every and chosen[0] != every[0]  # one of the windows, not simply the first


def test_a_group_larger_than_the_held_out_share_stays_in_training():
    from ragpipe.training import split_examples

    # 40 claims all citing one abstract (one group), and 10 claims with an abstract each.
    examples = [TrainingExample(f"big{i}", f"claim {i}", ["shared abstract"], ["x"]) for i in range(40)]
    examples += [TrainingExample(f"own{i}", f"claim {i}", [f"abstract {i}"], ["x"]) for i in range(10)]
    for seed in range(10):
        train, held = split_examples(examples, 0.1, seed=seed)
        assert 1 <= len(held) <= 5 and all(e.qid.startswith("own") for e in held)
        assert len(train) + len(held) == 50


def test_training_refuses_a_folder_it_did_not_write_before_training(tmp_path):
    precious = tmp_path / "my-index"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    example = TrainingExample("q", "query", ["positive"], ["negative"])
    from ragpipe.errors import RagpipeError

    with pytest.raises(RagpipeError, match="is not a folder ragpipe wrote"):
        train_cross_encoder([example], precious, epochs=1, progress=False)
    assert (precious / "notes.txt").read_text() == "keep me"
    with pytest.raises(QueryError, match="max_tokens >= 32"):
        train_cross_encoder([example], tmp_path / "new", max_tokens=8, progress=False)
    assert not (tmp_path / "new").exists()


def test_pseudo_queries_skip_excluded_documents(tmp_path, small_corpus):
    from ragpipe.index import Index, IndexConfig
    from ragpipe.training import pseudo_query_examples

    index = Index.build(small_corpus, tmp_path / "i", IndexConfig(dense=None))
    everything = pseudo_query_examples(index, negatives=2)
    assert {e.qid for e in everything} == {f"title:{d.doc_id}" for d in small_corpus if d.title}
    kept = pseudo_query_examples(index, negatives=2, exclude={"d01", "d04"})
    assert {e.qid for e in kept} == {e.qid for e in everything} - {"title:d01", "title:d04"}


@pytest.mark.parametrize("options, message", [
    (["--negatives", "0"], "--negatives must be >= 1"),
    (["--held-out", "1"], "--held-out is the share"),
    (["--max-tokens", "8"], "--max-tokens must be >= 32"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--pooling", "mean"], "--pooling applies to --kind llm-head only"),
    (["--layer", "12"], "--layer applies to --kind llm-head only"),
    (["--max-queries", "1"], "--max-queries must be >= 2"),
    (["--kind", "llm-head", "--pooling", "max"], "--pooling must be one of mean, last, got 'max'"),
])
def test_train_reranker_refuses_bad_options_in_one_line_before_any_work(tmp_path, options, message):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "ragpipe", "train-reranker", str(tmp_path / "no-such-dataset"),
                           "--out", str(tmp_path / "out"), *options], capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr
    assert not (tmp_path / "out").exists()


def test_train_reranker_keeps_a_trained_reranker_unless_told_to_overwrite(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "ce"
    out.mkdir()
    (out / "reranker.json").write_text('{"kind": "cross-encoder"}')
    done = subprocess.run([sys.executable, "-m", "ragpipe", "train-reranker", str(tmp_path / "no-such-dataset"),
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "pass --overwrite" in lines[0], done.stderr
    assert (out / "reranker.json").read_text() == '{"kind": "cross-encoder"}'
    done = subprocess.run([sys.executable, "-m", "ragpipe", "train-reranker", str(tmp_path / "no-such-dataset"),
                           "--out", str(out), "--overwrite"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no-such-dataset" in done.stderr and "--overwrite" not in done.stderr


def test_a_weight_no_gain_supports_is_zero(tmp_path, small_corpus):
    """Every weight ties when the reranker cannot change the order; the fit then keeps the first stage."""
    from ragpipe.index import Index, IndexConfig, SearchOptions
    from ragpipe.training import fit_interpolation
    from ragpipe.types import document_text

    class Constant:
        name = "constant"

        def score(self, query, documents):
            return np.ones(len(documents))

    class Favours(Constant):
        """Puts d02 first whatever the query."""

        def __init__(self, documents):
            self.d02 = documents

        def score(self, query, documents):
            return np.array([1.0 if d == self.d02 else 0.0 for d in documents])

    index = Index.build(small_corpus, tmp_path / "i", IndexConfig(dense=None))
    queries = {"q1": "solar photovoltaic cells convert sunlight, wind"}
    bm25 = SearchOptions(mode="bm25")
    weight, curve = fit_interpolation(index, queries, {"q1": {"d01": 1}}, Constant(), depth=5, first_stage=bm25)
    assert len(set(curve.values())) == 1 and weight == 0.0
    # d02 (wind) relevant: every weight that lifts it to the top scores the same best nDCG; the smallest wins
    wind = next(d for d in small_corpus if d.doc_id == "d02")
    weight, curve = fit_interpolation(index, queries, {"q1": {"d02": 1}}, Favours(document_text(wind)), depth=5,
                                      first_stage=bm25)
    best = max(curve.values())
    assert best == 1.0 and curve[0.0] < best and sum(v == best for v in curve.values()) > 1
    assert weight == min(w for w, v in curve.items() if v == best) > 0.0


def test_a_folder_of_the_other_kind_names_the_spec_to_use(tmp_path):
    import json

    from ragpipe.errors import ModelError
    from ragpipe.rerankers.cross_encoder import CrossEncoderReranker
    from ragpipe.rerankers.llm import resolve_llm

    head = tmp_path / "head"
    head.mkdir()
    (head / "reranker.json").write_text(json.dumps({"kind": "llm-head"}))
    with pytest.raises(ModelError, match=re.escape(f"not a cross-encoder; use llm:{head}")):
        CrossEncoderReranker(str(head))
    ce = tmp_path / "ce"
    ce.mkdir()
    (ce / "reranker.json").write_text(json.dumps({"kind": "cross-encoder"}))
    with pytest.raises(ModelError, match=re.escape(f"not an LLM head; use cross-encoder:{ce}")):
        resolve_llm(str(ce))
    (ce / "reranker.json").write_text(json.dumps({"kind": "forest"}))
    with pytest.raises(ModelError, match="names no known reranker kind .'forest'.*retrain"):
        CrossEncoderReranker(str(ce))


def test_scores_match_sentence_transformers_cross_encoder_where_nothing_is_cut(encoder, tmp_path):
    """Parity with sentence-transformers' CrossEncoder.predict: on pairs that fit, our own tokenisation and
    batching give sentence-transformers' CrossEncoder logits. (We score with transformers directly
    to cut only document tokens and to score a long document by its best window; see the module.)"""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path / "ce"
    torch.manual_seed(0)  # the new head is random: seeded, the spread checked below is reproducible
    AutoModelForSequenceClassification.from_pretrained(str(encoder.folder), num_labels=1).save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(encoder.folder)).save_pretrained(str(folder))
    query = "statins lower the risk of heart attacks"
    documents = ["Statin therapy reduced myocardial infarction by a third in a large randomised trial.",
                 "Glaciers carve valleys as they flow downhill.",
                 "Cholesterol lowering drugs and cardiovascular outcomes in older adults: a cohort study of 9,000 people."]
    ours = CrossEncoderReranker(str(folder), max_tokens=128, precision="fp32").score(query, documents)
    reference = CrossEncoder(str(folder), device="cpu", max_length=128).predict(
        [(query, d) for d in documents], activation_fn=torch.nn.Identity())
    assert np.allclose(ours, reference, atol=1e-4), (ours, reference)
    assert np.ptp(reference) > 1e-3  # the seeded head does tell the documents apart
