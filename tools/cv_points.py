"""Where the fear scores of cross-validation runs could be cut: the run's own operating point against the pooled
curve's bounds (a cut chosen with the test people's labels: a diagnostic of the ranking, never a result), and the
ranking within each person against the pooled one (:func:`facekit.evaluate.operating_points`).

    .venv/bin/python tools/cv_points.py reports/cv/jaffe_avr.predictions.csv [...] [--max-false-alarm 0.25] [--min-recall 0.8]
"""
import argparse

from facekit.crossval import read_predictions
from facekit.evaluate import operating_points

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("files", nargs="+", help="crossval's FILE.predictions.csv")
ap.add_argument("--max-false-alarm", type=float, default=0.25)
ap.add_argument("--min-recall", type=float, default=0.8)
args = ap.parse_args()
print(f"| run | fear recall / false alarms, each fold's own cut | AUC (fear vs the rest) | mean AUC within a person (lowest) "
      f"| pooled single cut: best recall at false alarms ≤ {args.max_false_alarm:g} (false alarms, neutral) "
      f"| pooled single cut: false alarms for recall {args.min_recall:g} |")
print("|---|---|---|---|---|---|")
for path in args.files:
    o = operating_points(read_predictions(path), args.max_false_alarm, args.min_recall)
    best = (f"{o['best_recall']:.2f} ({o['best_false_alarm']:.3f}, {o['best_neutral']:.2f})"
            if o["best_false_alarm"] is not None else "none")
    need = "—" if o["false_alarm_for_min_recall"] is None else f"{o['false_alarm_for_min_recall']:.3f}"
    within = "—" if o["within_person_auc"] is None else f"{o['within_person_auc']:.3f} ({o['within_person_auc_min']:.2f})"
    print(f"| {path.rsplit('/', 1)[-1].removesuffix('.predictions.csv')} | {o['recall']:.2f} / {o['false_alarm']:.3f} "
          f"| {o['auc']:.3f} | {within} | {best} | {need} |")
