"""Print the cross-validation results in reports/cv/*.json as a Markdown table (for TRAINING_DETAIL.md).

    .venv/bin/python tools/cv_table.py [reports/cv]
"""
import json
import sys
from pathlib import Path

from facekit.selection import SelectedLogReg


def grid_label(grid, chosen: str = "") -> str:
    """A --c-grid as the table names it, in a single run's row and a --reframe-draws summary's alike."""
    return f"C grid {min(grid):g}–{max(grid):g} ({len(grid)} values{chosen})"


folder = Path(sys.argv[1] if len(sys.argv) > 1 else "reports/cv")
print("| data | task | protocol | model | folds | layouts chosen | photos / people | balanced acc. (95% CI by person) | accuracy "
      "| recall (neutral or rest / anxious) | AUC | false alarms on other emotions | minutes |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for path in sorted(folder.glob("*.json")):
    r = json.loads(path.read_text())
    if "spread" in r:  # a --reframe-draws summary: its draws are rows of their own; here their spread and ensemble
        b, e = r["spread"]["balanced_accuracy"], r.get("ensemble")
        sd = f" ± {b['sd']:.3f}" if b["sd"] is not None else ""
        ens = (f"; the {b['n']} as one ensemble {e['balanced_accuracy']:.3f} (AUC {e['auc']:.3f}, recall "
               f"{' / '.join(f'{v:.2f}' for v in e['recall'].values())})" if e else "")
        a = r.get("arguments", {})
        flags = "".join(f" --{k.replace('_', '-')} {a[k]}" for k, default in (
            ("linear_path", None), ("identity_dims", "off"), ("remeasure", 1), ("train_on", "task"),
            ("calibration", "none"), ("mirror", "auto"), ("seed", 0), ("train_reframes", 0),
            ("train_reframes_weight", "row"), ("features", "xyz")) if k in a and a[k] != default)
        if a.get("c_grid") and tuple(a["c_grid"]) != SelectedLogReg.GRID:  # --c-grid C,C,…, as a single run's row says
            flags += f", {grid_label(a['c_grid'])}"
        print(f"| {Path(r['data']).name} | {r['task']} | — | {r['model']}{flags}, re-framed by at most {r['reframe']} px: "
              f"{b['n']} draws (seeds {r['reframe_seeds'][0]}–{r['reframe_seeds'][-1]}) | — | — | — "
              f"| {b['mean']:.3f}{sd} ({b['min']:.3f}–{b['max']:.3f}){ens} | — | — "
              f"| {r['spread']['auc']['mean']:.3f} | — | — |")
        continue
    ci = r.get("balanced_accuracy_ci95") or [float("nan")] * 2
    rec = r["recall"]
    neg, pos = list(rec.values())[0], rec.get("anxious", float("nan"))
    fa = r.get("false_alarm_other")
    model = r["model"] + (f" ×{r['protocol']['ensemble']}" if (r["protocol"].get("ensemble") or 1) > 1 else "")
    if r["protocol"].get("inner_folds") not in (None, "auto"):
        model += f" (inner {r['protocol']['inner_folds']})"
    if r["protocol"].get("linear_path") == "auto":  # which way of making the linear path the inner folds chose
        paths = [f.get("linear_path") for f in r.get("folds_detail", [])]
        model += f", linear path auto (fitted {paths.count('fitted')}, trained {paths.count('trained')})"
    if r.get("extra_train"):  # other people added to every training side (--extra-train)
        sets = ", ".join(Path(x["data"]).name for x in r["extra_train"].get("sets", [])) or "extra data"
        model += f", + {sets} in training ({r['extra_train']['n_images']} photos / {r['extra_train']['n_people']} people)"
        if r["extra_train"].get("centre", "none") != "none":  # --extra-centre
            model += f", centred on the {r['extra_train']['centre']} mean"
    if r["protocol"].get("train_on") == "emotions":  # --train-on emotions: every emotion a class of its own
        model += f", trained on {len(r['protocol']['training_classes'])} emotions"
    if r["protocol"].get("identity_dims") not in (None, 0):  # --identity-dims: how many directions each fold removed
        kept = [f.get("identity_dims_removed", 0) for f in r.get("folds_detail", [])]
        counts = ", ".join(f"{k}: {kept.count(k)}" for k in sorted(set(kept)))
        model += f", identity directions {r['protocol']['identity_dims']} (removed {counts})"
    if r["protocol"].get("linear_path") == "fitted":
        alone = sum(f.get("epoch") == 0 for f in r.get("folds_detail", []))  # the linear model alone
        model += f", fitted linear path (alone in {alone})"
    if r.get("remeasure", 1) != 1:  # --remeasure K: each photo measured K times by FaceMesh, averaged
        model += f", each photo measured {r['remeasure']} times"
    if r.get("reframe", 0):  # --reframe PX --reframe-seed N: each photo shifted by its own offset before FaceMesh
        model += f", photos re-framed by at most {r['reframe']} px (draw {r['reframe_seed']})"
    if r.get("train_reframes"):  # --train-reframes K: each training photo also as measured re-framed K more times
        t = r["train_reframes"]
        model += (f", trained on {t['k']} more measurements of each photo (≤ {t['px']} px, seeds "
                  f"{t['reframe_seeds'][0]}–{t['reframe_seeds'][-1]}, weight {t.get('weight', 'row')})")
    grid = r["protocol"].get("c_grid")
    if grid and tuple(grid) != SelectedLogReg.GRID:  # --c-grid: the Cs the inner folds chose among (logistic regression's
        cs = [f.get("C") for f in r.get("folds_detail", []) if f.get("C") is not None]  # own, or the fitted path's)
        chosen_cs = "; chosen " + ", ".join(f"{c:g}: {cs.count(c)}" for c in sorted(set(cs))) if cs else ""
        model += f", {grid_label(grid, chosen_cs)}"
    chosen = [f.get("layout") for f in r.get("folds_detail", []) if f.get("layout")]
    layouts = ", ".join(f"{k} {chosen.count(k)}" for k in sorted(set(chosen), reverse=True)) or "—"
    minutes = f"{r['runtime_s'] / 60:.1f}"
    if r.get("resumed_folds"):  # runtime_s is the last run's: it did not train these folds
        minutes += f" (the last run only: {len(r['resumed_folds'])} of {r['n_folds']} folds kept from an interrupted one)"
    print(f"| {Path(r['data']).name} | {r['task']} | {r['protocol']['calibration']} | {model} | {r['protocol']['folds']} "
          f"| {layouts} | {r['n_images']} / {r['n_people']} | {r['balanced_accuracy']:.3f} ({ci[0]:.2f}–{ci[1]:.2f}) | {r['accuracy']:.3f} "
          f"| {neg:.2f} / {pos:.2f} | {r['auc']:.3f} | {'—' if fa is None else f'{fa:.2f}'} | {minutes} |")
