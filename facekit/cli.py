"""Command line for the long stages, with the same settings and defaults as the notebooks.

    python -m facekit index   DATA [--out index.csv]
    python -m facekit extract DATA [--per-zip 5000] [--seed 0] [--workers N] [--draft-long-side 1024]
        [--min-face-side 256] [--remeasure 1] [--reframe 0 --reframe-seed 0] [--cache DIR] [--out DIR]
    python -m facekit crossval DATA --out FILE.json [--pattern REGEX --label-map K=V,...]
        [--task binary|anxious-vs-rest|7class] [--folds loso|K] [--model resnet-mlp|logreg|majority]
        [--calibration none|personal-neutral] [--seed N] [--workers N]
        [--reframe PX --reframe-draws N]  (the figures' spread when FaceMesh measures the photos re-framed)
        [--train-reframes K [--train-reframe-px PX] [--train-reframes-weight row|photo]]
            (train on K more measurements of each training photo)
        (more: python -m facekit crossval --help)
    python -m facekit bench [--quick] [--out reports/bench.json]
        (every stage against FaceMesh alone and the original design; README, Benchmarks)
    python -m facekit serve [--weights FILE] [--host 127.0.0.1] [--port 8001] [--cors-origin URL]
        (the inference server and its web page; needs the 'serve' extra)

``DATA`` is an AI Hub root, ``jaffe``/``ckplus`` folders, any image folder with
``--pattern``, or ``demo``; it defaults to ``FACEKIT_DATA``.  ``extract`` fills the
landmark cache the notebooks read, so it can run unattended (and resume).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from . import extract as ex
from .index import summary
from .paths import check_writable, fold_store_path
from .sample import DEFAULT_CAP, report, sample
from .sources import load_index, parse_label_map


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", default=None,
                   help="AI Hub root, image folder, or 'demo' (default: $FACEKIT_DATA, else demo)")
    p.add_argument("--pattern", help="regex over paths relative to DATA with groups (?P<person>) and (?P<label>)")
    p.add_argument("--label-map", default="", help="raw label to emotion, e.g. NE=neutral,FE=anxious")


def _index(args) -> "pd.DataFrame":  # noqa: F821
    return load_index(args.data, pattern=args.pattern, label_map=parse_label_map(args.label_map) or None)


def _sample(args, df) -> "pd.DataFrame":  # noqa: F821
    chosen = sample(df, per_container=args.per_zip or None, seed=args.seed)
    if chosen.empty:
        raise ValueError(f"no usable photos in {args.data or 'FACEKIT_DATA'}: every one of the {len(df)} files has a "
                         f"problem; 'python -m facekit index {args.data or ''}' lists each with its reason")
    return chosen


def _where(row) -> str:
    """A photo as a user finds it: ``ZIP :: member`` (its recovered name), or the file's own path in a folder."""
    if str(row.container).lower().endswith(".zip") or not isinstance(row.member, str) or not row.member:
        return f"{row.container} :: {row.name}"
    return str(Path(row.container) / row.member)


def cmd_index(args) -> int:
    if args.out:
        check_writable(args.out)
    df = _index(args)
    info = summary(df)
    print(json.dumps(info, ensure_ascii=False, indent=1))
    problems = df[df["problem"].notna()]
    for row in problems.itertuples():
        print(f"problem: {_where(row)}: {row.problem}", file=sys.stderr)
    if args.out:
        df.to_csv(args.out, index=False, encoding="utf-8-sig")
        print(f"wrote {args.out} ({len(df)} rows)")
    return 0


def cmd_extract(args) -> int:
    if args.out:
        check_writable(args.out, folder=True)
    df = _index(args)
    chosen = _sample(args, df)
    settings = replace(_extract_settings(args), draft_long_side=args.draft_long_side or None,
                       min_face_side=args.min_face_side or None)
    unusable = df["container"].nunique() - chosen["container"].nunique()
    print(f"{len(chosen)} photos sampled from {chosen['container'].nunique()} containers"
          f"{f' ({unusable} more hold no usable photo)' if unusable else ''} "
          f"(at most {args.per_zip} each, seed {args.seed}); landmark cache: {args.cache or ex.cache_dir()}")
    table, landmarks = ex.extract(chosen, settings, workers=args.workers, cache=args.cache)
    counts = table["status"].value_counts().to_dict()
    print("status:", json.dumps(counts, ensure_ascii=False))
    print(report(chosen, df)["by_class"].to_string())
    for row in table.loc[ex.failures(table).index].itertuples():
        print(f"no landmarks: {_where(row)}: {row.status} ({row.reason})", file=sys.stderr)
    if args.out:
        out = Path(args.out)
        table.to_csv(out / "table.csv", index=False, encoding="utf-8-sig")
        np.save(out / "landmarks.npy", landmarks)
        print(f"wrote {out}/table.csv and {out}/landmarks.npy {landmarks.shape} (pixel units)")
    return 0


