"""Logging for workflow scripts: everything a job says goes to its Snakemake log file."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def to_file(path: Path | str, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send logging records and stderr (tqdm progress, warnings) of the block to ``path``.

    Logs carry counts and timings only: patient-level rows are never logged.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        previous_level = root.level
        root.setLevel(level)
        logging.captureWarnings(True)
        try:
            with contextlib.redirect_stderr(stream):
                yield logging.getLogger("hftri_mimic")
        except Exception:
            logging.getLogger("hftri_mimic").exception("job failed")
            raise
        finally:
            root.removeHandler(handler)
            root.setLevel(previous_level)
            sys.stderr.flush()
