"""Cross-validation by person on 16 expression measures instead of the 1,434 landmark coordinates (TRAINING_DETAIL
section 7 item 26): a fixed, small feature set read off the kit's normalised faces, each a distance that a facial
action of FACS changes (brows raised or drawn together, eyes widened, lips stretched, jaw dropped, …), measured on
both sides of the face, averaged, and divided by the distance between the outer eye corners.

    OMP_NUM_THREADS=1 .venv/bin/python tools/measures_cv.py ../shared/datasets/jaffe --model logreg --out F.json
    OMP_NUM_THREADS=1 .venv/bin/python tools/measures_cv.py ../shared/datasets/ckplus --folds 10 --task anxious-vs-rest
    OMP_NUM_THREADS=1 .venv/bin/python tools/measures_cv.py ../shared/datasets/jaffe --reframe 2 --reframe-seed 1

Everything else is ``python -m facekit crossval``'s: the same photos, landmarks (and landmark cache), label policy,
outer and inner folds by person, models (``SelectedLogReg`` / ``SelectedResNetMLP``, their C grid, epochs, linear
path and threshold chosen on the inner folds), and the same JSON (``protocol.features`` says ``measures``).  Only
mirroring is off: the measures are already the same for a face and its mirror image.

Planned on 2026-12-07 at 17:22 UTC (twenty-fourth session), before any run on these measures, and fixed here:
the 16 measures below, both models, the four targets of the training issue on the photos as stored (JAFFE
leave-one-person-out, CK+ 10 folds; binary and anxious-vs-rest; seed 0), and, for every model and target met
as stored, 6 re-framed draws (``--reframe`` 2 px on JAFFE, 4 px on CK+, ``--reframe-seed`` 1–6), a target
counted as met where at least half the draws meet it (the reading of items 19–20).  No other measure set, no
other setting: whatever these runs give is reported.
"""
import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from facekit import extract as ex
from facekit.crossval import Protocol, crossval, prepare
from facekit.normalize import NormalizeSettings
from facekit.sample import sample
from facekit.sources import load_index

# MediaPipe FaceMesh indices, (subject's right side, left side).  Eyes: outer and inner corner, three points of
# the upper and of the lower lid, iris centre.  Brows: inner, middle and outer point of the upper edge.
EYE_OUTER, EYE_INNER = (33, 263), (133, 362)
LID_UPPER = ((160, 159, 158), (387, 386, 385))
LID_LOWER = ((144, 145, 153), (373, 374, 380))
IRIS = (468, 473)
BROW_INNER, BROW_MID, BROW_OUTER = (107, 336), (105, 334), (70, 300)
MOUTH_CORNER = (61, 291)
NOSTRIL = (98, 327)
LIP_TOP, LIP_UPPER_INNER, LIP_LOWER_INNER, LIP_BOTTOM = 0, 13, 14, 17
NOSE_TIP, SUBNASALE, CHIN = 1, 2, 152

#: name → what it measures (the facial action that changes it most)
MEASURES = {
    "brow_inner_height": "inner brow above the inner eye corner (AU1 raises it, AU4 lowers it)",
    "brow_mid_height": "middle of the brow above the eye's centre (AU1+2)",
    "brow_outer_height": "outer brow above the outer eye corner (AU2)",
    "brow_gap": "distance between the two inner brow points (AU4 draws them together)",
    "eye_opening": "upper to lower lid, three points each, over the eye's width (AU5 opens, AU7 narrows)",
    "lid_above_iris": "upper lid above the iris centre (AU5 shows white above the iris)",
    "lid_below_iris": "lower lid below the iris centre (AU7 and AU6 raise it)",
    "mouth_width": "corner to corner (AU20 stretches, AU12 widens)",
    "mouth_opening": "inner upper lip to inner lower lip (AU25, AU26)",
    "jaw_drop": "nose tip to chin (AU26, AU27)",
    "corner_height": "lip corners above the mouth's centre (AU12 raises, AU15 lowers)",
    "corner_to_eye": "lip corner below the lower lid (AU6+12 shorten it, AU15 and AU20 lengthen it)",
    "upper_lip": "outer to inner edge of the upper lip (AU10 and AU23/24 change it)",
    "lower_lip": "inner to outer edge of the lower lip (AU16, AU17)",
    "nose_to_lip": "below the nose to the top of the upper lip (AU10 shortens it)",
    "nostril_width": "between the nostril wings (AU9, AU38)",
}