def cmd_crossval(args) -> int:
    from .measures import MEASURES_NEED_ALIGNMENT
    from .selection import IDENTITY_WITH_EXTRA, _identity_grid

    if args.extra_centre != "none" and not args.extra_train:
        raise ValueError(f"--extra-centre {args.extra_centre} places the --extra-train data sets; give one or more")
    if any(_identity_grid(args.identity_dims)) and args.extra_train:  # now, not after extracting the landmarks
        raise ValueError(IDENTITY_WITH_EXTRA)
    if args.features == "measures" and (args.normalization != "kit" or args.no_align):  # now, likewise
        raise ValueError(MEASURES_NEED_ALIGNMENT)
    if args.features == "measures" and args.mirror == "on":  # now, not after extracting the landmarks
        raise ValueError("--mirror on adds mirrored copies of the training faces; the expression measures (--features "
                         "measures) of a face and of its mirror image are the same: leave --mirror out")
    if args.train_on == "emotions" and args.task != "anxious-vs-rest":
        raise ValueError(f"--train-on emotions trains an anxious-vs-rest model on every emotion present; this run's "
                         f"task is {args.task!r}: give --task anxious-vs-rest (7class already trains on them)")
    if args.reframe_draws and not args.reframe:
        raise ValueError(f"--reframe-draws {args.reframe_draws} repeats the run with the photos re-framed: give "
                         "--reframe PX too (e.g. 2 for JAFFE's 256-pixel photos, 4 for CK+'s; TRAINING_DETAIL "
                         "section 7 item 19)")
    if args.train_reframes_weight != "row" and not args.train_reframes:
        raise ValueError(f"--train-reframes-weight {args.train_reframes_weight} weighs --train-reframes' measurements: "
                         "give --train-reframes K too")
    if args.train_reframe_px is not None and not args.train_reframes:
        raise ValueError("--train-reframe-px sets how far --train-reframes re-frames the training photos: give "
                         "--train-reframes K too")
    if args.train_reframes:
        _train_reframe_px(args)  # now: it needs a PX
        if args.model == "majority":
            raise ValueError("--train-reframes adds training rows; the majority baseline learns from none: use it "
                             "with --model resnet-mlp or logreg")
    out = check_writable(args.out)  # now, not after hours of cross-validation
    if args.reframe_draws:
        return _reframe_draws(args, out)
    return _crossval_run(args, out)[0]


#: CLI arguments that do not change a crossval result (with one torch thread per fold, --workers does not).
_NOT_RESULT_ARGS = ("func", "command", "out", "fresh", "workers", "cache", "reframe_draws")


def _result_arguments(args) -> dict:
    """The arguments that make a crossval run's result, as its JSON records them (``arguments``)."""
    return json.loads(json.dumps({k: v for k, v in sorted(vars(args).items()) if k not in _NOT_RESULT_ARGS}))


def draw_path(out: Path, seed: int) -> Path:
    """Where ``crossval --out FILE.json --reframe-draws N`` writes the draw of ``--reframe-seed`` ``seed``."""
    return out.with_name(f"{out.stem}.reframe-seed{seed}{out.suffix}")


