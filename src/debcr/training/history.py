"""``metrics.csv`` of a run: one row per step, kept across resumes.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when a run is resumed (so the
file, and the curves plotted from it, held only the last segment) and writes separate rows
for the training and validation metrics of a step. `MetricsLog` instead

* keeps the rows of the steps a resumed run does not repeat: when it continues from a
  checkpoint at step ``N``, the rows of steps ``< N`` are kept and those of steps ``≥ N``
  (written by the interrupted segment after its last checkpoint) are dropped, so each step
  appears once and the history is whole;
* merges everything logged for a step into one row (``step, epoch, train_loss, train_psnr,
  val_loss, val_psnr``);
* writes each row as soon as it is logged (a step's row is rewritten in place when the step
  logs more, e.g. its validation), so an interruption (even ``kill -9``) loses no step the
  resume checkpoint covers.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from debcr.defaults import METRICS_CSV
from debcr.files import atomic_output

__all__ = ["MetricsLog", "read_rows"]

#: Leading columns of ``metrics.csv`` (further logged values follow, sorted by name).
COLUMNS = ("step", "epoch", "train_loss", "train_psnr", "val_loss", "val_psnr")


def read_rows(path: str | os.PathLike) -> dict[int, dict[str, str]]:
    """``step → {column: value}`` of a ``metrics.csv`` (rows of one step merged)."""
    rows: dict[int, dict[str, str]] = {}
    with Path(path).open(newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                step = int(row["step"])
            except (TypeError, ValueError):  # a line cut short by a crash
                continue
            merged = rows.setdefault(step, {})
            merged.update({k: v for k, v in row.items() if k and v not in ("", None)})
    return rows


def _text(value: Any) -> Any:
    if hasattr(value, "item"):  # a tensor or numpy scalar
        value = value.item()
    return value


class MetricsLog(Logger):
    """A Lightning logger writing a run's ``metrics.csv`` (on rank zero only).

    `begin` must be called once training has started (``on_train_start``, when a
    resumed run knows its step).
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        super().__init__()
        self.path = Path(run_dir) / METRICS_CSV
        self._rows: dict[int, dict[str, Any]] = {}
        self._columns = list(COLUMNS)
        self._dirty: set[int] = set()  # steps changed since they were written
        self._written = -1  # the last step in the file
        self._tail = 0  # where that step's row starts in the file
        self._rewrite = False  # the header changed: write the whole file again

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> None:
        return None  # no `v_num` in the progress bar

    @property
    def save_dir(self) -> str:
        return str(self.path.parent)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """The run's configuration is in ``config.yaml``; nothing to do here."""

    @rank_zero_only
    def begin(self, step: int) -> None:
        """Start logging at ``step``: keep the file's rows of earlier steps, drop the others."""
        kept: dict[int, dict[str, Any]] = {}
        if step > 0 and self.path.is_file():
            kept = {s: row for s, row in read_rows(self.path).items() if s < step}
        self._rows = dict(sorted(kept.items()))
        self._add_columns(key for row in kept.values() for key in row)
        self._dirty = set(self._rows)
        self._written, self._rewrite = -1, True
        self.flush()

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if step is None:
            step = max(self._rows, default=-1) + 1
        row = self._rows.setdefault(step, {})
        row.update({key: _text(value) for key, value in metrics.items() if key != "step"})
        self._add_columns(row)
        self._dirty.add(step)

    @rank_zero_only
    def save(self) -> None:
        """Write every row logged so far (Lightning calls this after each logging)."""
        self._write(sorted(self._dirty))

    def flush(self) -> None:
        """Write every row logged so far."""
        self.save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.flush()

    def _add_columns(self, keys: Any) -> None:
        for key in sorted(set(keys) - set(self._columns)):
            self._columns.append(key)
            self._rewrite = True

    def _encode(self, steps: list[int], header: bool = False) -> tuple[bytes, int]:
        """CSV bytes of the rows of ``steps`` and where the last row starts in them."""
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=self._columns, lineterminator="\n")
        if header:
            writer.writeheader()
        last = 0
        for step in steps:
            last = len(buffer.getvalue().encode())
            writer.writerow({**self._rows[step], "step": step})
        return buffer.getvalue().encode(), last

    def _write(self, steps: list[int]) -> None:
        if not steps and not self._rewrite:
            return
        if self._rewrite or not self.path.is_file() or (steps and steps[0] < self._written):
            # A new column or an older row changed: write the whole file again, atomically.
            upto = max([self._written, *steps])
            everything = sorted(s for s in self._rows if s <= upto)
            data, last = self._encode(everything, header=True)
            with atomic_output(self.path, overwrite=True) as tmp:
                tmp.write_bytes(data)
            self._tail, self._rewrite = last, False
        else:
            # Append; the last row of the file is replaced when its step logged more.
            with self.path.open("r+b") as fh:
                if steps[0] == self._written:
                    fh.truncate(self._tail)
                fh.seek(0, os.SEEK_END)
                start = fh.tell()
                data, last = self._encode(steps)
                fh.write(data)
            self._tail = start + last
        self._written = max([self._written, *steps])
        self._dirty = {s for s in self._dirty if s > self._written}
