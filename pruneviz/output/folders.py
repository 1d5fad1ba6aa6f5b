"""Output folders: pruneviz writes only where it was asked, and never over what it did not
write.

Every folder pruneviz writes into gets a `manifest.json`, written last, listing each file
it wrote with its size and sha256. That is how a later run recognises its own files: it
may replace (or, when no longer produced, remove) a file the manifest lists, and nothing
else. A folder holding other files — the user's own, or an export from before manifests
existed — is refused with their list unless the user says `--force`; and even then no
input of the run (model, weights, data, plan) is ever written over.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from pruneviz.errors import PrunevizError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "pruneviz.manifest/1"
_LISTED = 8


def read_manifest(out: Path) -> dict[str, dict[str, object]]:
    """The files a previous run wrote into `out` (name -> bytes, sha256); empty if none
    (no manifest, or not one of ours)."""
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        return {}
    files = data.get("files")
    return {str(k): v for k, v in files.items() if isinstance(v, dict)} if isinstance(
        files, dict) else {}


def complete_export(out: Path) -> list[str]:
    """The files of a finished earlier export in `out`: its manifest has every file's hash
    (one under way lists them without) and they are all there; empty if there is none."""
    listed = read_manifest(out)
    done = listed and all(isinstance(v.get("sha256"), str) for v in listed.values())
    return sorted(listed) if done and all((out / name).is_file() for name in listed) else []


def foreign_files(out: Path) -> list[str]:
    """Files in `out` (recursively; hidden temporary files aside) that its manifest does
    not list: files pruneviz did not write there."""
    if not out.is_dir():
        return []
    ours = set(read_manifest(out)) | {MANIFEST}
    found = []
    for path in sorted(out.rglob("*")):
        name = path.relative_to(out).as_posix()
        if path.is_file() and name not in ours and not path.name.startswith("."):
            found.append(name)
    return found


def check_target(out: Path, names: Iterable[str], *, inputs: Collection[Path] = (),
                 force: bool = False) -> None:
    """Refuse to write `names` into `out` when one of them is an input of the run
    (always), or when `out` holds files pruneviz did not write (unless `force`)."""
    out = Path(out).expanduser()
    resolved = {Path(p).expanduser().resolve() for p in inputs}
    for name in names:
        target = (out / name).resolve()
        if target in resolved:
            raise PrunevizError(
                f"refusing to write {target}: it is one of this run's inputs (model, "
                "weights, data or plan), and pruneviz never replaces them; choose another "
                "output folder")
    if force:
        return
    foreign = foreign_files(out)
    if foreign:
        shown = ", ".join(foreign[:_LISTED]) + (
            f" and {len(foreign) - _LISTED:,} more" if len(foreign) > _LISTED else "")
        raise PrunevizError(
            f"{out} holds files pruneviz did not write there ({shown}); to keep them safe "
            "nothing was written. Choose an empty or new folder, or add --force to write "
            "beside them (they are left untouched either way)")


def stray_temporaries(out: Path, names: Iterable[str]) -> list[Path]:
    """The temporary files an interrupted write of `names` into `out` left behind: each
    file is written as `.NAME.RANDOM.tmp` (a torch.export program `.STEM.RANDOM.tmp.pt2`)
    beside it and renamed into place, and the folder is probed as
    `.pruneviz-probe.RANDOM.tmp`. Only those names match; they are pruneviz's to remove."""
    found: set[Path] = set(Path(out).glob(".pruneviz-probe.*.tmp"))
    for name in names:
        path = Path(out) / name
        if path.parent.is_dir():
            found.update(path.parent.glob(f".{path.name}.*.tmp"))
            found.update(path.parent.glob(f".{path.stem}.*.tmp.pt2"))
    return sorted(p for p in found if p.is_file())


def removable(out: Path, names: Iterable[str]) -> list[str]:
    """Those of `names` that a previous run wrote into `out` (its manifest lists them):
    the only files a later run may remove."""
    listed = read_manifest(out)
    return [name for name in names if name in listed]


def manifest_bytes(files: Mapping[str, bytes | None]) -> bytes:
    """The manifest of a folder holding `files` (name -> content; None: about to be
    written, listed without size or hash)."""
    entries = {name: {"bytes": None, "sha256": None} if data is None else
               {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
               for name, data in sorted(files.items())}
    return json.dumps({"format": MANIFEST_FORMAT, "files": entries}, indent=2).encode()


__all__ = ["MANIFEST", "check_target", "complete_export", "foreign_files", "manifest_bytes",
           "read_manifest", "removable", "stray_temporaries"]
