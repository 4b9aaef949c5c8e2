"""The spread of `crossval` figures over re-framing draws (TRAINING_DETAIL section 7 item 19): runs that differ only in
`--reframe-seed` are grouped, and each group's balanced accuracy, AUC, fear recall and false alarms are given as mean,
sd and range, with how many draws reach a target; `--paired A B` compares two groups draw by draw (the same seed: the
same landmarks).  (`python -m facekit crossval … --reframe PX --reframe-draws N` gives one setting's spread in one
command; this tool compares settings run apart.)

    .venv/bin/python tools/reframe_spread.py /tmp/cv18/*.json --target 0.85
    .venv/bin/python tools/reframe_spread.py /tmp/cv18/*.json --paired "jaffe binary logreg reframe 2" \
        "jaffe binary resnet-mlp linear-path auto reframe 2"
"""
import argparse
import json
from pathlib import Path

import pandas as pd

from facekit.crossval import spread
from facekit.selection import SelectedLogReg

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("files", nargs="+", help="crossval JSON files")
ap.add_argument("--target", type=float, default=None, help="count the draws whose balanced accuracy is at least this")
ap.add_argument("--paired", nargs=2, metavar=("A", "B"), default=None,
                help="two group labels as printed (or a part that names one): B − A per draw, over the seeds both have")
args = ap.parse_args()

rows = []
for f in args.files:
    if f.endswith(".predictions.csv"):
        continue
    r = json.loads(Path(f).read_text())
    if "balanced_accuracy" not in r:  # e.g. a --reframe-draws summary: its draws are files of their own
        continue
    proto = r["protocol"]
    label = (f"{Path(r['data']).name} {r['task']} {r['model']}"
             + (f" linear-path {proto['linear_path']}" if r["model"] == "resnet-mlp" else "")
             + (f" identity {proto['identity_dims']}" if proto.get("identity_dims") not in (None, 0) else "")
             + (f" train-on {proto['train_on']}" if proto.get("train_on", "task") != "task" else "")
             + (f" remeasure {r['remeasure']}" if r.get("remeasure", 1) != 1 else "")
             + (f" train-reframes {r['train_reframes']['k']}" if r.get("train_reframes") else "")
             + (f" c-grid {min(proto['c_grid']):g}-{max(proto['c_grid']):g} ({len(proto['c_grid'])} values)"
                if proto.get("c_grid") and list(proto["c_grid"]) != list(SelectedLogReg.GRID) else "")
             + f" reframe {r.get('reframe', 0)}")
    recall = r["recall"]
    rows.append({"group": label, "seed": r.get("reframe_seed", 0), "balanced_accuracy": r["balanced_accuracy"],
                 "auc": r["auc"], "recall_anxious": recall.get("anxious"), "false_alarm_other": r.get("false_alarm_other"),
                 "file": Path(f).name})
table = pd.DataFrame(rows).sort_values(["group", "seed"])
twice = table[table.duplicated(["group", "seed"], keep=False)]
if len(twice):  # the same draw given twice (e.g. a copy in another folder) would count twice
    first = twice.iloc[0]
    raise SystemExit(f"[{first['group']}] has --reframe-seed {first['seed']} more than once "
                     f"({', '.join(twice[(twice['group'] == first['group']) & (twice['seed'] == first['seed'])]['file'])}): "
                     "give each draw once")
for group, g in table.groupby("group", sort=True):
    print(f"{group}: {len(g)} draws (seeds {', '.join(map(str, g['seed']))})")
    for col in ("balanced_accuracy", "auc", "recall_anxious", "false_alarm_other"):
        s = spread(g[col].dropna().astype(float))
        if s["n"]:
            sd = f"{s['sd']:.3f}" if s["sd"] is not None else "—"
            print(f"  {col:18s} mean {s['mean']:.3f}  sd {sd}  range {s['min']:.3f}–{s['max']:.3f}")
    if args.target is not None:
        print(f"  balanced accuracy >= {args.target}: {int((g['balanced_accuracy'] >= args.target).sum())} of {len(g)} draws")
if args.paired:
    def pick(part):
        groups = [g for g in table["group"].unique() if g == part] or [g for g in table["group"].unique() if part in g]
        if len(groups) != 1:
            raise SystemExit(f"--paired {part!r} matches {len(groups)} groups: {groups}")
        return table[table["group"] == groups[0]].set_index("seed")["balanced_accuracy"], groups[0]
    (a, name_a), (b, name_b) = pick(args.paired[0]), pick(args.paired[1])
    both = a.index.intersection(b.index)
    diff = (b[both] - a[both])
    print(f"paired, balanced accuracy, [{name_b}] − [{name_a}] over seeds {', '.join(map(str, both))}:")
    print("  " + ", ".join(f"{d:+.3f}" for d in diff))
    s = spread(diff)
    sd = f"{s['sd']:.3f}" if s["sd"] is not None else "—"
    print(f"  mean {s['mean']:+.3f}  sd {sd}; B at least A in {int((diff >= 0).sum())} of {len(diff)} draws")
