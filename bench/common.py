"""What the benchmarks share: where the public data sets are, and Banking77."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.ml.device import Placement
    from core.ml.training import LabelledTexts

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """`TEXTSUITE_DATA_DIR`, or `../shared/data` beside the repository."""
    configured = os.environ.get("TEXTSUITE_DATA_DIR")
    return Path(configured) if configured else (REPO_ROOT.parent / "shared" / "data").resolve()


def product_placement() -> Placement:
    """Where and in which precision the product would run here: `TEXTSUITE_DEVICE`,
    `TEXTSUITE_DTYPE` and `TEXTSUITE_TRAINING_PRECISION` (`auto` unless set), so
    `TEXTSUITE_DTYPE=float32` measures fp32 serving and training."""
    from core.ml.device import configured_placement
    from core.settings import get_settings

    return configured_placement(get_settings())


def banking77_path(split: str) -> Path:
    path = data_dir() / "banking77" / f"{split}.csv"
    if not path.exists():
        raise SystemExit(
            f"Banking77 not found at {path}: set TEXTSUITE_DATA_DIR to the folder that holds "
            "banking77/ (see ../shared/data/README.md)"
        )
    return path


def load_banking77(split: str) -> LabelledTexts:
    """A Banking77 split (`train` or `test`) as labelled texts (label = intent name)."""
    from core.ml.training import LabelledTexts

    return LabelledTexts.from_csv(banking77_path(split), "text", "category")


def table(headers: list[str], rows: list[list[str]]) -> None:
    """Print an aligned plain-text table (pastes into the README as is)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)), flush=True)


def percentile_ms(seconds: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.array(seconds) * 1000.0, q))
