"""Running units of work (cross-validation's outer folds, an experiment's variants) in this process or a
pool of processes, and keeping each finished one on disk so that a stopped run goes on where it stopped.

    for out in run_kept(fn, jobs, *fold_workers(None, len(jobs)), store=ResultStore(folder)):
        ...
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from .train import torch_threads


def fold_workers(workers: int | None, n_folds: int, threads: int | None = None) -> tuple[int, int | None]:
    """(processes, torch threads in each) for training ``n_folds`` outer folds: ``workers`` processes
    (``None``: one per core), never more than the folds; with more than one, each process trains with
    ``threads`` threads, by default this process's torch threads (``OMP_NUM_THREADS``; else one per core)
    divided among them (at least 1), so that they do not fight over the cores.  One process trains in
    this one, with its threads as they are (``None``) unless ``threads`` is given."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = cores if workers is None else int(workers)
    if n < 1:
        raise ValueError(f"--workers {workers}: give 1 or more processes (or leave it out: one per core)")
    n = max(1, min(n, n_folds))
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads={threads}: give 1 or more torch threads per fold")
    # this process's threads (OMP_NUM_THREADS, torch.set_num_threads, else the cores) shared among the workers
    return n, (int(threads) if threads is not None else max(1, min(torch.get_num_threads(), cores) // n)
               if n > 1 else None)


def run_kept(fn, jobs: list[tuple], n_workers: int, threads: int | None, store: "ResultStore | None" = None,
             progress: bool = False, key_parts=None):
    """:func:`run_jobs` (``fn`` returns a dict), and with a ``store`` first the results it keeps from an earlier
    run of the same work (marked ``resumed``), then the others, each kept there as it finishes.  A job's key
    (:func:`job_key`) hashes ``key_parts(job)`` (default: the job itself) and the torch threads it runs with."""
    if store is None:
        yield from run_jobs(fn, jobs, n_workers, threads)
        return
    import torch

    # the threads are part of the key: with more than one per job the last digits may differ
    keys = [job_key((key_parts or tuple)(job), threads if threads is not None else torch.get_num_threads())
            for job in jobs]
    found = [store.load(i, key) for i, key in enumerate(keys)]
    todo = [(fn, i, *job) for i, (job, out) in enumerate(zip(jobs, found)) if not isinstance(out, dict)]
    stale = sum(out is ResultStore.STALE for out in found)
    if progress and (len(todo) < len(jobs) or stale):
        from tqdm.auto import tqdm

        tqdm.write(f"{store.folder}: reusing {len(jobs) - len(todo)} of {len(jobs)} {store.what} finished by an "
                   "earlier run of the same work" + (f"; {stale} kept from other data, settings or code are "
                                                     "run again" if stale else ""), file=sys.stderr)
    yield from (out for out in found if isinstance(out, dict))
    for i, out in run_jobs(_indexed, todo, n_workers, threads):  # each as it finishes
        store.save(i, keys[i], out)
        yield out


def _indexed(fn, i: int, *job):
    return i, fn(*job)


def job_key(parts: tuple, threads: int) -> str:
    """What decides a job's result, hashed: its arrays, tables and settings, the threads it runs with, and
    facekit's code and the versions of what it computes with."""
    h = hashlib.sha256(_code_fingerprint().encode())
    _hash_parts(h, (*parts, threads))
    return h.hexdigest()


def _hash_parts(h, parts) -> None:
    for part in parts:
        if isinstance(part, tuple):  # e.g. crossval's extra training rows: each array in full, not its repr
            h.update(b"(")
            _hash_parts(h, part)
        elif isinstance(part, pd.DataFrame):
            h.update(repr((list(part.columns), part.dtypes.astype(str).tolist())).encode())
            h.update(pd.util.hash_pandas_object(part, index=True).to_numpy().tobytes())
        elif isinstance(part, np.ndarray):
            h.update(repr((part.dtype.str, part.shape)).encode())
            h.update("\0".join(map(str, part.ravel())).encode() if part.dtype == object else part.tobytes())
        else:
            h.update(repr(part).encode())
        h.update(b"\1")


def _code_fingerprint() -> str:
    import sklearn
    import torch

    h = hashlib.sha256(repr((ResultStore.VERSION, platform.python_version(), np.__version__, torch.__version__,
                             sklearn.__version__)).encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


class ResultStore:
    """A folder of finished units of work (:func:`crossval`'s outer folds, :func:`facekit.experiment.compare`'s
    variants), one ``{prefix}NNN.npz`` each (a result's arrays as arrays, the rest as JSON text; read with
    ``allow_pickle=False``), written whole or not at all (a temporary file, then renamed), so that a run
    stopped by Ctrl-C, a crash or a full disk goes on from them.  A result is found only under the key of the
    work that made it (:func:`job_key`)."""

    VERSION = 1
    STALE = object()  # load(): a result is there, made by other work

    def __init__(self, folder, prefix: str = "fold", what: str = "folds"):
        self.folder, self.prefix, self.what = Path(folder).expanduser(), prefix, what
        self._warned = False

    def _file(self, i: int):
        return self.folder / f"{self.prefix}{i:03d}.npz"

    def load(self, i: int, key: str):
        """Result ``i`` if it was made under ``key`` (marked ``resumed``); :data:`STALE` if by other work; else
        ``None`` (none kept, or one that cannot be read, with a warning naming it: it is made again)."""
        path = self._file(i)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("key") != key:
                    return self.STALE
                return {**meta["result"], **{name: z[name] for name in meta["arrays"]}, "resumed": True}
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            warnings.warn(f"{path}: a result kept by an earlier run cannot be read ({exc}); it is made again",
                          stacklevel=2)
            return None

    def save(self, i: int, key: str, out: dict) -> None:
        """Keep result ``i``; where it cannot be written, warn once and go on (the run itself loses nothing)."""
        arrays = {k: v for k, v in out.items() if isinstance(v, np.ndarray)}
        meta = json.dumps({"key": key, "arrays": list(arrays),
                           "result": {k: v for k, v in out.items() if k not in arrays}}, default=float)
        tmp = self.folder / f".{self.prefix}{i:03d}.{os.getpid()}.tmp"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                np.savez(fh, meta=np.array(meta), **arrays)
            os.replace(tmp, self._file(i))
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if not self._warned:
                warnings.warn(f"cannot keep finished {self.what} in {self.folder} ({exc}): this run goes on, but "
                              f"if it is stopped its {self.what} are made again", stacklevel=2)
                self._warned = True

    def clear(self) -> None:
        """Remove the folder (the run's result is written)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def run_jobs(fn, jobs: list[tuple], n_workers: int, threads: int | None):
    """Yield ``fn(*job)`` for each job, with ``threads`` torch threads (``None``: as they are): in this process
    and in order when ``n_workers`` is 1, else in joblib's process pool (loky) as they finish.  A worker that
    fails, or Ctrl-C, stops the pool with the run.  (:func:`fold_workers` gives ``n_workers`` and ``threads``.)"""
    if n_workers == 1:
        for job in jobs:
            yield _with_threads(fn, threads, *job)
        return
    from joblib import Parallel, delayed

    yield from Parallel(n_jobs=n_workers, backend="loky", return_as="generator_unordered")(
        delayed(_in_worker)(fn, threads, *job) for job in jobs)


def _with_threads(fn, threads: int | None, *args):
    with torch_threads(threads):
        return fn(*args)


def _in_worker(fn, threads: int | None, *args):
    """:func:`_with_threads` in a pool worker.  tqdm's first bar, even a disabled one, makes a process-shared
    lock: a named semaphore that a worker stopped by Ctrl-C leaves behind, for Python to warn about at exit.
    A worker's bars are all disabled, so a thread lock does."""
    import threading

    from tqdm import tqdm

    if "_lock" not in vars(tqdm):
        tqdm.set_lock(threading.RLock())
    return _with_threads(fn, threads, *args)
