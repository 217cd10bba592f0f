"""The disk a merge takes before it starts: the parents' bytes still to download (into
the Hugging Face cache) and its output, against what is free on each disk they go to.
The public-mode quota is AccessPolicy.check_sizes'."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from core.arrivals import kept_spans
from core.errors import UserError
from core.remote import RemoteFile


@dataclass(frozen=True)
class Place:
    what: str  # in the user's words: "the Hugging Face cache", "the outputs folder", or both
    need: int
    free: int


@dataclass(frozen=True)
class DiskNeeds:
    download: int  # bytes still to fetch (a cut download's kept bytes not counted)
    cached: int  # the parents' weight bytes already here
    output: int
    places: tuple[Place, ...]

    def line(self) -> str:
        where = "; ".join(f"{p.need / 1e6:,.0f} MB of the {p.free / 1e6:,.0f} MB free on the disk of {p.what}"
                          for p in self.places if p.need)
        parents = (f"{self.download / 1e6:,.0f} MB of parents to download ({self.cached / 1e6:,.0f} MB here already) and "
                   if self.download else "the parents are here already; ")
        return f"disk: {parents}{self.output / 1e6:,.0f} MB of output: {where or 'nothing new'}"

    def check(self) -> None:
        """Refuse, before any download, a merge that will not fit."""
        for place in self.places:
            if place.need > place.free:
                raise UserError("disk", f"this merge needs {place.need / 1e9:,.1f} GB on the disk of {place.what} "
                                f"({self.download / 1e9:,.1f} GB of parents to download, {self.output / 1e9:,.1f} GB of "
                                f"output) and {place.free / 1e9:,.1f} GB is free", "free disk space, or merge smaller models")


def disk_needs(pending: list[RemoteFile], parents_bytes: int, output_parent: Path, output_bytes: int) -> DiskNeeds:
    download = sum(f.size - kept_spans(f).total for f in pending)
    cached = max(0, parents_bytes - sum(f.size for f in pending))
    needs: dict[int, tuple[list[str], int, int]] = {}
    wants = [("the outputs folder", output_parent, output_bytes)]
    if pending:
        wants.insert(0, ("the Hugging Face cache", pending[0].blob.parent, download))
    for what, folder, nbytes in wants:
        existing = _existing(folder)
        device = os.stat(existing).st_dev
        names, need, _ = needs.get(device, ([], 0, 0))
        needs[device] = ([*names, what], need + nbytes, shutil.disk_usage(existing).free)
    places = tuple(Place(" and ".join(names), need, free) for names, need, free in needs.values())
    return DiskNeeds(download, cached, output_bytes, places)


def _existing(folder: Path) -> Path:
    """The folder, or its nearest ancestor that exists (the output's may not yet)."""
    folder = folder.resolve()
    while not folder.exists():
        folder = folder.parent
    return folder
