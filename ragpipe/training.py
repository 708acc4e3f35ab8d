"""Training data for rerankers: judged queries with hard negatives mined from the first stage.

Only the judgments of the requested split are read (``train`` for SciFact); test judgments never
are. Without judgments, :func:`pseudo_query_examples` uses each document's title as a query for its
own body ("label-free" mode), so a reranker can be adapted to a corpus that has no qrels.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ragpipe.errors import DatasetError, QueryError, RagpipeError
from ragpipe.index import Index, SearchOptions
from ragpipe.types import document_text

MIN_HELD_OUT = 20  # held-out queries below which a fitted interpolation weight is flagged as a rough guess


def _queries(count: int) -> str:
    return f"{count} query" if count == 1 else f"{count} queries"


@dataclass
class TrainingExample:
    """One query with documents judged relevant and hard negatives (texts, not ids)."""

    qid: str
    query: str
    positives: list[str]
    negatives: list[str]


def judged_examples(
    index: Index,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    negatives: int = 7,
    mining_depth: int = 30,
    first_stage: SearchOptions = SearchOptions(mode="hybrid", fusion="weighted"),
    seed: int = 13,
) -> list[TrainingExample]:
    """Examples for judged queries: every relevant document, and ``negatives`` documents drawn
    from the first stage's top ``mining_depth`` that are not judged relevant (hard negatives).

    Raises:
        DatasetError: no judged query has a relevant document present in the index.
    """
    rng = random.Random(seed)
    docs = {d.doc_id: d for d in index.documents()}
    judged = {qid: queries[qid] for qid in qrels if qid in queries}
    run = index.search(judged, k=mining_depth, options=first_stage).run
    examples = []
    for qid, text in judged.items():
        relevant = [d for d, grade in qrels[qid].items() if grade > 0 and d in docs]
        if not relevant:
            continue
        pool = [d for d in run[qid] if qrels[qid].get(d, 0) <= 0]
        chosen = rng.sample(pool, min(negatives, len(pool)))
        examples.append(TrainingExample(qid, text, [document_text(docs[d]) for d in relevant],
                                        [document_text(docs[d]) for d in chosen]))
    if not examples:
        raise DatasetError("no judged query has a relevant document in the index; check the split and the corpus")
    return examples


def pseudo_query_examples(
    index: Index,
    negatives: int = 7,
    mining_depth: int = 30,
    limit: int | None = None,
    seed: int = 13,
    exclude: frozenset[str] | set[str] = frozenset(),
) -> list[TrainingExample]:
    """Label-free examples: a document's title is the query, its body the positive, and other
    documents the first stage ranks high for that title are the negatives. Documents without a
    title or body, and those in ``exclude`` (e.g. documents relevant to held-out queries), are
    skipped.

    Raises:
        DatasetError: no document has both a title and a body.
    """
    rng = random.Random(seed)
    everything = index.documents()
    by_id = {d.doc_id: d for d in everything}
    documents = [d for d in everything if d.title.strip() and d.text.strip() and d.doc_id not in exclude]
    rng.shuffle(documents)
    if limit is not None:
        documents = documents[:limit]
    if not documents:
        raise DatasetError("label-free training needs documents with both a title and a body")
    queries = {f"title:{d.doc_id}": d.title for d in documents}
    run = index.search(queries, k=mining_depth + 1, options=SearchOptions(mode="bm25")).run
    examples = []
    for doc in documents:
        qid = f"title:{doc.doc_id}"
        pool = [d for d in run[qid] if d != doc.doc_id]
        chosen = rng.sample(pool, min(negatives, len(pool)))
        # The body alone is the positive: with its title it would contain the query verbatim.
        examples.append(TrainingExample(qid, doc.title, [doc.text], [by_id[d].text for d in chosen]))
    return examples


def split_examples(examples: Sequence[TrainingExample], held_out: float = 0.1, seed: int = 13):
    """(train, held-out) partitions for measuring a model on queries it never saw.

    Queries that share a relevant document stay on the same side: SciFact, for one, has claims
    and their negations citing the same abstract, and a held-out claim whose twin was trained on
    measures memory, not generalisation (a random split by query overstated the held-out gain of
    a SciFact cross-encoder several times over). Groups of such queries, in a seeded random
    order, go to the held-out side while they fit in ``held_out`` of all queries (at least one
    query); a group larger than that stays in training, and if no group fits the smallest one is
    held out. Only when every query is in one group does the split fall back to one by query
    (and says so on stderr, since the held-out figures then overstate).
    """
    parent = list(range(len(examples)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, example in enumerate(examples):
        for positive in example.positives:
            if positive in owner:
                parent[root(i)] = root(owner[positive])
            else:
                owner[positive] = i
    groups: dict[int, list[TrainingExample]] = {}
    for i, example in enumerate(examples):
        groups.setdefault(root(i), []).append(example)
    components = list(groups.values())
    random.Random(seed).shuffle(components)
    want = max(1, int(len(examples) * held_out))
    if len(components) == 1:
        sys.stderr.write("every training query shares a relevant document with another: held-out queries are "
                         "split by query, so held-out figures overstate\n")
        shuffled = list(examples)
        random.Random(seed).shuffle(shuffled)
        return shuffled[want:], shuffled[:want]
    held: list[TrainingExample] = []
    train: list[TrainingExample] = []
    for component in components:
        (held if len(held) + len(component) <= want else train).extend(component)
    if not held:
        smallest = min(components, key=len)
        held = list(smallest)
        train = [e for c in components if c is not smallest for e in c]
    return train, held


def fit_interpolation(
    index: Index,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    reranker,
    depth: int,
    first_stage: SearchOptions = SearchOptions(mode="hybrid", fusion="weighted"),
    grid: Sequence[float] = tuple(i / 10 for i in range(11)),
    metric: str = "ndcg@10",
) -> tuple[float, dict[float, float]]:
    """The weight w of the second stage (``rerank_run``'s ``interpolation``) that maximises
    ``metric`` on the given (training or held-out) queries, and the score of every w tried.

    The reranker scores each query's candidates once; every weight reuses those scores. Among
    weights that score the same, the smallest wins: the reranker gets only the weight a strict gain
    on these queries supports (a reranker that never helps gets 0, the first stage's order).
    """
    from ragpipe.metrics import evaluate
    from ragpipe.rerankers.base import ScoreCache, rerank_run

    first = index.search(queries, k=max(depth, 100), options=first_stage).run
    docs = index.documents_by_id(sorted({d for scores in first.values() for d in scores}))
    cached = ScoreCache(reranker)  # the first weight scores each candidate once, the others replay
    results = {}
    for weight in grid:
        run = rerank_run(first, queries, lambda doc_id: document_text(docs[doc_id]), cached, depth=depth,
                         interpolation=weight).run
        results[weight] = evaluate(qrels, run, [metric]).mean[metric]
    best = max(results, key=lambda w: (results[w], -w))
    return best, results


def train_reranker_command(
    dataset: str,
    out: str | Path,
    kind: str = "cross-encoder",
    split: str = "train",
    label_free: bool = False,
    base_model: str | None = None,
    epochs: int = 2,
    negatives: int = 7,
    layer: int | None = None,
    pooling: str | None = None,
    max_queries: int | None = None,
    rerank_depth: int = 50,
    index_dir: str | Path | None = None,
    held_out: float = 0.1,
    pseudo_queries: int = 0,
    pseudo_negatives: int = 3,
    max_tokens: int | None = None,
    overwrite: bool = False,
) -> str:
    """What ``ragpipe train-reranker`` does: mine examples, train, fit the interpolation weight on
    held-out training queries, save everything to ``out``; returns a one-paragraph summary.

    ``pseudo_queries`` > 0 adds that many label-free examples (a title as the query for its own
    body, ``pseudo_negatives`` mined negatives each) to the judged training queries: more, and
    more varied, in-domain pairs than the judgments alone hold. They are never held out, and
    no document relevant to a held-out query lends its title: the interpolation weight is
    fitted on judged queries the model has not seen in any form. A reranker already in ``out`` is
    replaced only with ``overwrite``.

    Raises:
        QueryError: an option out of range (checked before any work): epochs, negatives,
            rerank_depth below 1, max_queries below 2, held_out outside (0, 1), pseudo_queries below 0
            or given with label_free, max_tokens below 32, a pooling other than last / mean, or a
            pooling or layer given for a cross-encoder.
        RagpipeError: an unknown kind, ``out`` an existing folder that is not a reranker folder
            (or is one, without ``overwrite``), a dataset without the split's judgments, fewer
            than 2 usable queries, or a model that cannot be loaded.
    """
    from ragpipe._files import check_replaceable
    from ragpipe.datasets import load_dataset, resolve_dataset
    from ragpipe.evaluation import open_or_build_index
    from ragpipe.index import IndexConfig
    from ragpipe.rerankers.base import CONFIG_FILE, KIND_NAMES, SPEC_PREFIX, update_settings

    if kind not in ("cross-encoder", "llm-head"):
        raise QueryError(f"unknown reranker kind {kind!r}; use cross-encoder or llm-head")
    for option, value in (("--epochs", epochs), ("--negatives", negatives), ("--rerank-depth", rerank_depth)):
        if value < 1:
            raise QueryError(f"{option} must be >= 1, got {value}")
    if not 0.0 < held_out < 1.0:
        raise QueryError(f"--held-out is the share of judged queries held out and must be within (0, 1), got {held_out}")
    if pseudo_queries < 0:
        raise QueryError(f"--pseudo-queries must be >= 0, got {pseudo_queries}")
    if pseudo_queries and label_free:
        raise QueryError("--pseudo-queries adds titles to judged training; with --label-free every query is a title "
                         "already (use --max-queries to choose how many)")
    if max_queries is not None and max_queries < 2:
        raise QueryError(f"--max-queries must be >= 2 (one to train on, one to hold out), got {max_queries}")
    if max_tokens is not None and max_tokens < 32:
        raise QueryError(f"--max-tokens must be >= 32, got {max_tokens}")
    for option, value in (("--pooling", pooling), ("--layer", layer)):
        if value is not None and kind != "llm-head":
            raise QueryError(f"{option} applies to --kind llm-head only")
    if pooling is not None:
        from ragpipe.rerankers.llm import POOLINGS

        if pooling not in POOLINGS:
            raise QueryError(f"--pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    check_replaceable(Path(out), CONFIG_FILE)
    if (Path(out) / CONFIG_FILE).is_file() and not overwrite:
        raise RagpipeError(f"{out} already holds a trained reranker; pass --overwrite to replace it, or another --out")
    if label_free:
        from ragpipe.datasets import Dataset

        path = resolve_dataset(dataset)
        data = Dataset(name=path.name, path=path, split="label-free", queries={}, qrels={})
    else:
        data = load_dataset(dataset, split)
    index, _ = open_or_build_index(data, Path(index_dir) if index_dir else None, IndexConfig(), True, False, True)
    if label_free:
        examples = pseudo_query_examples(index, negatives=negatives, limit=max_queries)
    else:
        queries = dict(list(data.queries.items())[:max_queries]) if max_queries else data.queries
        examples = judged_examples(index, queries, data.qrels, negatives=negatives)
    if len(examples) < 2:
        raise RagpipeError(f"{_queries(len(examples))} usable for training (a relevant document in the index and a "
                           "hard negative): at least 2 are needed, one to train on and one to hold out")
    train, held = split_examples(examples, held_out)
    if pseudo_queries > 0 and not label_free:
        held_documents = {d for e in held for d, grade in data.qrels[e.qid].items() if grade > 0}
        train = train + pseudo_query_examples(index, negatives=pseudo_negatives, limit=pseudo_queries,
                                              exclude=held_documents)
        random.Random(13).shuffle(train)
    pseudo = sum(e.qid.startswith("title:") for e in train)
    titles = "all of them titles as pseudo-queries" if label_free else f"{pseudo} of them titles as pseudo-queries"
    sys.stderr.write(f"training {KIND_NAMES[kind]} on {len(train)} "
                     f"queries ({titles}; {sum(len(e.positives) for e in train)} positives, up to {negatives} hard "
                     f"negatives each); {_queries(len(held))} held out\n")
    if len(held) < MIN_HELD_OUT:
        sys.stderr.write(f"warning: only {_queries(len(held))} held out: the interpolation weight fitted on them will be a "
                         "rough guess (raise --max-queries or --held-out)\n")
    if kind == "cross-encoder":
        from ragpipe.rerankers.cross_encoder import CrossEncoderReranker, train_cross_encoder

        extra = {"max_tokens": max_tokens} if max_tokens is not None else {}
        record = train_cross_encoder(train, out, base_model=base_model, epochs=epochs, group_size=negatives + 1,
                                     held_out=held, **extra)
        reranker = CrossEncoderReranker(str(out))
    else:
        from ragpipe.rerankers.llm import LLMReranker, train_llm_head

        extra = {"layer": layer} if layer is not None else {}
        if max_tokens is not None:
            extra["max_tokens"] = max_tokens
        if pooling is not None:
            extra["pooling"] = pooling
        record = train_llm_head(train, out, model=base_model, held_out_examples=held, **extra)
        reranker = LLMReranker(str(out))
    held_queries = {e.qid: e.query for e in held}
    if label_free:
        held_qrels = {e.qid: {e.qid.split(":", 1)[1]: 1} for e in held}
    else:
        held_qrels = {qid: data.qrels[qid] for qid in held_queries}
    weight, curve = fit_interpolation(index, held_queries, held_qrels, reranker, depth=rerank_depth)
    update_settings(out, interpolation=weight, interpolation_fit={
        "metric": "ndcg@10", "held_out_queries": len(held_queries), "depth": rerank_depth,
        "scores": {f"{w:g}": round(v, 4) for w, v in curve.items()}})
    if weight == 0.0:
        sys.stderr.write("warning: the reranker did not beat the first stage on the held-out queries, so its fitted "
                         "weight 0 keeps the first stage's order; train on more queries or pass interpolation=W\n")
    return (f"trained {kind} in {record.get('train_seconds', 0):.0f} s; saved to {out}. Interpolation weight "
            f"{weight:g} fitted on {_queries(len(held_queries))} held out from training (nDCG@10 {curve[weight]:.4f} vs "
            f"{curve[0.0]:.4f} first stage alone, {curve[1.0]:.4f} reranker alone). Use --rerank "
            f"{SPEC_PREFIX[kind]}:{out}")