def _reframe_draws(args, out: Path) -> int:
    """``--reframe-draws N``: the run repeated with ``--reframe-seed`` S, S + 1, …, S + N − 1, each draw's JSON and
    per-photo table beside ``out`` (:func:`draw_path`), and in ``out`` each draw's headline figures with their mean,
    sd and range.  Every draw's finished folds are kept (``DRAW.folds``) until ``out`` is written, so a stopped run
    goes on from them as a single run does: a kept fold is reused only for the same data, settings and code."""
    from datetime import datetime, timezone

    from .crossval import draws_ensemble, read_predictions, spread
    from .jobs import ResultStore

    seeds = list(range(args.reframe_seed, args.reframe_seed + args.reframe_draws))
    paths = [draw_path(out, seed) for seed in seeds]
    draws = []
    for i, (seed, path) in enumerate(zip(seeds, paths), 1):
        print(f"draw {i} of {len(seeds)} (--reframe-seed {seed}) → {path}")
        rc, result = _crossval_run(argparse.Namespace(**{**vars(args), "reframe_seed": seed}), path, keep_folds=True)
        if rc:
            return rc
        draws.append({"reframe_seed": seed, "file": path.name, "balanced_accuracy": result["balanced_accuracy"],
                      "accuracy": result["accuracy"], "auc": result["auc"], "recall": result["recall"],
                      "false_alarm_other": result.get("false_alarm_other"), "n_images": result["n_images"],
                      "n_people": result["n_people"], "n_failed": result["n_failed"],
                      "resumed_folds": result.get("resumed_folds", [])})
    columns = {"balanced_accuracy": [d["balanced_accuracy"] for d in draws], "auc": [d["auc"] for d in draws],
               **{f"recall_{c}": [d["recall"][c] for d in draws] for c in draws[0]["recall"]}}
    if draws[0]["false_alarm_other"] is not None:
        columns["false_alarm_other"] = [d["false_alarm_other"] for d in draws]
    summary = {"data": str(args.data or "demo"), "task": args.task, "model": args.model, "reframe": args.reframe,
               "reframe_seeds": seeds,
               # the command's own arguments: the first seed and the number of draws (a draw's JSON records its seed)
               "arguments": {**_result_arguments(args), "reframe_draws": args.reframe_draws},
               "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "what": (f"the same cross-validation {len(seeds)} times, each photo translated by its own whole-pixel "
                        f"offset of at most {args.reframe} px per axis before FaceMesh measures it (a new offset "
                        "each draw): the spread is FaceMesh's measurement of the same photos, not a sampling of "
                        "people; each draw's intervals by person are in its own file"),
               "spread": {name: spread(values) for name, values in columns.items()}, "draws": draws}
    if args.task != "7class":  # two classes: the draws' models as one ensemble (TRAINING_DETAIL section 7 item 21)
        table, summary["ensemble"] = draws_ensemble([read_predictions(predictions_path(p)) for p in paths])
        table.to_csv(predictions_path(out), index=False, encoding="utf-8-sig")
        summary["ensemble"]["predictions_file"] = predictions_path(out).name
    out.write_text(json.dumps(summary, ensure_ascii=False, indent=1, default=float))

    def line(name):
        s = summary["spread"][name]
        sd = f" ± {s['sd']:.3f}" if s["sd"] is not None else ""
        return f"{s['mean']:.3f}{sd} ({s['min']:.3f}–{s['max']:.3f})"

    print(f"{_run_name(args)}, {args.task}, re-framed by at most {args.reframe} px, {len(seeds)} draws (--reframe-seed "
          f"{seeds[0]}–{seeds[-1]}): balanced accuracy {line('balanced_accuracy')}, AUC {line('auc')}"
          + "".join(f", recall {name[7:]} {line(name)}" for name in columns if name.startswith("recall_"))
          + (f", false alarms on other expressions {line('false_alarm_other')}" if "false_alarm_other" in columns else ""))
    if "ensemble" in summary:
        e = summary["ensemble"]

        def num(v):  # no AUC or recall where the photos scored in every draw lack a class
            return "—" if v is None else f"{v:.3f}"

        print(f"the {len(seeds)} draws as one ensemble (each photo's margin over its fold's threshold, averaged; "
              f"{e['n_images']} photos scored in every draw): balanced accuracy {e['balanced_accuracy']:.3f}, AUC "
              f"{num(e['auc'])}, recall {', '.join(f'{k} {num(v)}' for k, v in e['recall'].items())}"
              + (f", false alarms on other expressions {e['false_alarm_other']:.3f}"
                 if e["false_alarm_other"] is not None else ""))
    for path in paths:  # every draw is written: their kept folds are done with
        ResultStore(fold_store_path(path)).clear()
    print(f"wrote {out} (mean, sd and range over the draws{', and their ensemble' if 'ensemble' in summary else ''}) "
          "and each draw's JSON beside it")
    return 0


