"""How much of a neutral-vs-fear cross-validation figure is FaceMesh's re-measurement noise (TRAINING_DETAIL section 7
item 18): the same photos measured again, each shifted by its own random whole-pixel offset (|dx|, |dy| <= --max-shift,
edge pixels repeated, the landmarks moved back), over several draws, each scored by one fixed logistic regression
(standardised x, y coordinates, C = 0.03, balanced class weights, threshold 0.5) on the same folds by person.

    .venv/bin/python tools/shift_spread.py ../shared/datasets/jaffe --max-shift 2 --draws 12
    .venv/bin/python tools/shift_spread.py ../shared/datasets/ckplus --max-shift 4 --draws 6
    .venv/bin/python tools/shift_spread.py ../shared/datasets/jaffe --max-shift 8 --draws 12 --remeasure 8

With ``--remeasure K`` each shifted photo is measured as ``ExtractSettings(remeasure=K)`` measures it (K times around
its offset, averaged), so the draws show what averaging does where every photo is framed a little differently.

With ``--common`` every photo of a draw gets the *same* offset (each of the (2·S + 1)² offsets once, ``--draws``
ignored), so the draws say whether the stored framing itself is favoured or only the photos being framed alike:

    .venv/bin/python tools/shift_spread.py ../shared/datasets/jaffe --max-shift 2 --common

A diagnostic of the measurement, not a result: the model is fixed, not chosen on inner folds as crossval's are.
"""
import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from facekit import extract as ex
from facekit.normalize import NormalizeSettings, flatten, normalize
from facekit.sources import load_index

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("data", help="a jaffe or ckplus folder, or any source load_index reads")
ap.add_argument("--max-shift", type=int, default=2, help="largest offset in pixels, each axis")
ap.add_argument("--draws", type=int, default=12)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--remeasure", type=int, default=1, help="measure each shifted photo as ExtractSettings(remeasure=K)")
ap.add_argument("--common", action="store_true", help="one offset per draw for every photo: each offset in the grid once")
args = ap.parse_args()

index = load_index(args.data)
index = index[index["emotion"].isin(["중립", "불안"])].reset_index(drop=True)

def measure(rgb: np.ndarray, dx: int, dy: int, remeasure: int = 1) -> np.ndarray | None:
    """Pixel-unit landmarks of the face in ``rgb`` shifted by (dx, dy), moved back; None without one face."""
    try:
        face = ex.landmarks_from_rgb(ex.shifted(rgb, dx, dy), ex.ExtractSettings(remeasure=remeasure)).astype(np.float64)
    except ex.PhotoError:
        return None
    return face - np.array([dx, dy, 0.0])


photos = [ex.decode(ex.read_bytes(r.container, r.member))[0] for r in index.itertuples()]
stored = [measure(rgb, 0, 0) for rgb in photos]  # once, as the kit measures by default
keep = [i for i, lm in enumerate(stored) if lm is not None]
y = (index["emotion"] == "불안").to_numpy(int)[keep]
groups = index["person"].astype(str).to_numpy()[keep]
folds = list(GroupKFold(n_splits=min(10, len(set(groups)))).split(y, y, groups))
settings = NormalizeSettings("kit", align=True)


def score(landmarks) -> tuple[float, float]:
    shapes = normalize(np.array(landmarks), settings)
    X = flatten(shapes[:, :, :2])
    p = np.zeros(len(y))
    for tr, te in folds:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.03, max_iter=5000, class_weight="balanced"))
        p[te] = model.fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]
    return roc_auc_score(y, p), balanced_accuracy_score(y, p > 0.5)


rng = np.random.default_rng(args.seed)
base = score([stored[i] for i in keep])
draws = []
if args.common:
    grid = range(-args.max_shift, args.max_shift + 1)
    for dx, dy in [(dx, dy) for dx in grid for dy in grid]:
        landmarks = [measure(photos[i], dx, dy, args.remeasure) for i in keep]
        if any(lm is None for lm in landmarks):
            print(f"  offset ({dx}, {dy}): a face was lost, left out")
            continue
        draws.append(score(landmarks))
        print(f"  offset ({dx:+d}, {dy:+d}) for every photo: AUC {draws[-1][0]:.3f}  balanced acc. {draws[-1][1]:.3f}")
    args.draws = len(draws)
else:
    for _ in range(args.draws):
        landmarks = []
        for i in keep:
            lm = None
            while lm is None:  # a shift that loses the face is drawn again
                dx, dy = (int(v) for v in rng.integers(-args.max_shift, args.max_shift + 1, 2))
                lm = measure(photos[i], dx, dy, args.remeasure)
            landmarks.append(lm)
        draws.append(score(landmarks))
draws = np.array(draws)
how = "every photo of a draw shifted alike" if args.common else "each photo shifted by its own offset"
print(f"{args.data} (shifts up to {args.max_shift} px, {how}, each shifted photo measured {args.remeasure} time(s)): {len(y)} photos ({y.sum()} fear), {len(folds)} folds by person")
print(f"  as stored:             AUC {base[0]:.3f}  balanced acc. {base[1]:.3f}")
for j, name in enumerate(("AUC", "balanced acc.")):
    v = draws[:, j]
    print(f"  {args.draws} shifted draws, {name}: mean {v.mean():.3f} (sd {v.std(ddof=1):.3f}, {v.min():.3f}–{v.max():.3f}); "
          f"{int((v >= base[j]).sum())} of {args.draws} at or above the stored photos'")