def measures(shapes: np.ndarray) -> np.ndarray:
    """(N, 478, 3) normalised, aligned faces (x right, y down in the photo) → (N, 16) float32 :data:`MEASURES`,
    each in units of the distance between the outer eye corners, left and right sides averaged."""
    p = np.asarray(shapes, dtype=np.float64)[..., :2]
    x, y = p[..., 0], p[..., 1]
    scale = np.linalg.norm(p[:, EYE_OUTER[0]] - p[:, EYE_OUTER[1]], axis=1)

    def dist(a, b):
        return np.linalg.norm(p[:, a] - p[:, b], axis=1)

    def sides(f):
        return (f(0) + f(1)) / 2

    eye_centre_y = lambda s: (y[:, EYE_OUTER[s]] + y[:, EYE_INNER[s]]) / 2  # noqa: E731
    lower_lid_y = lambda s: y[:, list(LID_LOWER[s])].mean(axis=1)  # noqa: E731
    upper_lid_y = lambda s: y[:, list(LID_UPPER[s])].mean(axis=1)  # noqa: E731
    mouth_centre_y = (y[:, LIP_UPPER_INNER] + y[:, LIP_LOWER_INNER]) / 2
    cols = [
        sides(lambda s: y[:, EYE_INNER[s]] - y[:, BROW_INNER[s]]),
        sides(lambda s: eye_centre_y(s) - y[:, BROW_MID[s]]),
        sides(lambda s: y[:, EYE_OUTER[s]] - y[:, BROW_OUTER[s]]),
        dist(BROW_INNER[0], BROW_INNER[1]),
        sides(lambda s: (lower_lid_y(s) - upper_lid_y(s)) / dist(EYE_OUTER[s], EYE_INNER[s]) * scale),
        sides(lambda s: y[:, IRIS[s]] - upper_lid_y(s)),
        sides(lambda s: lower_lid_y(s) - y[:, IRIS[s]]),
        dist(MOUTH_CORNER[0], MOUTH_CORNER[1]),
        dist(LIP_UPPER_INNER, LIP_LOWER_INNER),
        dist(NOSE_TIP, CHIN),
        sides(lambda s: mouth_centre_y - y[:, MOUTH_CORNER[s]]),
        sides(lambda s: y[:, MOUTH_CORNER[s]] - lower_lid_y(s)),
        dist(LIP_TOP, LIP_UPPER_INNER),
        dist(LIP_LOWER_INNER, LIP_BOTTOM),
        dist(SUBNASALE, LIP_TOP),
        dist(NOSTRIL[0], NOSTRIL[1]),
    ]
    return (np.stack(cols, axis=1) / scale[:, None]).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="an AI Hub root or a preset folder (jaffe, ckplus), as crossval reads it")
    ap.add_argument("--task", default="binary", choices=("binary", "anxious-vs-rest", "7class"))
    ap.add_argument("--model", default="resnet-mlp", choices=("resnet-mlp", "logreg"))
    ap.add_argument("--folds", default="loso")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reframe", type=int, default=0, metavar="PX")
    ap.add_argument("--reframe-seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    started = time.time()
    chosen = sample(load_index(args.data), per_container=None, seed=args.seed)
    table, landmarks = ex.extract(chosen, ex.ExtractSettings(reframe=args.reframe, reframe_seed=args.reframe_seed),
                                  workers=args.workers)
    protocol = Protocol(task=args.task, normalization=NormalizeSettings("kit", align=True))
    data = prepare(table, landmarks, protocol)
    data = replace(data, protocol=replace(protocol, features="measures"),
                   X=measures(data.X.reshape(len(data.X), 478, 3)),
                   X_other=measures(data.X_other.reshape(len(data.X_other), 478, 3)))
    folds = args.folds if args.folds == "loso" else int(args.folds)
    result = crossval(data, folds=folds, model=args.model, seed=args.seed, mirror="off", workers=args.workers)
    result.update({"data": args.data, "measures": list(MEASURES), "reframe": args.reframe,
                   "reframe_seed": args.reframe_seed, "command": " ".join(sys.argv),
                   "minutes": round((time.time() - started) / 60, 1)})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    rec = result.get("recall", {})
    print(f"{args.data} {args.task} {args.model} reframe {args.reframe}/{args.reframe_seed}: balanced accuracy "
          f"{result['balanced_accuracy']:.3f}, recall {rec}, AUC {result.get('auc')}, "
          f"false alarms on other emotions {result.get('false_alarm_other')}, {result['minutes']} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
