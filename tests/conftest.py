"""Shared fixtures. Real collections come from $RAGPIPE_DATA or ../shared/datasets beside the
checkout; tests that need them skip with the reason when neither exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ragpipe.types import Document

REPO = Path(__file__).resolve().parent.parent


def datasets_dir() -> Path | None:
    for candidate in (os.environ.get("RAGPIPE_DATA"), REPO.parent / "shared" / "datasets"):
        if candidate and (Path(candidate) / "scifact" / "corpus.jsonl").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    found = datasets_dir()
    if found is None:
        pytest.skip("real test collections not found: set RAGPIPE_DATA or place them in ../shared/datasets")
    return found


@pytest.fixture(scope="session")
def small_corpus() -> list[Document]:
    """Twelve short documents on distinct topics, with exact phrases tests can search for."""
    rows = [
        ("d01", "Solar panels", "Photovoltaic cells convert sunlight into electricity without moving parts."),
        ("d02", "Wind turbines", "Large rotor blades turn a generator when the wind blows over the hills."),
        ("d03", "Sourdough bread", "A starter of wild yeast and lactobacilli leavens the dough overnight."),
        ("d04", "Espresso", "Hot water is forced through finely ground coffee at nine bars of pressure."),
        ("d05", "Black holes", "Gravity so strong that not even light escapes beyond the event horizon."),
        ("d06", "Photosynthesis", "Plants use chlorophyll to turn carbon dioxide and water into sugar."),
        ("d07", "Volcanoes", "Magma rises through the crust and erupts as lava and volcanic ash."),
        ("d08", "Chess openings", "The Sicilian defence answers the king's pawn with a pawn to c5."),
        ("d09", "Marathon training", "Long slow runs build endurance before the forty-two kilometre race."),
        ("d10", "Honey bees", "Worker bees forage for nectar and dance to share where flowers are."),
        ("d11", "", "A document without a title about tidal energy from ocean currents."),
        ("d12", "Glaciers", "Compacted snow becomes ice that flows slowly downhill, carving valleys."),
    ]
    return [Document(doc_id=i, title=t, text=x) for i, t, x in rows]


@pytest.fixture(scope="session")
def encoder():
    """The default bi-encoder (bundled all-MiniLM-L6-v2 when the hub is unreachable), loaded once."""
    from ragpipe.encoders import BiEncoder

    return BiEncoder()
