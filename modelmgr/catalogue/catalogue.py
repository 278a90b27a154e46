"""The catalogue: bundles shipped in the wheel plus a user folder that adds or overrides them."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import NotFoundError
from ..library.layout import STATE_DIR
from ..settings import Settings
from .loader import BundleError, load_bundle
from .model import Bundle


@dataclass
class Catalogue:
    """All known bundles by name; files that failed validation are kept as errors, not hidden."""

    bundles: dict[str, Bundle] = field(default_factory=dict)
    errors: dict[str, BundleError] = field(default_factory=dict)
    """Rejected bundle files, by bundle name (the file stem)."""

    @classmethod
    def load(cls, settings: Settings) -> "Catalogue":
        """Shipped bundles, then the user folders (``MODELMGR_BUNDLES``, ``<root>/.modelmgr/bundles``)."""
        cat = cls()
        shipped = resources.files("modelmgr_bundles")
        for entry in sorted(shipped.iterdir(), key=lambda e: e.name):
            if entry.name.endswith((".yaml", ".yml")):
                cat._add(Path(str(entry)), entry.read_text(encoding="utf-8"))
        for folder in user_folders(settings):
            for path in sorted(folder.glob("*.y*ml")):
                cat._add(path, None)
        return cat

    def _add(self, path: Path, text: str | None) -> None:
        try:
            bundle = load_bundle(path, text)
        except BundleError as exc:
            self.errors[path.stem] = exc
            self.bundles.pop(path.stem, None)
            return
        self.errors.pop(bundle.name, None)
        self.bundles[bundle.name] = bundle

    def get(self, name: str) -> Bundle:
        """The bundle called ``name``; its schema error, or NotFoundError with close names."""
        if name in self.bundles:
            return self.bundles[name]
        if name in self.errors:
            raise self.errors[name]
        close = difflib.get_close_matches(name, list(self.bundles), n=4, cutoff=0.5)
        hint = (f"did you mean {', '.join(close)}?" if close else
                "`modelmgr bundles list` shows the bundles")
        raise NotFoundError(f"no bundle named {name!r}", hint)

    def all(self) -> list[Bundle]:
        return [self.bundles[n] for n in sorted(self.bundles)]


def user_folders(settings: Settings) -> list[Path]:
    """Folders whose bundle files add to or override the shipped ones (later ones win)."""
    folders = [settings.root / STATE_DIR / "bundles"]
    if settings.bundles_dir:
        folders.append(Path(settings.bundles_dir).expanduser())
    return [f for f in folders if f.is_dir()]
