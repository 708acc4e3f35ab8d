"""Find and read evaluation datasets in BEIR layout.

A dataset is named by a path, or by a name looked up under ``$RAGPIPE_DATA`` (CI points it at the
shared test collections) and then under ``~/.cache/ragpipe/datasets``. A name found in neither is
downloaded from BEIR's public address when the network allows; offline, that fails with a
:class:`DatasetError` saying where ragpipe looked and what to set.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ragpipe.corpus import load_queries
from ragpipe.errors import DatasetError
from ragpipe.trec import read_qrels
from ragpipe.types import Qrels

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
CACHE_DIR = Path("~/.cache/ragpipe/datasets").expanduser()


@dataclass
class Dataset:
    """A BEIR-layout dataset: its folder, the judged queries of one split, and their qrels."""

    name: str
    path: Path
    split: str
    queries: dict[str, str]
    qrels: Qrels


def data_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("RAGPIPE_DATA"):
        dirs.append(Path(os.environ["RAGPIPE_DATA"]).expanduser())
    dirs.append(CACHE_DIR)
    return dirs


def resolve_dataset(name_or_path: str | Path, download: bool = True) -> Path:
    """The folder of a BEIR-layout dataset, downloading it by name if needed and allowed.

    Raises:
        DatasetError: not found locally and not downloadable (offline, unknown name).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "corpus.jsonl").is_file():
            raise DatasetError(f"{path} is not a BEIR-layout dataset: it has no corpus.jsonl")
        return path
    name = str(name_or_path)
    if os.sep in name or name.startswith("."):
        raise DatasetError(f"dataset folder {path} does not exist")
    for base in data_dirs():
        if (base / name / "corpus.jsonl").is_file():
            return base / name
    looked = ", ".join(str(d) for d in data_dirs())
    if not download:
        raise DatasetError(f"dataset {name!r} not found in {looked}; set RAGPIPE_DATA or pass a path")
    return _download(name, looked)


def _download(name: str, looked: str) -> Path:
    url = BEIR_URL.format(name=name)
    target = CACHE_DIR / name
    try:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
            archive = Path(tmp) / f"{name}.zip"
            with urllib.request.urlopen(url, timeout=30) as response, open(archive, "wb") as out:
                shutil.copyfileobj(response, out)
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if member.startswith("/") or ".." in Path(member).parts:
                        raise DatasetError(f"refusing to unpack {url}: unsafe path {member!r} in the archive")
                zf.extractall(tmp)
            unpacked = Path(tmp) / name
            if not (unpacked / "corpus.jsonl").is_file():
                raise DatasetError(f"{url} did not contain {name}/corpus.jsonl")
            os.replace(unpacked, target)
    except (urllib.error.URLError, OSError, zipfile.BadZipFile) as exc:
        reason = getattr(exc, "reason", exc)
        raise DatasetError(
            f"dataset {name!r} is not in {looked} and downloading {url} failed ({reason}); "
            "set RAGPIPE_DATA to a folder that holds it, or pass the dataset's path"
        ) from None
    return target


def load_dataset(name_or_path: str | Path, split: str = "test") -> Dataset:
    """The judged queries and qrels of ``split``. Queries without a judgment are left out.

    Raises:
        DatasetError: the dataset or its ``qrels/<split>.tsv`` is missing, or no query is judged.
        CorpusError: a malformed queries or qrels line (named).
    """
    path = resolve_dataset(name_or_path)
    qrels_path = path / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (path / "qrels").glob("*.tsv")) if (path / "qrels").is_dir() else []
        raise DatasetError(f"{path} has no qrels for split {split!r} (available: {', '.join(available) or 'none'})")
    qrels = read_qrels(qrels_path)
    all_queries = load_queries(path / "queries.jsonl")
    missing = [qid for qid in qrels if qid not in all_queries]
    if missing:
        raise DatasetError(f"{qrels_path} judges queries missing from queries.jsonl, e.g. {missing[:3]}")
    queries = {qid: all_queries[qid] for qid in qrels if any(g > 0 for g in qrels[qid].values())}
    if not queries:
        raise DatasetError(f"{qrels_path} judges no query relevant to any document")
    return Dataset(name=path.name, path=path, split=split, queries=queries, qrels=qrels)
