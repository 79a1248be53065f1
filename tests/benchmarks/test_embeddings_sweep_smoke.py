"""The quick mode of the embeddings packing sweep: every cell embeds every text, and the choice is a grid cell.

No assertion on timing (figures on a shared CI machine mean nothing): the choice itself is made by the full run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import embeddings_sweep

pytestmark = pytest.mark.timeout(180)


def test_embeddings_sweep_quick(tmp_path: Path) -> None:
    out = embeddings_sweep.main(["--quick", "--inline", "--n", "200", "--results-dir", str(tmp_path)])

    samples = out["raw"]["samples"]
    cells = {(s["per_input_ms"], s["batch_size"], s["max_chars"]) for s in samples}
    assert len(cells) == 2 * len(embeddings_sweep.QUICK_BATCH_SIZES) * len(embeddings_sweep.QUICK_MAX_CHARS)
    assert all((s["ok"], s["errors"]) == (200, 0) for s in samples)
    assert out["choice"]["batch_size"] in embeddings_sweep.QUICK_BATCH_SIZES
    assert out["choice"]["max_chars"] in embeddings_sweep.QUICK_MAX_CHARS
    assert "Embeddings sweep goals" in (tmp_path / "embeddings_sweep.md").read_text()
