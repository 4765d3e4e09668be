"""The web dashboard: one HTML page, vanilla JS and plotly.js, served by the API itself (no CDN, no build step).

plotly.min.js is not vendored: it is read from the installed `plotly` Python package.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"


@functools.cache
def plotly_js() -> tuple[bytes, bytes]:
    """(plotly.min.js, the same gzipped) from the installed plotly package, read once per process."""
    import plotly

    raw = (Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js").read_bytes()
    return raw, gzip.compress(raw, compresslevel=6)
