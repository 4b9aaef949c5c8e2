"""Every path the kit uses, resolved in one place from the package location.

Environment variables override the defaults, so notebooks, tests, the CLI and
cluster workers agree on where things are whatever their working directory:

- ``FACEKIT_DATA``         the AI Hub root (holds ``Training/`` and ``Validation/``);
                           unset means "use the built-in demo data".
- ``FACEKIT_CACHE``        landmark cache (default ``<project>/data/cache``).
- ``FACEKIT_SHARED_DATA``  the real test datasets (default ``<project>/../shared/datasets``).
- ``FACEKIT_WEIGHTS``      checkpoints (default ``<project>/weights``).
- ``FACEKIT_REPORTS``      metrics, figures and benchmark results (default ``<project>/reports``).
- ``FACEKIT_SMOKE``        ``1`` makes notebooks run a tiny version of the same code path.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
ASSETS_DIR = PACKAGE_DIR / "assets"


def _env_path(name: str, default: Path | None) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser().resolve() if value else default


def data_root() -> Path | None:
    """The user's AI Hub root from ``FACEKIT_DATA``, or ``None`` for the demo data."""
    return _env_path("FACEKIT_DATA", None)


def cache_dir() -> Path:
    return _env_path("FACEKIT_CACHE", PROJECT_ROOT / "data" / "cache")


def shared_datasets() -> Path:
    return _env_path("FACEKIT_SHARED_DATA", (PROJECT_ROOT.parent / "shared" / "datasets").resolve())


def weights_dir() -> Path:
    return _env_path("FACEKIT_WEIGHTS", PROJECT_ROOT / "weights")


def reports_dir() -> Path:
    return _env_path("FACEKIT_REPORTS", PROJECT_ROOT / "reports")


def smoke() -> bool:
    """True when ``FACEKIT_SMOKE`` asks notebooks for a quick run of the same code path."""
    return os.environ.get("FACEKIT_SMOKE", "").strip().lower() in {"1", "true", "yes", "on"}


def check_writable(path: Path | str, folder: bool = False) -> Path:
    """``path`` (a file to write; with ``folder``, a folder to write into), checked before long work starts.

    Its folder is made and a probe file written there and removed, so an output that cannot be written
    fails at once with an ``OSError`` naming it, not after hours of work whose result would be lost.
    """
    path = Path(path).expanduser()
    where = path if folder else path.parent
    if not folder and path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder; give a file name, e.g. {path / 'out.json'}")
    blocker = next((a for a in (where, *where.parents) if a.is_file()), None)
    if blocker is not None:
        raise NotADirectoryError(f"cannot write {path}: {blocker} is a file, not a folder; choose another path")
    try:
        where.mkdir(parents=True, exist_ok=True)
        probe = where / f".facekit-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OSError(f"cannot write {path} ({exc.strerror or exc}: {exc.filename or where}); "
                      "choose another path") from None
    return path


def fold_store_path(out: Path | str) -> Path:
    """The folder where ``python -m facekit crossval --out OUT`` keeps its finished folds until OUT is written
    (:class:`facekit.jobs.ResultStore`)."""
    out = Path(out).expanduser()
    return out.with_name(out.name + ".folds")
