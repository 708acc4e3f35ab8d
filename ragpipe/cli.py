"""The ``ragpipe`` command: a thin shell over the Python API.

User mistakes (a bad corpus line, a missing index, an unknown model) print one ``error:`` line on
stderr and exit with status 2; no traceback. Heavy libraries load only inside the commands that
need them, so ``ragpipe --help`` answers at once.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from ragpipe.errors import RagpipeError
from ragpipe.types import ranked

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Two-stage retrieval for RAG: index a corpus, query it, evaluate setups on test collections.",
)


def _version(value: bool) -> None:
    if value:
        from ragpipe import __version__

        typer.echo(f"ragpipe {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


def _index_config(model: Optional[str], passage_tokens: Optional[int], overlap: int, dense_index: str, no_dense: bool,
                  batch_size: int, precision: str):
    from ragpipe.chunking import ChunkingConfig
    from ragpipe.encoders.bi_encoder import EncoderSpec
    from ragpipe.index import IndexConfig
    from ragpipe.retrievers.dense import DenseConfig

    return IndexConfig(
        encoder=EncoderSpec(model=model) if model else EncoderSpec(),
        chunking=ChunkingConfig(max_tokens=passage_tokens, overlap=overlap),
        dense=None if no_dense else DenseConfig(kind=dense_index),
        batch_size=batch_size,
        precision=precision,
    )


_MODEL = typer.Option("sentence-transformers/all-MiniLM-L6-v2", "--model", help="Bi-encoder: hub name or local folder.")
_PASSAGE_TOKENS = typer.Option(None, "--passage-tokens", help="Passage size in encoder tokens (default: the encoder's limit; 0: no splitting).")
_OVERLAP = typer.Option(64, "--overlap", help="Tokens shared by neighbouring passages.")
_DENSE_INDEX = typer.Option("flat", "--dense-index", help="FAISS index: flat (exact), hnsw or ivf.")
_BATCH = typer.Option(16, "--batch-size", help="Passages per encoder batch.")
_PRECISION = typer.Option("auto", "--precision", help="Document encoding precision: auto, fp32 or bf16 (auto: bf16 where the CPU has it natively).")


@app.command()
def index(
    source: Path = typer.Argument(..., help="BEIR folder, .jsonl/.csv/.tsv/.parquet file, or folder of .txt/.md files."),
    index_dir: Optional[Path] = typer.Option(None, "--index", help="Index directory (default: indexes/<source name>)."),
    model: Optional[str] = typer.Option(None, "--model", help="Bi-encoder: hub name or local folder (default: sentence-transformers/all-MiniLM-L6-v2)."),
    passage_tokens: Optional[int] = _PASSAGE_TOKENS,
    overlap: int = _OVERLAP,
    dense_index: str = _DENSE_INDEX,
    no_dense: bool = typer.Option(False, "--bm25-only", help="Build only the BM25 index (no model needed)."),
    batch_size: int = _BATCH,
    precision: str = _PRECISION,
    skip_bad_lines: bool = typer.Option(False, "--skip-bad-lines", help="Skip malformed records instead of stopping."),
    append: bool = typer.Option(False, "--append", help="Add the documents to the existing index instead of rebuilding it."),
) -> None:
    """Build an index over a corpus (documents are split into passages that fit the encoder)."""
    from ragpipe.corpus import load_corpus
    from ragpipe.index import Index

    report = load_corpus(source, on_bad_line="skip" if skip_bad_lines else "error")
    source_file = source / "corpus.jsonl" if source.is_dir() and (source / "corpus.jsonl").is_file() else source
    for location, reason in report.skipped_bad_lines[:5]:
        typer.echo(f"warning: skipped {location}: {reason}", err=True)
    if report.skipped_empty:
        shown = ", ".join(report.skipped_empty[:5])
        typer.echo(f"warning: skipped {len(report.skipped_empty)} documents with neither text nor title ({shown})", err=True)
    typer.echo(f"read {source}: {report.summary()}", err=True)
    target = index_dir or Path("indexes") / (source.stem if source.is_file() else source.resolve().name)
    if append:
        existing = Index.load(target, encoder_model=model)
        built = existing.append(report.documents, progress=True)
        action = f"appended {len(report.documents)} documents to {target}; it now holds"
    else:
        config = _index_config(model, passage_tokens, overlap, dense_index, no_dense, batch_size, precision)
        from ragpipe._files import sha256_file

        # The checksum lets `ragpipe eval` recognise an index of the same corpus file.
        fingerprint = sha256_file(source_file) if source_file.is_file() else None
        built = Index.build(report.documents, target, config, source={"path": str(source_file), "sha256": fingerprint},
                            progress=True)
        action = f"indexed into {target}:"
    m = built.manifest
    typer.echo(
        f"{action} {m['documents']} documents as {m['passages']} passages "
        f"({built.size_bytes() / 1e6:.1f} MB, {m['build_seconds']['total']:.1f} s)"
    )


@app.command()
def delete(
    index_dir: Path = typer.Argument(..., help="Index directory."),
    doc_ids: list[str] = typer.Argument(..., help="Ids of the documents to remove."),
) -> None:
    """Remove documents by id (all ids must exist; otherwise nothing changes)."""
    from ragpipe.index import Index

    updated = Index.load(index_dir).delete(doc_ids)
    typer.echo(f"deleted {len(set(doc_ids))} documents from {index_dir}; {updated.manifest['documents']} remain")


@app.command()
def check(index_dir: Path = typer.Argument(..., help="Index directory.")) -> None:
    """Verify an index: manifest, every file's checksum, and that the counts agree."""
    from ragpipe.index import Index

    loaded = Index.load(index_dir)
    problems = loaded.verify()
    leftovers = sorted(p.name for p in index_dir.glob("gen-*.tmp"))
    if leftovers:
        typer.echo(f"note: {len(leftovers)} unfinished build folders ({', '.join(leftovers[:3])}) from an interrupted "
                   "write; the next write removes them", err=True)
    for problem in problems:
        typer.echo(f"problem: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    m = loaded.manifest
    typer.echo(f"ok: {index_dir} holds {m['documents']} documents, {m['passages']} passages; "
               f"{len(m['files'])} files match their checksums")


@app.command()
def query(
    index_dir: Path = typer.Argument(..., help="Index directory built by 'ragpipe index'."),
    text: str = typer.Argument(..., help="The query."),
    mode: str = typer.Option("hybrid", "--mode", help="dense, bm25 or hybrid."),
    k: int = typer.Option(10, "-k", "--k", help="Number of documents to return."),
    fusion: str = typer.Option("rrf", "--fusion", help="Hybrid fusion: rrf or weighted (min-max)."),
    dense_weight: float = typer.Option(0.5, "--dense-weight", help="Weight of the dense run in weighted fusion."),
    model: Optional[str] = typer.Option(None, "--model", help="Refuse to run unless the index was built with this encoder."),
    rerank: Optional[str] = typer.Option(None, "--rerank", help="Second stage: cross-encoder[:MODEL] or llm[:MODEL], options as ,key=value (depth=N, interpolation=W, backend options)."),
    rerank_depth: int = typer.Option(50, "--rerank-depth", help="First-stage candidates the reranker rescores."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per result."),
) -> None:
    """Search an index and print ranked documents with a snippet of each one's best passage."""
    from ragpipe.errors import QueryError
    from ragpipe.index import Index, SearchOptions

    if not text.strip():
        raise QueryError("the query is empty; give some text to search for")
    if k < 1:
        raise QueryError(f"k must be >= 1, got {k}")
    if rerank is not None and rerank_depth < 1:
        raise QueryError(f"--rerank-depth must be >= 1, got {rerank_depth}")
    loaded = Index.load(index_dir, encoder_model=model)
    options = SearchOptions(mode=mode, fusion=fusion, dense_weight=dense_weight)
    if rerank is not None:  # an empty --rerank "" is refused by the spec check, not taken as no reranker
        from ragpipe.rerankers import load_reranker, rerank_run
        from ragpipe.types import document_text

        reranker = load_reranker(rerank)
        rerank_depth = reranker.depth or rerank_depth
        if reranker.interpolation == 0:
            typer.echo("warning: interpolation weight 0: the reranker cannot change the first stage's order (training "
                       "fits 0 when the reranker showed no gain on held-out queries); pass interpolation=W to mix it in",
                       err=True)
        result = loaded.search({"query": text}, k=max(k, rerank_depth), options=options)
        docs = loaded.documents_by_id(list(result.run["query"]))
        reranked = rerank_run(result.run, {"query": text}, lambda d: document_text(docs[d]), reranker,
                              depth=rerank_depth)
        result.run = {"query": dict(ranked(reranked.run["query"], k))}
    else:
        result = loaded.search({"query": text}, k=k, options=options)
    hits = loaded.hits(result, "query", text)
    if as_json:
        for hit in hits:
            typer.echo(json.dumps(hit.__dict__, ensure_ascii=False))
        return
    if not hits:
        typer.echo("no matching documents")
        return
    id_width = max(6, *(len(h.doc_id) for h in hits))
    typer.echo(f"{'rank':>4}  {'doc id':<{id_width}}  {'score':>8}  title / snippet")
    for hit in hits:
        typer.echo(f"{hit.rank:>4}  {hit.doc_id:<{id_width}}  {hit.score:>8.4f}  {hit.title or '(untitled)'}")
        typer.echo(f"{'':>4}  {'':<{id_width}}  {'':>8}  {hit.snippet}")


@app.command("eval")
def eval_command(
    dataset: str = typer.Argument(..., help="BEIR-layout dataset folder, or a name under $RAGPIPE_DATA."),
    index_dir: Optional[Path] = typer.Option(None, "--index", help="Index to use (default: indexes/<dataset>, built if needed)."),
    modes: str = typer.Option("bm25,dense,hybrid-rrf,hybrid-weighted", "--modes", help="Comma-separated setups: bm25, dense, hybrid, hybrid-rrf, hybrid-weighted."),
    metrics: str = typer.Option("ndcg@10,recall@100,mrr@10,map@100", "--metrics", help="Comma-separated: ndcg@K, recall@K, precision@K, mrr@K, map@K."),
    split: str = typer.Option("test", "--split", help="Qrels split to evaluate on."),
    fusion: str = typer.Option("rrf", "--fusion", help="Fusion used by the setup name 'hybrid'."),
    dense_weight: float = typer.Option(0.5, "--dense-weight", help="Weight of the dense run in weighted fusion."),
    rrf_k: int = typer.Option(60, "--rrf-k", help="RRF constant."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write the report (with per-query metrics) as JSON."),
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="Where TREC run files go (default: runs/<dataset>)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the index even if a matching one exists."),
    rerank: Optional[list[str]] = typer.Option(None, "--rerank", help="Add a reranked row (repeatable): cross-encoder[:MODEL] or llm[:MODEL][,key=value...]; depth=N and interpolation=W apply to that row alone."),
    rerank_depth: int = typer.Option(50, "--rerank-depth", help="First-stage candidates each reranker rescores."),
    rerank_stage: Optional[str] = typer.Option(None, "--rerank-stage", help="Setup whose run is reranked (default: the last hybrid setup)."),
    model: str = _MODEL,
    passage_tokens: Optional[int] = _PASSAGE_TOKENS,
    overlap: int = _OVERLAP,
    dense_index: str = _DENSE_INDEX,
    batch_size: int = _BATCH,
    precision: str = _PRECISION,
) -> None:
    """Compare setups on a dataset's judged queries: metrics, latency, index size and build time."""
    from ragpipe.evaluation import run_eval, write_report
    from ragpipe.index import SearchOptions

    config = _index_config(model, passage_tokens, overlap, dense_index, False, batch_size, precision)
    report = run_eval(
        dataset, index_dir=index_dir, modes=modes, metrics=metrics, split=split, fusion=fusion, config=config,
        search=SearchOptions(rrf_k=rrf_k, dense_weight=dense_weight), runs_dir=runs_dir, rebuild=rebuild,
        progress=True, rerankers=rerank or (), rerank_depth=rerank_depth, rerank_stage=rerank_stage,
    )
    typer.echo(report.table())
    typer.echo(f"index: {report.index_path} ({'built in this run' if report.index_built_now else 'reused'}); "
               f"run files: {Path(report.rows[0].run_file).parent}")
    if output:
        write_report(report, output)
        typer.echo(f"wrote {output}")


@app.command("train-reranker")
def train_reranker(
    dataset: str = typer.Argument(..., help="BEIR-layout dataset folder or name (its corpus is indexed for hard negatives)."),
    out: Path = typer.Option(..., "--out", help="Folder to write the trained reranker to."),
    kind: str = typer.Option("cross-encoder", "--kind", help="cross-encoder or llm-head."),
    split: str = typer.Option("train", "--split", help="Judgments to train on (never evaluate on the same split)."),
    label_free: bool = typer.Option(False, "--label-free", help="Ignore judgments: use titles as queries for their own documents."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Start from this model (default: bundled MiniLM / SmolLM2)."),
    epochs: int = typer.Option(2, "--epochs", help="Passes over the training groups (cross-encoder)."),
    negatives: int = typer.Option(7, "--negatives", help="Hard negatives per positive, mined from the hybrid first stage."),
    layer: Optional[int] = typer.Option(None, "--layer", help="LLM layer whose hidden state feeds the head (llm-head)."),
    pooling: Optional[str] = typer.Option(None, "--pooling", help="last or mean: how the head pools the layer's states (llm-head; default last)."),
    max_queries: Optional[int] = typer.Option(None, "--max-queries", help="Train on at most this many queries (a quick run)."),
    rerank_depth: int = typer.Option(50, "--rerank-depth", help="Candidates used when fitting the interpolation weight."),
    index_dir: Optional[Path] = typer.Option(None, "--index", help="Index of the dataset's corpus (default: indexes/<dataset>)."),
    pseudo_queries: int = typer.Option(0, "--pseudo-queries", help="Also train on this many titles as pseudo-queries for their own bodies."),
    held_out: float = typer.Option(0.1, "--held-out", help="Share of judged queries held out to fit the interpolation weight."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Tokens per (query, passage) input (default 256)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a reranker already in --out (refused otherwise)."),
) -> None:
    """Train a reranker offline from training judgments (or titles, with --label-free)."""
    from ragpipe.training import train_reranker_command

    summary = train_reranker_command(
        dataset, out, kind=kind, split=split, label_free=label_free, base_model=base_model, epochs=epochs,
        negatives=negatives, layer=layer, pooling=pooling, max_queries=max_queries, rerank_depth=rerank_depth, index_dir=index_dir,
        pseudo_queries=pseudo_queries, held_out=held_out, max_tokens=max_tokens, overwrite=overwrite,
    )
    typer.echo(summary)


def _click_modules() -> list:
    """The exception modules of click as typer uses it: recent typer releases carry their own copy
    (``typer._click``), whose classes are not the ``click`` package's."""
    modules = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            pass
    return modules


def _exit_like_click(exc: Exception) -> None:
    """Exit as click's standalone mode would for a usage error, an Exit or an Abort; return otherwise.

    A usage error is one line on stderr, as every other user error is; a bare ``ragpipe`` shows the
    help (on stdout, unless typer's rich output printed it already)."""
    modules = _click_modules()
    exits = tuple([typer.Exit] + [m.Exit for m in modules if hasattr(m, "Exit")])
    aborts = tuple([typer.Abort] + [m.Abort for m in modules if hasattr(m, "Abort")])
    no_args = tuple(m.NoArgsIsHelpError for m in modules if hasattr(m, "NoArgsIsHelpError"))
    usage = tuple(m.ClickException for m in modules if hasattr(m, "ClickException"))
    if isinstance(exc, exits):
        sys.exit(exc.exit_code)
    if isinstance(exc, aborts):
        sys.exit(1)
    if no_args and isinstance(exc, no_args):
        message = exc.format_message()
        if message:
            typer.echo(message)
        sys.exit(exc.exit_code)
    if usage and isinstance(exc, usage):
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        typer.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)


def run() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    try:
        # Without standalone mode click returns (not raises) the code of a typer.Exit.
        status = app(standalone_mode=False)
    except RagpipeError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # an unwritable --index, an --output that is a folder, a full disk...
        where = f" ({exc.filename})" if exc.filename else ""
        typer.echo(f"error: {exc.strerror or exc}{where}", err=True)
        sys.exit(2)
    except Exception as exc:  # usage errors arrive here with standalone_mode=False
        _exit_like_click(exc)
        raise
    if isinstance(status, int) and status:
        sys.exit(status)


if __name__ == "__main__":
    run()