def _crossval_run(args, out: Path, keep_folds: bool = False) -> tuple[int, dict | None]:
    """One cross-validation, written to ``out`` and its per-photo table → (exit code, the result written).  Its
    finished folds are removed once ``out`` is written, unless ``keep_folds`` (the caller removes them)."""
    from datetime import datetime, timezone

    from .crossval import Protocol, crossval, prepare, with_photo_columns
    from .jobs import ResultStore
    from .model import ModelConfig
    from .normalize import NormalizeSettings
    from .selection import DEFAULT_LINEAR_PATH, DEFAULT_MODEL_CONFIG, MIN_PER_CLASS_FOR_THRESHOLD
    from .train import TrainConfig

    store = ResultStore(fold_store_path(out))  # the finished folds, until the results are written
    if args.fresh:
        store.clear()
    df = _index(args)
    chosen = _sample(args, df)
    table, landmarks = ex.extract(chosen, _extract_settings(args), workers=args.workers, cache=args.cache)
    protocol = Protocol(task=args.task, policy=args.policy, calibration=args.calibration, features=args.features,
                        normalization=NormalizeSettings(args.normalization, align=args.normalization == "kit" and not args.no_align))
    data = prepare(table, landmarks, protocol)
    more = _train_measurements(args, chosen, protocol)
    extra, extra_info = _extra_training(args, protocol) if args.extra_train else (None, None)
    train_config = TrainConfig(epochs=args.epochs) if args.epochs else TrainConfig()
    # --linear-path none / choose are model configs (ModelConfig.linear_skip), with the path trained where there is
    # one; auto / trained / fitted say how the path of the default config gets its weights.
    model_config = {"none": ModelConfig(linear_skip=False),
                    "choose": (ModelConfig(linear_skip=False), ModelConfig(linear_skip=True))}.get(
                        args.linear_path, DEFAULT_MODEL_CONFIG)
    linear_path = (args.linear_path if args.linear_path in ("fitted", "trained", "auto")
                   else "trained" if args.linear_path in ("none", "choose") else DEFAULT_LINEAR_PATH)
    result = crossval(data, folds=args.folds, model=args.model, seed=args.seed, inner_folds=args.inner_folds,
                      model_config=model_config, train_config=train_config, layouts=args.layouts,
                      ensemble=args.ensemble, mirror=args.mirror, linear_path=linear_path,
                      min_recall=args.min_recall, workers=args.workers, fold_store=store.folder, extra=extra,
                      extra_centre=args.extra_centre, train_on=args.train_on, identity_dims=args.identity_dims,
                      train_measurements=more, measurement_weight=args.train_reframes_weight, c_grid=args.c_grid)
    if extra_info is not None:
        result["extra_train"] = {**extra_info, **result["extra_train"]}
    unmapped = df["problem"].fillna("").str.contains("label map|not an emotion name", regex=True)
    result = {"data": str(args.data or "demo"), "source": ", ".join(sorted(set(df["source"]))),
              "label_policy": args.policy, "n_unmapped": int(unmapped.sum()),
              "unmapped_labels": sorted(set(df.loc[unmapped, "raw_label"].dropna())) if "raw_label" in df else [],
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "remeasure": args.remeasure, "reframe": args.reframe, "reframe_seed": args.reframe_seed,
              **({"train_reframes": {"k": args.train_reframes, "px": _train_reframe_px(args),
                                     "reframe_seeds": _train_reframe_seeds(args),
                                     "weight": args.train_reframes_weight}} if args.train_reframes else {}),
              "arguments": _result_arguments(args), **result}
    predictions = with_photo_columns(pd.DataFrame(result.pop("predictions")), table)
    result["predictions_file"] = predictions_path(out).name  # beside the JSON
    text = json.dumps(result, ensure_ascii=False, indent=1, default=float)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        predictions.to_csv(predictions_path(out), index=False, encoding="utf-8-sig")
        out.write_text(text)
    except OSError as exc:  # the folder changed during the run: keep the results somewhere
        import tempfile

        kept = Path(tempfile.mkdtemp(prefix="facekit-crossval-")) / out.name
        predictions.to_csv(predictions_path(kept), index=False, encoding="utf-8-sig")
        kept.write_text(text)
        print(f"error: cannot write {out} ({exc}); the per-photo table is kept in {predictions_path(kept)} "
              f"and the results are kept in {kept}", file=sys.stderr)
        return 1, None
    if not keep_folds:
        store.clear()
    recall = ", ".join(f"{k} {v:.3f}" for k, v in result["recall"].items())
    print(f"{_run_name(args)}, {args.task}, folds {args.folds}: balanced accuracy {result['balanced_accuracy']:.3f}, "
          f"accuracy {result['accuracy']:.3f}, recall {recall}, AUC {result['auc']:.3f} "
          f"({result['n_images']} photos of {result['n_people']} people, {result['n_failed']} without landmarks)")
    if result.get("false_alarm_other") is not None:
        print(f"false alarms on other expressions: {result['false_alarm_other']:.3f}")
    if "balanced_threshold" in result:
        alt = result["balanced_threshold"]
        print(f"the same models at the balanced-accuracy thresholds: balanced accuracy {alt['balanced_accuracy']:.3f}, "
              f"recall {', '.join(f'{k} {v:.3f}' for k, v in alt['recall'].items())}"
              + (f", false alarms {alt['false_alarm_other']:.3f}" if alt.get("false_alarm_other") is not None else ""))
        thin = result.get("min_recall_thin_folds") or []
        if thin:
            fewest = min(f["threshold_n_anxious"] for f in result["folds_detail"] if f["fold"] in thin)
            print(f"warning: in {len(thin)} of {len(result['folds_detail'])} folds the --min-recall cut rests on fewer "
                  f"than {MIN_PER_CLASS_FOR_THRESHOLD} anxious validation photos (as few as {fewest}): it may land far from the recall asked "
                  "for on new people; more inner folds (--inner-folds) give it more photos")
    print(f"wrote {out} and {predictions_path(out).name} (every photo's out-of-fold probabilities) beside it")
    return 0, result


