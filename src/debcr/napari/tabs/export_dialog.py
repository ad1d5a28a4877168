"""The "Use model" tab's Export… dialog: where and how to write a BioImage Model Zoo package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from debcr.napari import jobs
from debcr.napari.parts import row, save_file

DEFAULT_LICENCE = "CC-BY-4.0"
#: Room (px) a line edit needs beside its text: frame, text margins and cursor.
FIELD_PADDING = 24
#: Widest (px) a field grows to fit its text; longer paths scroll inside the field.
FIELD_MAX_WIDTH = 900


def default_path(spec: str) -> Path:
    """Where the package of ``spec`` goes unless the user says otherwise (the home folder)."""
    stem = spec if spec in jobs.BUILTIN_MODELS else Path(spec).stem or "model"
    return Path.home() / f"debcr_{stem}.zip"


class ExportDialog(QDialog):
    """Asks for the package's output path, name, description, authors and licence.

    A built-in model's fields are filled in (its name, the original authors, CC-BY-4.0);
    other models need a name and authors.

    Parameters
    ----------
    spec : str
        The model to export, as the model picker names it.
    parent : QWidget, optional
        The tab the dialog belongs to.
    """

    def __init__(self, spec: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export as a BioImage Model Zoo package")
        self.path = QLineEdit(str(default_path(spec)))
        self.name = QLineEdit(placeholderText="e.g. Nuclei denoiser")
        self.description = QLineEdit(placeholderText="optional: a default is written")
        self.authors = QLineEdit(placeholderText="comma-separated: Ada Lovelace, Alan Turing")
        self.licence = QLineEdit(DEFAULT_LICENCE)
        self.overwrite = QCheckBox("replace an existing file")
        self.message = QLabel()
        if spec in jobs.BUILTIN_MODELS:
            self._fill_builtin(spec)
        self._lay_out(spec)
        self.path.textChanged.connect(lambda *_: self._fit_fields())
        self._fit_fields()

    def _fill_builtin(self, spec: str) -> None:
        # Imported here: it imports torch, which the widget module must not at napari start.
        from debcr.interop.bmz.card import ORIGINAL_AUTHORS

        self.name.setText(f"DeBCR {spec} (m-rBCR)")
        self.authors.setText(", ".join(author["name"] for author in ORIGINAL_AUTHORS))

    def _lay_out(self, spec: str) -> None:
        browse = QPushButton("Save…")
        browse.clicked.connect(self._choose_path)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.buttons = buttons
        form = QFormLayout(self)
        form.addRow("model:", QLabel(spec))
        form.addRow("package (.zip):", row(self.path, browse))
        form.addRow("", self.overwrite)
        form.addRow("name:", self.name)
        form.addRow("description:", self.description)
        form.addRow("authors:", self.authors)
        form.addRow("licence (SPDX):", self.licence)
        form.addRow(self.message)
        form.addRow(buttons)

    def line_edits(self) -> tuple[QLineEdit, ...]:
        """The dialog's text fields, top to bottom."""
        return (self.path, self.name, self.description, self.authors, self.licence)

    def _fit_fields(self) -> None:
        """Make every field wide enough for its text or placeholder (Qt's default is ~17
        characters, which cut the path and the authors), up to `FIELD_MAX_WIDTH`."""
        for field in self.line_edits():
            text = field.text() or field.placeholderText()
            need = field.fontMetrics().horizontalAdvance(text) + FIELD_PADDING
            field.setMinimumWidth(min(need, FIELD_MAX_WIDTH))

    def _choose_path(self) -> None:
        path = save_file(self, "Save the package", self.path.text(), "BMZ package (*.zip)")
        if not path:
            return
        path = path if Path(path).suffix else f"{path}.zip"
        self.path.setText(path)
        # The save dialog has already asked whether to replace an existing file.
        self.overwrite.setChecked(Path(path).exists())

    def output(self) -> str:
        """The package path typed or chosen."""
        return self.path.text().strip()

    def fields(self) -> dict[str, Any]:
        """The keyword arguments for `debcr.napari.jobs.export_package`."""
        return {
            "name": self.name.text().strip(),
            "description": self.description.text().strip(),
            "authors": self.authors.text(),
            "license": self.licence.text().strip(),
            "overwrite": self.overwrite.isChecked(),
        }

    def accept(self) -> None:
        """Close with OK, unless no output path is given."""
        if not self.output():
            self.message.setText("Choose where to write the package (.zip).")
            return
        super().accept()