REMEASURE_HELP = ("FaceMesh measures each photo this many times (as it is and shifted by a few pixels) and the "
                  "landmarks are averaged: less measurement noise, about K times FaceMesh's share of the time; "
                  "default 1, once (on JAFFE and CK+ it helped one and hurt the other: TRAINING_DETAIL section 7 item 18)")


REFRAME_HELP = ("a robustness check, not a way to extract: translate each photo by its own whole-pixel offset, "
                "each axis drawn from -PX..PX (by --reframe-seed and the photo's pixels), before FaceMesh measures "
                "it, and move the landmarks back; runs with several seeds show how much of a figure is FaceMesh's "
                "measurement (TRAINING_DETAIL section 7 item 19); default 0, the photo as it is")


TRAIN_REFRAMES_HELP = ("train on K more measurements of every training photo: FaceMesh measures it re-framed by at "
                       "most --train-reframe-px px (default: --reframe's), with --reframe-seed S+1 … S+K (S: this "
                       "run's --reframe-seed, 0 for the photos as stored); held-out photos are still scored on one "
                       "measurement, the run's own; costs K more FaceMesh runs a photo (cached) and K+1 times the "
                       "training rows (TRAINING_DETAIL section 7 item 23); default 0")


def _train_reframe_px(args) -> int:
    """``--train-reframes``' largest shift in pixels: ``--train-reframe-px``, else ``--reframe``'s."""
    px = args.train_reframe_px if args.train_reframe_px is not None else args.reframe
    if not px:
        raise ValueError(f"--train-reframes {args.train_reframes} measures each training photo re-framed by at most "
                         "PX px: give --train-reframe-px PX (e.g. 2 for JAFFE's 256-pixel photos, 4 for CK+'s), or "
                         "--reframe PX to use the run's own")
    return px


def _train_reframe_seeds(args) -> list[int]:
    return list(range(args.reframe_seed + 1, args.reframe_seed + args.train_reframes + 1))


def _train_measurements(args, chosen, protocol) -> list | None:
    """``--train-reframes K``: the photos of ``chosen`` measured K more times, re-framed, each prepared under
    ``protocol`` (:func:`facekit.crossval.crossval`'s ``train_measurements``); ``None`` without it."""
    from .crossval import prepare

    if not args.train_reframes:
        return None
    px = _train_reframe_px(args)
    more = []
    for seed in _train_reframe_seeds(args):
        print(f"training measurements: the photos re-framed by at most {px} px, --reframe-seed {seed}")
        settings = replace(_extract_settings(args), reframe=px, reframe_seed=seed)
        table, landmarks = ex.extract(chosen, settings, workers=args.workers, cache=args.cache)
        more.append(prepare(table, landmarks, protocol))
    return more


def _extract_settings(args) -> ex.ExtractSettings:
    """The landmark settings of ``--remeasure``, ``--reframe`` and ``--reframe-seed``."""
    return ex.ExtractSettings(remeasure=args.remeasure, reframe=args.reframe, reframe_seed=args.reframe_seed)


def _add_measure_args(p) -> None:
    p.add_argument("--remeasure", type=_positive_int, default=1, metavar="K", help=REMEASURE_HELP)
    p.add_argument("--reframe", type=_natural, default=0, metavar="PX", help=REFRAME_HELP)
    p.add_argument("--reframe-seed", type=_natural, default=0, metavar="N",
                   help="the seed of --reframe's offsets (each seed one draw of them)")


def _run_name(args) -> str:
    """The model and, where they are not the default coordinates, the features, as a run's printed summary names
    them (a log of several runs then says which is which)."""
    return args.model + {"xy": " on the x, y coordinates", "measures": " on the expression measures"}.get(
        args.features, "")


def _c_grid(text: str) -> list[float]:
    """argparse type: a comma-separated list of positive numbers."""
    from .selection import c_grid_tuple

    try:
        return list(c_grid_tuple(t for t in text.split(",") if t.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive numbers separated by commas, e.g. 0.001,0.01,0.1,1,10; "
                                         f"got {text!r}") from None


def _natural(text: str) -> int:
    """argparse type: a whole number >= 0."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def predictions_path(out: Path) -> Path:
    """Where ``crossval --out FILE.json`` writes its per-photo table: ``FILE.predictions.csv`` beside it."""
    return out.with_name(out.stem + ".predictions.csv")


def _extra_training(args, protocol):
    """``--extra-train``'s data sets, indexed, extracted and prepared under ``protocol`` (a :class:`Prepared`
    each: ``--extra-centre`` places each set on its own), and what the JSON says of them.  Their person names
    are kept as they are: they serve only to warn of a name that the cross-validated data has too (and to count
    people, so two extra sets that use one name for different people count them once)."""
    from .crossval import prepare

    data_path = Path(args.data).expanduser().resolve() if args.data not in (None, "demo") else None
    prepared, sources = [], []
    for path in args.extra_train:
        if data_path is not None and Path(path).expanduser().resolve() == data_path:
            raise ValueError(f"--extra-train {path} is the data cross-validated itself: give another data set, "
                             "of other people")
        df = load_index(path, pattern=args.extra_pattern,
                        label_map=parse_label_map(args.extra_label_map) or None)
        chosen = _sample(argparse.Namespace(per_zip=args.per_zip, seed=args.seed, data=path), df)
        table, landmarks = ex.extract(chosen, _extract_settings(args), workers=args.workers, cache=args.cache)
        prepared.append(prepare(table, landmarks, protocol))
        sources.append({"data": str(path), "source": ", ".join(sorted(set(df["source"]))), "n_rows": int(len(table))})
    return prepared, {"sets": sources}


def cmd_bench(args) -> int:
    from .bench import format_table, run

    report = run(quick=args.quick, out=args.out, checkpoint=args.checkpoint)
    print(format_table(report))
    print(f"wrote {report['out']}")
    return 0


def cmd_serve(args) -> int:
    from .server import serve_command

    return serve_command(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facekit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("index", help="scan a dataset and print what is there")
    _add_data_args(p)
    p.add_argument("--out", help="write the index as CSV")
    p.set_defaults(func=cmd_index)
    p = sub.add_parser("extract", help="sample and extract landmarks into the cache")
    _add_data_args(p)
    p.add_argument("--per-zip", type=int, default=DEFAULT_CAP, help="photos per ZIP at most (per emotion in an image folder; 0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: every core)")
    p.add_argument("--draft-long-side", type=int, default=ex.ExtractSettings().draft_long_side,
                   help="JPEGs are decoded at the coarsest of 1/2, 1/4, 1/8 scale (libjpeg's DCT scaling) whose long "
                        "side stays at least this many pixels (0: full-size decode)")
    p.add_argument("--min-face-side", type=int, default=ex.ExtractSettings().min_face_side,
                   help="where a photo has a labelled face box (AI Hub), decode coarser still while the box's "
                        "shorter side stays at least this many pixels (0: boxes never change the scale)")
    _add_measure_args(p)
    p.add_argument("--cache", default=None, help="landmark cache folder (default: $FACEKIT_CACHE or data/cache)")
    p.add_argument("--out", help="also write table.csv and landmarks.npy here")
    p.set_defaults(func=cmd_extract)
    p = sub.add_parser("crossval", help="cross-validate by person (leave-one-person-out or K folds)")
    _add_data_args(p)
    p.add_argument("--out", required=True, help="JSON file for the results")
    p.add_argument("--task", default="binary", choices=("binary", "anxious-vs-rest", "7class"))
    p.add_argument("--folds", default="loso", help="'loso' or a number of folds by person")
    p.add_argument("--model", default="resnet-mlp", choices=("resnet-mlp", "logreg", "majority"))
    p.add_argument("--calibration", default="none", choices=("none", "personal-neutral"))
    p.add_argument("--policy", default="uploader", choices=("uploader", "majority", "unanimous"))
    p.add_argument("--features", default="xyz", choices=("xyz", "xy", "measures"),
                   help="what the models are given: landmark coordinates (xyz, where the inner folds may still "
                        "choose xy, see --layouts, or xy) or 16 expression measures, distances that facial actions "
                        "change (measures; facekit.measures; mirroring then has nothing to add)")
    p.add_argument("--ensemble", type=int, default=1,
                   help="ResNet MLP: average this many networks (seeds) per fold, retrained on the chosen settings")
    p.add_argument("--layouts", default="auto",
                   help="feature layouts the inner folds choose between: auto (xyz and xy), xyz, xy or xyz,xy")
    p.add_argument("--mirror", default="auto", choices=("auto", "on", "off"),
                   help="train on the faces' mirror images too: auto (the inner folds choose), on or off")
    p.add_argument("--linear-path", default=None, choices=("auto", "trained", "fitted", "none", "choose"),
                   help="ResNet MLP's linear path: auto (the default: the inner folds choose trained or fitted), "
                        "trained (with the rest of the network), fitted (the logistic regression chosen on the "
                        "inner folds, frozen; the deep part learns the rest), none (no linear path, the model of "
                        "the first sessions) or choose (the inner folds choose with or without a trained path)")
    p.add_argument("--min-recall", type=float, default=None,
                   help="two classes: choose each fold's threshold as the highest cut whose anxious recall on the "
                        "inner folds' held-out people is at least this (e.g. 0.8), instead of the one maximising "
                        "balanced accuracy; the JSON also reports what that default threshold gives")
    p.add_argument("--normalization", default="kit", choices=("kit", "seed"))
    p.add_argument("--no-align", action="store_true", help="kit normalisation without rotation alignment")
    p.add_argument("--inner-folds", default="auto", help="model selection folds inside each training part")
    p.add_argument("--epochs", type=int, default=None, help="ResNet MLP training schedule in epochs (default: TrainConfig's)")
    p.add_argument("--per-zip", type=int, default=0, help="photos per ZIP at most (0: all)")
    _add_measure_args(p)
    p.add_argument("--reframe-draws", type=_positive_int, default=None, metavar="N",
                   help="with --reframe PX: run N draws (--reframe-seed S … S+N-1), each draw's JSON beside --out "
                        "(OUT.reframe-seedK.json), and write to --out their mean, sd and range: how far the "
                        "figures move when FaceMesh measures the same photos framed a pixel or two differently, and "
                        "(two classes) the draws' models as one ensemble, each photo decided by its mean margin "
                        "(OUT.predictions.csv); every draw's finished folds are kept until then, so a stopped run "
                        "goes on from them")
    p.add_argument("--train-reframes", type=_natural, default=0, metavar="K", help=TRAIN_REFRAMES_HELP)
    p.add_argument("--train-reframe-px", type=_positive_int, default=None, metavar="PX",
                   help="how far --train-reframes re-frames the training photos, at most PX px per axis (default: "
                        "--reframe's PX)")
    p.add_argument("--train-reframes-weight", default="row", choices=("row", "photo"),
                   help="what --train-reframes' measurements weigh in logistic regression's loss (the model's, or the "
                        "MLP's fitted linear path): row (default), each as much as a photo; photo, a photo's K+1 "
                        "measurements together as much as one photo, so that C keeps its meaning per photo")
    p.add_argument("--c-grid", type=_c_grid, default=None, metavar="C,C,…",
                   help="the Cs logistic regression's inner folds choose among (its own, or the ResNet MLP's fitted "
                        "linear path's); default 0.003,0.01,0.03,0.1,0.3,1 (TRAINING_DETAIL section 7 item 24)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None,
                   help="processes that extract the landmarks, then train the outer folds side by side (default: "
                        "every core); the torch threads (OMP_NUM_THREADS, else one per core) are shared among them, "
                        "and with one thread per fold the numbers are those of --workers 1 with OMP_NUM_THREADS=1")
    p.add_argument("--extra-train", action="append", default=[], metavar="DATA",
                   help="another data set (an AI Hub root, a preset folder, or a folder with --extra-pattern) whose "
                        "photos, all of other people, are added to the training side of every outer and inner fold "
                        "and never validated or tested on; may be given more than once")
    p.add_argument("--extra-pattern", default=None, help="--pattern for the --extra-train folders")
    p.add_argument("--extra-label-map", default="", help="--label-map for the --extra-train folders")
    p.add_argument("--train-on", default="task", choices=("task", "emotions"),
                   help="anxious-vs-rest: train on the task's two classes (task) or on every emotion present, each a "
                        "class of its own (emotions), scoring, choosing and thresholding P(anxious) either way")
    p.add_argument("--identity-dims", default="off", metavar="off|auto|K",
                   help="remove from every face the K directions along which the training people's faces differ most "
                        "(learned from each training side's people alone, their emotions' mean faces taken out first; "
                        "a held-out face is projected alone): off (the default), auto (logistic regression's inner "
                        "folds choose K among 0, 4 and 16; the ResNet MLP uses its choice) or a count K")
    p.add_argument("--extra-centre", default="none", choices=("none", "neutral"),
                   help="how each --extra-train set is placed before pooling: none (as it is) or neutral (on every "
                        "training side, moved so that the mean of its neutral faces is the mean of that side's own "
                        "neutral faces: removes a set's offset of capture or population)")
    p.add_argument("--cache", default=None)
    p.add_argument("--fresh", action="store_true",
                   help="train every fold anew: an interrupted run keeps its finished folds beside --out (OUT.folds) "
                        "and the same command goes on from them unless this is given")
    p.set_defaults(func=cmd_crossval)
    p = sub.add_parser("bench", help="benchmark every stage against FaceMesh alone and the original design")
    p.add_argument("--quick", action="store_true", help="less of everything: about 1½ minutes here instead of about 4")
    p.add_argument("--out", default=None, help="JSON report (default: reports/bench.json, or $FACEKIT_REPORTS)")
    p.add_argument("--checkpoint", default=None, help="model for the per-frame path (default: weights/demo_binary.pt)")
    p.set_defaults(func=cmd_bench)
    from .server import add_arguments as add_serve_arguments  # no web framework imported until it serves

    p = sub.add_parser("serve", help="the inference server (FastAPI) and its web page; needs the 'serve' extra")
    add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError) as exc:  # FileNotFoundError, NotADirectoryError, an --out not writable
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        store = fold_store_path(args.out) if args.command == "crossval" else None
        if store is not None and args.reframe_draws and args.reframe:
            out = Path(args.out).expanduser()
            store = f"{fold_store_path(draw_path(out, args.reframe_seed))} and the other draws' DRAW.folds beside it"
        done = (f"the landmarks extracted so far are cached and the folds finished so far are kept in "
                f"{store}; run the same command again to go on from them"
                if args.command == "crossval" else "finished photos are cached; run the same command again to resume")
        print(f"interrupted: {done}", file=sys.stderr)
        return 130
