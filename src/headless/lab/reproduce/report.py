"""`headless report PIECE.json ...`: merge the pieces of one study into tables and curves.

Pieces may come from several runs or machines; the merge does not depend on their order.  Pieces of
different studies, data, evaluation data, comparison modes or budgets are refused with one line,
since a table across them would compare unlike things.  Scores are mean ± sample std over every
value available (fine-tuning seeds x pretraining seeds); `n` says how many.
"""

from __future__ import annotations

import json
import math
import statistics
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headless.errors import HeadlessError
from headless.files import atomic_write, atomic_write_json
from headless.lab.reproduce.evaluate import covered_languages, with_glue_averages, without_rte
from headless.lab.reproduce.piece import PIECE_FORMAT, time_unit
from headless.train.plateau import plateau_text

REPORT_FORMAT = "headless-reproduce-report/1"

# per study: (headless variant, vanilla variant) compared, and the headline metrics (key, label, higher is better)
HEADLINE: dict[str, dict[str, Any]] = {
    "decoder": {"pair": ("hlm_ft", "vanilla"),
                "metrics": [("lambada_acc", "LAMBADA accuracy (%)", True),
                            ("heldout_ce", "held-out cross-entropy (nats/token)", False),
                            ("heldout_bpb", "held-out bits per byte (tokenizers compared)", False),
                            ("heldout_bpb_languages", "held-out bits per byte, mean over languages (XNLI "
                                                      "sentences)", False)]},
    "encoder": {"pair": ("headless", "vanilla"),
                "metrics": [("glue_avg", "GLUE average (%)", True),
                            ("glue_avg_no_rte", "GLUE average without RTE, as the paper's Tab. 1 (%)", True)]},
    "multilingual": {"pair": ("headless", "vanilla"),
                     "metrics": [("xnli_all_covered", "XNLI accuracy, translate-train-all, languages in the "
                                                      "pretraining mix (%)", True),
                                 ("xnli_all_avg", "XNLI accuracy, translate-train-all, 15 languages (%)", True),
                                 ("xnli_transfer_avg", "XNLI accuracy, fine-tuned on English (%)", True),
                                 ("xnli_target_avg", "XNLI accuracy, fine-tuned in each language (%)", True)]},
}
VARIANT_NAMES = {"hlm_ft": "headless (HLM+FT)", "headless_raw": "headless (raw: embedding head)",
                 "headless": "headless", "vanilla": "vanilla"}
VARIANT_ORDER = ["hlm_ft", "headless", "headless_raw", "vanilla"]


def _read_json(path: Path, noun: str, kind: str, fmt: str) -> dict:
    """A JSON file of the given `format`, or one line saying why not (missing, not JSON, another kind)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HeadlessError(f"{path}: no such {noun}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HeadlessError(f"{path}: not a JSON {noun} ({err})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise HeadlessError(f"{path}: not a {kind} (format {fmt} expected)")
    return data


def load_piece(path: str | Path) -> dict:
    path = Path(path)
    piece = _read_json(path, "piece", "`headless reproduce` piece", PIECE_FORMAT)
    check_piece(piece, path)
    piece["_path"] = str(path)
    if piece.get("study") == "encoder":  # pieces written before `glue_avg_no_rte` existed get it here
        from headless.eval.glue import GLUE_TASKS

        for point in piece.get("points", []):
            for variant in point.get("variants", {}).values():
                scores = variant.get("scores", {})
                keys = [k for k in GLUE_TASKS if k in scores]
                if keys and "glue_avg_no_rte" not in scores:
                    with_glue_averages(scores, keys)
    return piece


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_piece(piece: dict, path: Path) -> None:
    """Every field the report reads, checked once: a NaN score, an empty `points` or a study named
    `../..` is one line here, never a report with NaN intervals or a file written outside --output."""
    def bad(what: str) -> HeadlessError:
        return HeadlessError(f"{path}: not a valid piece: {what}")

    if piece.get("study") not in HEADLINE:
        raise bad(f"study {piece.get('study')!r} is not one of {', '.join(HEADLINE)}")
    if piece.get("flavour") not in ("headless", "vanilla"):
        raise bad(f"flavour {piece.get('flavour')!r} is not headless or vanilla")
    if not isinstance(piece.get("seed"), int) or isinstance(piece.get("seed"), bool):
        raise bad(f"seed {piece.get('seed')!r} is not an integer")
    if piece.get("compare") not in ("time", "tokens"):
        raise bad(f"compare {piece.get('compare')!r} is not time or tokens")
    if not isinstance(piece.get("data"), dict) or "fingerprint" not in piece["data"] or "eval_fingerprint" not in piece:
        raise bad("no data fingerprints (data.fingerprint, eval_fingerprint)")
    pretrain = piece.get("pretrain")
    if not isinstance(pretrain, dict):
        raise bad("pretrain is not a mapping")
    for key in ("steps", "tokens", "gpu_s", "tokens_per_s", "epochs", "parameters"):
        if pretrain.get(key) is not None and not _finite(pretrain[key]):
            raise bad(f"pretrain.{key} = {pretrain[key]!r} is not a finite number")
    fractions = piece.get("fractions")  # pieces written before they kept it have none
    if fractions is not None and not (isinstance(fractions, list) and all(
            isinstance(e, dict) and (e.get("reason") is None or isinstance(e["reason"], str)) for e in fractions)):
        raise bad("fractions is not a list of {requested, step, kept, reason}")
    points = piece.get("points")
    if not isinstance(points, list) or not points:
        raise bad("no evaluated points (`points` is empty or missing)")
    for i, point in enumerate(points):
        where = f"points[{i}]"
        if not isinstance(point, dict) or not isinstance(point.get("variants"), dict) or not point["variants"]:
            raise bad(f"{where} has no variants")
        for key in ("fraction", "tokens", "epochs"):
            if not _finite(point.get(key)):
                raise bad(f"{where}.{key} = {point.get(key)!r} is not a finite number")
        if not 0 < point["fraction"] <= 1:
            raise bad(f"{where}.fraction = {point['fraction']!r} is not in (0, 1]")
        for name, variant in point["variants"].items():
            if name not in VARIANT_NAMES:
                raise bad(f"{where} has an unknown variant {name!r}")
            if not isinstance(variant, dict) or not _finite(variant.get("gpu_s")) \
                    or not isinstance(variant.get("scores"), dict):
                raise bad(f"{where}.variants.{name} needs a finite gpu_s and a scores mapping")
            for metric, values in variant["scores"].items():
                if not isinstance(values, list) or not values or not all(_finite(v) for v in values):
                    raise bad(f"{where}.variants.{name}.scores.{metric} = {values!r} is not a list of finite numbers")


def _same(pieces: list[dict], what: str, get) -> None:
    values = {json.dumps(get(p), sort_keys=True): p for p in pieces}
    if len(values) > 1:
        (a, pa), (b, pb) = list(values.items())[:2]
        raise HeadlessError(f"cannot merge pieces of different {what}: {pa['_path']} has {a}, {pb['_path']} has {b}")


def check_compatible(pieces: list[dict]) -> None:
    if not pieces:
        raise HeadlessError("no pieces given")
    _same(pieces, "studies", lambda p: p["study"])
    _same(pieces, "pretraining data", lambda p: p["data"]["fingerprint"])
    _same(pieces, "evaluation data", lambda p: p["eval_fingerprint"])
    _same(pieces, "comparisons", lambda p: [p["compare"], p["budget_s"], p.get("steps_requested"),
                                            f"{p['pretrain'].get('world_size', 1)} process(es)"])
    seen: dict[tuple, str] = {}
    for p in pieces:
        key = (p["flavour"], p["seed"])
        if key in seen:
            raise HeadlessError(f"two pieces for {p['flavour']} seed {p['seed']}: {seen[key]} and {p['_path']}")
        seen[key] = p["_path"]


def _stats(values: list[float]) -> dict:
    values = [float(v) for v in values]
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def curves(pieces: list[dict]) -> dict[str, list[dict]]:
    """variant -> points ordered by fraction: gpu_s and tokens (means over pieces), score stats."""
    grouped: dict[str, dict[float, list[tuple[dict, dict]]]] = {}
    for piece in pieces:
        for point in piece["points"]:
            for name, variant in point["variants"].items():
                grouped.setdefault(name, {}).setdefault(round(point["fraction"], 3), []).append((point, variant))
    out = {}
    for name, by_fraction in grouped.items():
        rows = []
        for fraction in sorted(by_fraction):
            entries = by_fraction[fraction]
            metrics = sorted({k for _, v in entries for k in v["scores"]})
            rows.append({
                "fraction": fraction,
                "gpu_s": statistics.fmean(v["gpu_s"] for _, v in entries),
                "tokens": statistics.fmean(p["tokens"] for p, _ in entries),
                "epochs": statistics.fmean(p["epochs"] for p, _ in entries),
                "scores": {k: _row_stats(k, [x for _, v in entries for x in v["scores"].get(k, [])])
                           for k in metrics if any(k in v["scores"] for _, v in entries)},
            })
        out[name] = rows
    return out


def _xnli(mode: str, covered_only: bool = False) -> Callable[[list[str], set[str]], list[str]]:
    """The XNLI groups (`mode/language`) of one mode, or of its languages the pretraining covers."""
    return lambda groups, covered: [g for g in groups if g.startswith(f"{mode}/")
                                    and (not covered_only or g.split("/", 1)[1] in covered)]


# headline metric -> (the prediction groups it averages, given the groups there are and the XNLI
# languages the pretraining covers; the scale of its difference: 100 turns a [0, 1] metric into
# points, 1 keeps nats), for the paired bootstrap
BOOTSTRAP_GROUPS = {
    "lambada_acc": (lambda groups, covered: [g for g in groups if g == "lambada"], 100.0),
    "heldout_ce": (lambda groups, covered: [g for g in groups if g == "heldout"], 1.0),
    "glue_avg": (lambda groups, covered: groups, 100.0),
    "glue_avg_no_rte": (lambda groups, covered: without_rte(groups), 100.0),
    "xnli_transfer_avg": (_xnli("transfer"), 100.0),
    "xnli_target_avg": (_xnli("target"), 100.0),
    "xnli_all_avg": (_xnli("all"), 100.0),
    "xnli_all_covered": (_xnli("all", covered_only=True), 100.0),
}


def fine_tuning_run(group: str) -> str:
    """The fine-tuning run that scored a prediction group: XNLI's transfer and translate-train-all
    fine-tune once for all 15 languages; every other group (a GLUE task, XNLI's target language) is
    its own run."""
    mode = group.split("/", 1)[0]
    return mode if "/" in group and mode in ("transfer", "all") else group


def final_predictions(pieces: list[dict], variant: str) -> dict[str, dict]:
    """The predictions of `variant` at the last point of every piece that has them, seeds pooled
    across pieces (pretraining seeds x fine-tuning seeds, as the scores are); {} if none has."""
    merged: dict[str, dict] = {}
    for piece in pieces:
        found = piece["points"][-1]["variants"].get(variant, {}).get("predictions") if piece["points"] else None
        for name, entry in (found or {}).items():
            if name in merged and list(merged[name]["labels"]) != list(entry["labels"]):
                return {}  # not the same examples: nothing to pool
            merged.setdefault(name, dict(entry, seeds=[]))["seeds"] += list(entry["seeds"])
    return merged


def headline_bootstrap(pieces: list[dict], head: str, van: str, metric: str, higher: bool,
                       replicates: int) -> dict | None:
    """`bootstrap.paired_bootstrap` of a headline metric at the twins' final checkpoints, or None."""
    from headless.eval.bootstrap import paired_bootstrap

    if metric not in BOOTSTRAP_GROUPS or replicates < 1:
        return None
    select, scale = BOOTSTRAP_GROUPS[metric]
    h, v = final_predictions(pieces, head), final_predictions(pieces, van)
    covered = set(covered_languages(pieces[0].get("study_config", {}).get("languages", [])))
    groups = select(sorted({e["group"] for e in h.values()}), covered) if h and v else []
    if not groups:
        return None
    return paired_bootstrap(h, v, groups, higher_is_better=higher, replicates=replicates, scale=scale,
                            run_of=fine_tuning_run)


def seed_differences(pieces: list[dict], head: str, van: str, metric: str) -> list[float]:
    """headless − vanilla at the final checkpoint, one value per pretraining seed both twins ran
    (each twin's fine-tuning seeds averaged)."""
    finals: dict[int, dict[str, float]] = {}
    for p in pieces:
        if not p.get("points"):
            continue
        for variant, entry in p["points"][-1]["variants"].items():
            values = entry["scores"].get(metric)
            if variant in (head, van) and values:
                finals.setdefault(p["seed"], {})[variant] = sum(values) / len(values)
    return [d[head] - d[van] for _, d in sorted(finals.items()) if head in d and van in d]


SEEDS_CAP = 10_000  # `settle` stops counting seeds here


def settle(entry: dict, differences: list[float]) -> dict:
    """What budget would settle the difference (issue #26): whether 0 is outside the interval now,
    and how many pretraining seeds per twin a 95 % interval needs to exclude 0 at this difference.

    With two or more seeds: the smallest n with t(0.975, n−1) · sd / √n < |mean difference|, sd the
    spread of the per-seed differences (the variance a new pretraining run brings). With one seed
    that spread is unknown; the paired bootstrap's interval (examples and fine-tuning seeds) then
    gives a lower bound by the same 1/√n scaling: the smallest k with (reach / √k) < |difference|,
    reach the distance from the difference to the interval's end on 0's side."""
    from scipy.stats import t as student_t

    n, delta = len(differences), entry.get("delta")
    b = entry.get("paired_bootstrap")
    out: dict[str, Any] = {"pretraining_seeds": n, "excludes_0": (b["low"] > 0 or b["high"] < 0) if b else None}
    if n >= 2:
        mean = sum(differences) / n
        sd = (sum((d - mean) ** 2 for d in differences) / (n - 1)) ** 0.5
        half = float(student_t.ppf(0.975, n - 1)) * sd / n ** 0.5
        out.update(seed_mean=mean, seed_sd=sd, seed_interval=[mean - half, mean + half])
        if mean == 0:
            out["seeds_needed"] = None
        elif sd == 0:
            out["seeds_needed"] = n
        else:
            k = 2
            while float(student_t.ppf(0.975, k - 1)) * sd / k ** 0.5 >= abs(mean) and k <= SEEDS_CAP:
                k += 1
            out["seeds_needed"] = k if k <= SEEDS_CAP else f"more than {SEEDS_CAP:,}"
    elif b and delta and not out["excludes_0"]:
        # the interval's reach from the difference towards 0, shrunk by 1/sqrt(k), must fall short of 0
        reach = delta - b["low"] if delta > 0 else b["high"] - delta
        out["seeds_needed_at_least"] = max(2, math.floor((reach / abs(delta)) ** 2) + 1)
    return out


def settle_text(entry: dict, seeds_matched: bool = True) -> str:
    """One sentence for the report from `settle`; `seeds_matched`: both twins hold the same
    pretraining seeds (`twin_seeds`)."""
    s, label = entry.get("settle"), entry["label"]
    if not s:
        return ""
    if s["pretraining_seeds"] >= 2:
        low, high = s["seed_interval"]
        need = s.get("seeds_needed")
        verdict = ("excludes 0" if low > 0 or high < 0 else
                   "includes 0, and the mean difference is 0" if need is None else
                   f"includes 0; about **{need}** seeds per twin would exclude 0 at this difference and spread")
        return (f"**{label}, over pretraining seeds**: {s['pretraining_seeds']} seeds, difference "
                f"{s['seed_mean']:+.2f} (sd {s['seed_sd']:.2f} between seeds), t-interval [{low:+.2f}, {high:+.2f}] (95 %): "
                f"it {verdict}.")
    if not s["excludes_0"] and "seeds_needed_at_least" not in s:
        return ""
    one = "one pretraining seed per twin" if seeds_matched else "one pretraining seed both twins have"
    return (f"**{label}, what would settle it**: {one}, so the spread between "
            f"pretraining runs is unknown and no interval above covers it. "
            + ("The interval over the evaluation data excludes 0; a second and third seed say whether the "
               "difference holds across pretraining runs." if s["excludes_0"] else
               f"The interval over the evaluation data already includes 0; narrowing it to exclude 0 at this "
               f"difference takes at least **{s['seeds_needed_at_least']}** seeds per twin (its reach from the "
               f"difference towards 0, over the difference, squared), more once the pretraining runs' own "
               f"spread is counted."))


def crossing(headless: list[dict], vanilla: list[dict], metric: str, higher: bool) -> dict:
    """Where the headless curve first reaches vanilla's final score, as a fraction of vanilla's GPU
    time (linear interpolation between evaluated checkpoints)."""
    final = vanilla[-1]
    if metric not in final["scores"]:
        return {"status": "no vanilla score"}
    target, total = final["scores"][metric]["mean"], final["gpu_s"]
    better = (lambda s: s >= target) if higher else (lambda s: s <= target)
    points = [(p["gpu_s"], p["scores"][metric]["mean"]) for p in headless if metric in p["scores"]]
    for i, (t, s) in enumerate(points):
        if better(s):
            if i == 0:
                return {"status": "at or before the first checkpoint", "fraction_max": t / total,
                        "vanilla_final": target}
            (t0, s0) = points[i - 1]
            at = t0 + (t - t0) * ((target - s0) / (s - s0) if s != s0 else 1.0)
            return {"status": "reached", "fraction": at / total, "gpu_s": at, "vanilla_final": target}
    best = max(points, key=lambda p: p[1] if higher else -p[1]) if points else None
    return {"status": "not reached", "vanilla_final": target, "best_headless": best[1] if best else None}


def _gpu_s_text(pretrain: dict) -> str:
    planned = pretrain.get("planned_gpu_s") or pretrain.get("gpu_s") or 0
    if not pretrain.get("measured_s_per_step"):
        return f"not measured ({planned:.0f})"
    return f"{pretrain['gpu_s']:.0f} ({planned:.0f})"  # the piece's own figure: every process counted


def score_at(points: list[dict], metric: str, gpu_s: float) -> float | None:
    """The curve's mean score at `gpu_s`, linearly interpolated; None when `gpu_s` is at or past
    the curve's last point (no extrapolation) or before its first."""
    rows = [(p["gpu_s"], p["scores"][metric]["mean"]) for p in points if metric in p["scores"]]
    if not rows or gpu_s >= rows[-1][0] or gpu_s < rows[0][0]:
        return None
    for (t0, s0), (t1, s1) in zip(rows, rows[1:]):
        if t0 <= gpu_s <= t1:
            return s0 + (s1 - s0) * (gpu_s - t0) / (t1 - t0) if t1 > t0 else s1
    return None


def _se_of_difference(a: dict, b: dict) -> float | None:
    """The standard error of a difference of two means (None unless both have a spread)."""
    if a.get("n", 1) < 2 or b.get("n", 1) < 2:
        return None
    return math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])


def within_noise(entry: dict) -> bool:
    """Whether the final difference is noise: its paired bootstrap interval (examples and seeds)
    includes 0 when there is one, else it is under two standard errors of the seeds (False when
    there is neither)."""
    paired = entry.get("paired_bootstrap")
    if paired:
        return paired["low"] <= 0 <= paired["high"]
    se = entry.get("delta_se")
    return se is not None and abs(entry["delta"]) < 2 * se


def delta_text(entry: dict) -> str:
    delta, se = entry["delta"], entry.get("delta_se")
    text = f"{delta:+.2f}" if se is None else f"{delta:+.2f} ± {se:.2f}"
    noisy = within_noise(entry) and (se is not None or entry.get("paired_bootstrap"))
    return text + (" (within noise)" if noisy else "")


def piece_is_mlm(piece: dict) -> bool:
    """Whether the piece's twin trained with MLM: the kind the piece recorded, else its config's
    objective kind, or for `auto` its study's (the decoder study trains decoders, CLM; the others
    encoders)."""
    if piece["pretrain"].get("objective_kind"):  # recorded by pieces since 2026-12-05 (late)
        return piece["pretrain"]["objective_kind"] == "mlm"
    kind = ((piece.get("train_config") or {}).get("objective") or {}).get("kind", "auto")
    return kind == "mlm" if kind != "auto" else piece.get("study") != "decoder"


def piece_plateau(piece: dict) -> dict | None:
    """The piece's MLM-plateau reading (None for a CLM twin: pieces written before 2026-12-05's
    decoder campaign kept one for CLM too, and the report ignores it); for pieces written before
    pieces kept it, read from the thinned training curve with the run's warm-up and patience."""
    from headless.train.plateau import plateau_exit

    if not piece_is_mlm(piece):
        return None
    if piece["pretrain"].get("plateau"):
        return piece["pretrain"]["plateau"]
    train = (piece["pretrain"].get("curves") or {}).get("train")
    if not train:
        return None
    cfg = piece.get("train_config") or {}
    warmup = (cfg.get("optim") or {}).get("warmup_steps", 0)
    return plateau_exit(train["step"], train["accuracy"], warmup, cfg.get("plateau_patience", 4000))


def source_lines(pieces: list[dict]) -> list[str]:
    """Which library code made each piece (`headless.provenance`), grouped; nothing when no piece
    recorded it (pieces made before it was recorded)."""
    if not any(p.get("source") for p in pieces):
        return []
    groups: dict[str, list[str]] = {}
    for p in pieces:
        groups.setdefault(p.get("source") or "not recorded", []).append(f"{p['flavour']} seed {p['seed']}")
    return ["", "Library code, by source fingerprint (`headless --version`; `scripts/source_commit.py` names its "
            "commits): " + "; ".join(f"`{k}`: {', '.join(v)}" if k != "not recorded" else f"{k}: {', '.join(v)}"
                                     for k, v in groups.items()) + "."]


def piece_vocab_size(piece: dict) -> int | None:
    """The vocabulary the twins trained with: the model's, or (a model sized from its tokenizer) the
    tokenizer's. One for all of a report's pieces: they share the prepared data (check_compatible)."""
    cfg = piece.get("train_config") or {}
    return (cfg.get("model") or {}).get("vocab_size") or (cfg.get("data") or {}).get("tokenizer_vocab_size")


def build_report(pieces: list[dict], bootstrap: int = 1000) -> dict:
    """The merged report; `bootstrap` replicates of the paired bootstrap (0: none)."""
    check_compatible(pieces)
    pieces = sorted(pieces, key=lambda p: (p["flavour"], p["seed"]))
    study = pieces[0]["study"]
    curve = curves(pieces)
    head, van = HEADLINE[study]["pair"]
    devices = [p["environment"].get("device") for p in pieces]
    result = {"format": REPORT_FORMAT, "study": study, "compare": pieces[0]["compare"],
              # "GPU s" only when every twin ran on a GPU; "peak GiB" is a CUDA figure
              "time_unit": time_unit(devices), "cuda": any(d and d not in ("cpu", "mps") for d in devices),
              "budget_s": pieces[0]["budget_s"], "data": pieces[0]["data"],
              "vocab_size": piece_vocab_size(pieces[0]),
              "pieces": [{"flavour": p["flavour"], "seed": p["seed"], "file": Path(p["_path"]).name,
                          "overrides": p.get("study_config", {}).get(f"{p['flavour']}_pretrain", []),
                          "pretrain": p["pretrain"], "mlm": piece_is_mlm(p), "plateau": piece_plateau(p),
                          "fractions": p.get("fractions"), "device": p["environment"].get("device"),
                          "device_uuid": p["environment"].get("device_uuid"),
                          "source": p["environment"].get("source")} for p in pieces],
              "curves": curve, "headline": {}, "bootstrap_replicates": bootstrap}
    for metric, label, higher in HEADLINE[study]["metrics"]:
        entry: dict[str, Any] = {"label": label, "higher_is_better": higher}
        if head in curve and van in curve and metric in curve[head][-1]["scores"] and metric in curve[van][-1]["scores"]:
            h, v = curve[head][-1]["scores"][metric], curve[van][-1]["scores"][metric]
            entry.update(headless=h, vanilla=v, delta=h["mean"] - v["mean"], delta_se=_se_of_difference(h, v),
                         crossing=crossing(curve[head], curve[van], metric, higher),
                         gpu_s={"headless": curve[head][-1]["gpu_s"], "vanilla": curve[van][-1]["gpu_s"]})
            paired = headline_bootstrap(pieces, head, van, metric, higher, bootstrap)
            if paired is not None:
                entry["paired_bootstrap"] = paired
            entry["settle"] = settle(entry, seed_differences(pieces, head, van, metric))
            # the equal-time reading: the twin whose curve runs longer, read at the other's last GPU
            # second (HLM+FT's fine-tuning, or a plan that gave one twin more steps)
            at = score_at(curve[head], metric, curve[van][-1]["gpu_s"])
            if at is not None:
                entry["headless_at_vanilla_gpu_s"] = at
                entry["delta_at_vanilla_gpu_s"] = at - v["mean"]
            at = score_at(curve[van], metric, curve[head][-1]["gpu_s"])
            if at is not None:
                entry["vanilla_at_headless_gpu_s"] = at
                entry["delta_at_headless_gpu_s"] = h["mean"] - at
        result["headline"][metric] = entry
    result["gpu_pairs"] = gpu_pairs(result["pieces"])
    result["unpaired_gpu_seeds"] = [e["seed"] for e in _unpaired(result["gpu_pairs"])]
    return result


def twin_seeds(pieces: list[dict]) -> dict[str, list[int]]:
    """The pretraining seeds each flavour's pieces hold, sorted."""
    seeds: dict[str, list[int]] = {"headless": [], "vanilla": []}
    for p in pieces:
        seeds.setdefault(p["flavour"], []).append(p["seed"])
    return {flavour: sorted(found) for flavour, found in seeds.items()}


def unmatched_seeds_lines(report: dict) -> list[str]:
    """report.md's paragraph when the twins hold different pretraining seeds (empty otherwise): each
    twin's scores pool its own seeds, while the comparison over pretraining seeds pairs the common ones."""
    seeds = twin_seeds(report["pieces"])
    if not seeds["headless"] or not seeds["vanilla"] or seeds["headless"] == seeds["vanilla"]:
        return []
    common = sorted(set(seeds["headless"]) & set(seeds["vanilla"]))
    return ["", f"**The twins hold different pretraining seeds**: headless {_seeds_text(seeds['headless'])}; "
            f"vanilla {_seeds_text(seeds['vanilla'])}. Each twin's scores and the paired bootstrap pool that "
            "twin's own seeds; the comparison over pretraining seeds uses "
            + (f"those both have ({_seeds_text(common)})." if common else "none: no seed has both twins.")
            + " Report the common seeds alone for a like-for-like comparison."]


def gpu_pairs(pieces: list[dict]) -> list[dict]:
    """Each pretraining seed both twins ran: the GPU model (`device`) and UUID each twin pretrained on.
    At equal GPU time a faster model gives its twin more steps, so a seed whose twins differ in model
    compares the machines as well as the flavours. Seeds where either twin's model is unknown (pieces
    older than the field) are left out."""
    by_seed: dict[int, dict[str, dict]] = {}
    for p in pieces:
        by_seed.setdefault(p["seed"], {})[p["flavour"]] = p
    return [{"seed": seed, "headless": twins["headless"]["device"], "vanilla": twins["vanilla"]["device"],
             "uuids": [twins["headless"].get("device_uuid"), twins["vanilla"].get("device_uuid")]}
            for seed, twins in sorted(by_seed.items())
            if len(twins) == 2 and twins["headless"].get("device") and twins["vanilla"].get("device")]


def _unpaired(pairs: list[dict]) -> list[dict]:
    """The `gpu_pairs` entries whose twins ran on different GPU models."""
    return [e for e in pairs if e["headless"] != e["vanilla"]]


def unpaired_gpu_seeds(report: dict) -> list[int]:
    """The report's seeds whose twins ran on different GPU models (computed from its pieces for a
    report written before it recorded them)."""
    if "unpaired_gpu_seeds" in report:
        return report["unpaired_gpu_seeds"]
    return [e["seed"] for e in _unpaired(gpu_pairs(report["pieces"]))]


def _seeds_text(seeds: list[int]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(s) for s in seeds)


def gpu_pairs_lines(report: dict) -> list[str]:
    """report.md's paragraphs on where each seed's twins pretrained (empty when nothing is to say)."""
    pairs = gpu_pairs(report["pieces"])
    lines: list[str] = []
    unpaired = _unpaired(pairs)
    if unpaired:
        lines += ["", "**Equal GPU time is not equal work across GPU models**: "
                  + "; ".join(f"seed {e['seed']} headless on {e['headless']}, vanilla on {e['vanilla']}"
                              for e in unpaired)
                  + ". The faster model gave its twin more steps in the same seconds, so these seeds compare the "
                  "machines as well as the flavours. Run both twins of a seed on one machine "
                  "(`bash scripts/reproduce_gpu.sh STUDY both seed=N`)."]
    else:
        models: dict[str, list[int]] = {}
        for e in pairs:
            models.setdefault(e["headless"], []).append(e["seed"])
        if len(models) > 1:
            lines += ["", "Each seed's twins pretrained on one GPU model, not the same one for every seed: "
                      + "; ".join(f"{_seeds_text(seeds)} on {model}" for model, seeds in models.items())
                      + ". The spread over pretraining seeds includes the machine."]
    machines = [e["seed"] for e in pairs if e["headless"] == e["vanilla"] and None not in e["uuids"]
                and e["uuids"][0] != e["uuids"][1]]
    if machines:
        lines += ["", f"**The twins of {_seeds_text(machines)} pretrained on different GPUs** of one model: a "
                  "machine's own speed then enters their step times, and so the steps each got at equal time. "
                  "Both twins of a seed run one after the other on one machine compare the flavours alone."]
    return lines


def _row_stats(key: str, values: list[float]) -> dict:
    """A score's mean ± std; a chosen learning rate (`*_lr`), the rates that diverged
    (`*_diverged_lrs`, a sweep's disqualified candidates) and the runs re-run in float32
    (`*_fp32_retries`) are settings, not scores."""
    if key.endswith("_lrs"):
        return {"format": "lrs", "values": sorted(set(values)), "n": len(values)}
    if key.endswith("_retries"):  # kept runs re-run in float32 after a bf16 divergence, in all
        return {"format": "count", "total": int(sum(values)), "n": len(values)}
    return dict(_stats(values), **({"format": "lr"} if key.endswith("_lr") else {}))


def _fmt(stats: dict | None, digits: int = 2) -> str:
    if not stats:
        return "–"
    if stats.get("format") == "lr":  # a chosen fine-tuning learning rate, not a score
        return f"{stats['mean']:.0e}"
    if stats.get("format") == "lrs":
        return ", ".join(f"{v:.0e}" for v in stats["values"]) or "–"
    if stats.get("format") == "count":
        return str(stats["total"])
    if stats["n"] > 1:
        return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f} (n={stats['n']})"
    return f"{stats['mean']:.{digits}f}"


def equal_time_text(entry: dict) -> str:
    """The headline's equal-time cell: the longer twin read at the shorter one's last GPU second,
    and headless − vanilla there."""
    if entry.get("headless_at_vanilla_gpu_s") is not None:
        return (f"headless {entry['headless_at_vanilla_gpu_s']:.2f} at {entry['gpu_s']['vanilla']:.0f} s "
                f"({entry['delta_at_vanilla_gpu_s']:+.2f})")
    if entry.get("vanilla_at_headless_gpu_s") is not None:
        return (f"vanilla {entry['vanilla_at_headless_gpu_s']:.2f} at {entry['gpu_s']['headless']:.0f} s "
                f"({entry['delta_at_headless_gpu_s']:+.2f})")
    return "–"


def unit_words(unit: str) -> dict[str, str]:
    """The report's words for its seconds: "GPU s" / "GPU time" / "GPU seconds" only on GPUs."""
    kind = unit[:-2] if unit.endswith(" s") else ""
    return {"s": unit, "time": f"{kind} time".strip(), "seconds": f"{kind} seconds".strip(),
            "second": f"{kind} second".strip(),
            "equal": f"equal {kind} time".replace("  ", " ").strip()}


def crossing_text(c: dict, noise: bool = False, unit: str = "GPU s") -> str:
    """`noise`: the final scores are within noise, so a crossing says little."""
    status = c.get("status")
    caveat = "; the final scores are within noise" if noise else ""
    time_word = unit_words(unit)["time"]
    if status == "reached":
        return f"{100 * c['fraction']:.0f}% of vanilla's {time_word}{caveat}"
    if status == "at or before the first checkpoint":
        if c["fraction_max"] > 1:  # that checkpoint came after vanilla's end: the bound says little
            return (f"by its first checkpoint, at {100 * c['fraction_max']:.0f}% of vanilla's {time_word}; "
                    f"whether before vanilla's end is not measured{caveat}")
        return f"≤ {100 * c['fraction_max']:.0f}% of vanilla's {time_word} (already at the first checkpoint{caveat})"
    if status == "not reached":
        return "not reached"
    return status or "–"


def report_markdown(report: dict) -> str:
    study, curve = report["study"], report["curves"]
    variants = [v for v in VARIANT_ORDER if v in curve] + sorted(set(curve) - set(VARIANT_ORDER))
    unit = report.get("time_unit", "GPU s")
    words = unit_words(unit)
    budget = (f"{words['equal']}: {report['budget_s']:g} s of steady-state pretraining steps per twin"
              if report["compare"] == "time" else "equal tokens: the same steps for both twins")
    lines = [f"# Reproduction: {study}", "", f"Comparison: {budget}. Pretraining data: "
             f"{', '.join(report['data']['inputs'])} ({report['data']['train_tokens']:,} tokens per epoch, "
             + (f"vocabulary {report['vocab_size']:,}, " if report.get("vocab_size") else "")
             + f"fingerprint `{report['data']['fingerprint']}`).", "", "## Headline", "",
             f"| metric | headless | vanilla | difference | {unit} (headless / vanilla) | at equal {unit} "
             "| headless reaches vanilla's final score at |", "|---|---|---|---|---|---|---|"]
    for metric, entry in report["headline"].items():
        if "delta" in entry:
            at_text = equal_time_text(entry)
            lines.append(f"| {entry['label']} | {_fmt(entry['headless'])} | {_fmt(entry['vanilla'])} | "
                         f"{delta_text(entry)} | {entry['gpu_s']['headless']:.0f} / {entry['gpu_s']['vanilla']:.0f} | "
                         f"{at_text} | {crossing_text(entry['crossing'], within_noise(entry), unit)} |")
        else:
            lines.append(f"| {entry['label']} | – | – | – | – | – | needs both twins |")
    if any(entry.get("delta_se") is not None for entry in report["headline"].values()):
        lines += ["", "Difference ± its standard error, over the seeds each twin's final score has (fine-tuning "
                  "seeds × pretraining seeds). Under two standard errors it is marked *within noise*; with one "
                  "pretraining seed the error leaves out the pretraining run's own variance, so it is a lower bound."
                  + (" Where a paired bootstrap is given (below), *within noise* means its interval includes 0 "
                     "instead." if any(e.get("paired_bootstrap") for e in report["headline"].values()) else "")]
    seeds = twin_seeds(report["pieces"])
    seeds_matched = seeds["headless"] == seeds["vanilla"]
    for entry in report["headline"].values():
        b = entry.get("paired_bootstrap")
        if b:
            lines += ["", f"**{entry['label']}, paired bootstrap** over the {b['examples']:,} evaluation examples "
                      f"and the seeds ({b['seeds'][0]} / {b['seeds'][1]}), {b['replicates']:,} "
                      f"replicates: the difference lies in [{b['low']:+.2f}, {b['high']:+.2f}] (95 %); headless is "
                      f"better in {100 * b['ahead']:.0f} % of the replicates. "
                      + ("The interval excludes 0." if b["low"] > 0 or b["high"] < 0 else
                         "The interval includes 0: the evaluation sets cannot tell the twins apart.")]
        settled = settle_text(entry, seeds_matched)
        if settled:
            lines += ["", settled]
    compared = [e for e in report["headline"].values() if "delta" in e]
    if report.get("bootstrap_replicates") and compared and not any(e.get("paired_bootstrap") for e in compared):
        lines += ["", "No paired bootstrap: the pieces carry no evaluation predictions (they were written before "
                  "pieces kept them), or the twins were scored on different examples."]
    gpu = {f: [p["pretrain"]["gpu_s"] for p in report["pieces"] if p["flavour"] == f and p["pretrain"].get("gpu_s")]
           for f in ("headless", "vanilla")}
    if report["compare"] == "time" and all(gpu.values()):
        h, v = (statistics.fmean(gpu[f]) for f in ("headless", "vanilla"))
        if abs(h / v - 1) > 0.05:  # the trainer's calibration_tolerance
            lines += ["", f"**The twins' pretraining time was not equal**: {h:.0f} s of steps for headless against "
                      f"{v:.0f} s for vanilla, as measured. The \"difference\" column compares unequal budgets; the "
                      f"\"at equal {unit}\" column reads the longer twin's curve at the other's last {words['second']} "
                      "(interpolated between its checkpoints) and is the equal-time reading."]
    lines += unmatched_seeds_lines(report) + gpu_pairs_lines(report)
    cuda = report.get("cuda", True)  # peak memory is measured on CUDA only
    lines += ["", "## Pretraining", "", f"| twin | seed | steps | tokens | tokens/s | epochs | {unit} "
              "(planned) | parameters |" + (" peak GiB |" if cuda else "") + " device |",
              "|---|---|---|---|---|---|---|---|" + ("---|" if cuda else "") + "---|"]
    for p in report["pieces"]:
        t = p["pretrain"]
        lines.append(f"| {p['flavour']} | {p['seed']} | {t['steps']:,} | {t['tokens']:,} | "
                     f"{(t.get('tokens_per_s') or 0):,.0f} | {t.get('epochs', 0):.2f} | {_gpu_s_text(t)} | "
                     f"{(t.get('parameters') or 0) / 1e6:.1f}M |"
                     + (f" {t.get('peak_mem_gib') or 0:.1f} |" if cuda else "") + f" {p.get('device')} |")
    lines += ["", f"{unit}: steps x the seconds per step measured over the run (saves and validation excluded); "
              "in brackets, steps x the planned seconds per step that fixed max_steps."]
    lines += source_lines(report["pieces"])
    moved = [f"{p['flavour']} seed {p['seed']}: {e['reason']}" for p in report["pieces"]
             for e in (p.get("fractions") or []) if e.get("reason")]
    if moved:
        lines += ["", "Checkpoint fractions not evaluated as requested:", ""] + [f"- {m}" for m in moved]
    plateau = [p for p in report["pieces"] if p.get("plateau")]
    if plateau:
        lines += ["", "The MLM plateau (training accuracy 25 % above its level after the warm-up counts as leaving "
                  "it; `headless.train.plateau`):", ""]
        for p in plateau:
            t = p["pretrain"]
            lines.append(f"- {p['flavour']} seed {p['seed']}: "
                         + plateau_text(p["plateau"], t.get("measured_s_per_step") or t.get("steady_s_per_step"), unit))
    own = [f"{p['flavour']} seed {p['seed']}: `{' '.join(p['overrides'])}`" for p in report["pieces"] if p.get("overrides")]
    if own:
        lines += ["", "Settings of one twin only (`headless_pretrain` / `vanilla_pretrain`): " + "; ".join(own) + "."]
    unmeasured = [f"{p['flavour']} seed {p['seed']}" for p in report["pieces"]
                  if not p["pretrain"].get("measured_s_per_step")]
    if unmeasured:
        lines += ["", f"**Not measured**: {', '.join(unmeasured)} ran before the run's step time was measured; "
                  f"its {unit} above and in the curves are the calibration's plan, not what the run spent."]
    if any(p["pretrain"].get("curves") for p in report["pieces"]):
        lines += ["", f"![pretraining curves]({study}-pretraining.png)", "",
                  f"The twins' own pretraining losses and top-1 accuracies (train and validation) against "
                  f"{words['seconds']}. They measure different things: CWT retrieves the target among the micro-batch's "
                  "targets, the vanilla head predicts it among the whole vocabulary. Read them for their shape"
                  + (": a flat accuracy is a twin stuck on the MLM plateau (predicting frequent tokens)."
                     if any(p.get("mlm") for p in report["pieces"]) else ".")]
    final_metrics = sorted({k for v in variants for k in curve[v][-1]["scores"]})
    lines += ["", "## Final checkpoint, every score", "",
              "| score | " + " | ".join(VARIANT_NAMES.get(v, v) for v in variants) + " |",
              "|---|" + "---|" * len(variants)]
    for metric in final_metrics:
        lines.append(f"| {metric} | " + " | ".join(_fmt(curve[v][-1]["scores"].get(metric)) for v in variants) + " |")
    lines += ["", "## Curves", ""]
    for metric, label, _ in HEADLINE[study]["metrics"]:
        if not _scored(curve, metric):
            continue
        lines += [f"{label}:", "", f"| twin | fraction | {unit} | tokens | epochs | score |", "|---|---|---|---|---|---|"]
        for v in variants:
            for row in curve[v]:
                if metric in row["scores"]:
                    lines.append(f"| {VARIANT_NAMES.get(v, v)} | {row['fraction']:.2f} | {row['gpu_s']:.0f} | "
                                 f"{row['tokens']:,.0f} | {row['epochs']:.2f} | {_fmt(row['scores'][metric])} |")
        lines.append("")
        lines.append(f"![{metric}]({study}-{metric}.png)")
        lines.append("")
    return "\n".join(lines) + "\n"


def _scored(curve: dict, metric: str) -> bool:
    return any(metric in row["scores"] for rows in curve.values() for row in rows)


def plot_report(report: dict, out_dir: Path) -> list[Path]:
    """One PNG per headline metric: the score against GPU-seconds and against tokens, both twins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    curve = report["curves"]
    for metric, label, _ in HEADLINE[report["study"]]["metrics"]:
        if not _scored(curve, metric):  # e.g. no RTE-free average of a study with two GLUE tasks
            continue
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for v in [v for v in VARIANT_ORDER if v in curve]:
            rows = [r for r in curve[v] if metric in r["scores"]]
            if not rows:
                continue
            means = [r["scores"][metric]["mean"] for r in rows]
            stds = [r["scores"][metric]["std"] for r in rows]
            style = "--" if v == "headless_raw" else "-"
            for ax, key in zip(axes, ("gpu_s", "tokens")):
                ax.errorbar([r[key] for r in rows], means, yerr=stds, fmt=style + "o", capsize=3,
                            label=VARIANT_NAMES.get(v, v))
        axes[0].set_xlabel(f"{unit_words(report.get('time_unit', 'GPU s'))['seconds']} "
                           "(pretraining, + fine-tuning for HLM+FT)")
        axes[1].set_xlabel("pretraining tokens")
        axes[0].set_ylabel(textwrap.fill(label, 36))  # one axis, wrapped: long labels were clipped
        for ax in axes:
            ax.grid(alpha=0.3)
        axes[0].legend()
        fig.suptitle(f"{report['study']}: {label}")
        fig.tight_layout()
        path = out_dir / f"{report['study']}-{metric}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_pretraining(report: dict, out_dir: Path) -> Path | None:
    """<study>-pretraining.png: each piece's loss and accuracy (train solid, validation dots)
    against GPU seconds, or None when no piece carries its curves."""
    pieces = [p for p in report["pieces"] if p["pretrain"].get("curves")]
    if not pieces:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = {"headless": "tab:blue", "vanilla": "tab:orange"}
    for p in pieces:
        t = p["pretrain"]
        per_step = (t.get("gpu_s") or 0) / max(t["steps"], 1)
        for split, style in (("train", "-"), ("val", "o")):
            c = t["curves"].get(split)
            if not c:
                continue
            x = [step * per_step for step in c["step"]]
            label = f"{p['flavour']} seed {p['seed']} ({'validation' if split == 'val' else split})"
            for ax, key in zip(axes, ("loss", "accuracy")):
                pts = [(a, b) for a, b in zip(x, c[key]) if b is not None]
                if pts:
                    ax.plot(*zip(*pts), style, color=colours.get(p["flavour"]), alpha=0.85, markersize=4,
                            label=label)
    for ax, name in zip(axes, ("loss (CWT: in-batch; vanilla: over the vocabulary)", "top-1 accuracy")):
        ax.set_xlabel(f"{unit_words(report.get('time_unit', 'GPU s'))['seconds']} (pretraining steps)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{report['study']}: the twins' pretraining")
    fig.tight_layout()
    path = out_dir / f"{report['study']}-pretraining.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_differences(report: dict, out_dir: Path) -> Path | None:
    """<study>-differences.png: a forest plot of each headline's headless − vanilla, at the final
    checkpoints (95 % paired bootstrap, else ± 1.96 standard errors of the seeds, else no whisker)
    and at equal GPU seconds; one panel per metric, since their units differ."""
    from headless.eval.plots import forest_panels

    panels = []
    for entry in report["headline"].values():
        if "delta" not in entry:
            continue
        paired, se, delta = entry.get("paired_bootstrap"), entry.get("delta_se"), entry["delta"]
        low, high = ((paired["low"], paired["high"]) if paired else
                     (delta - 1.96 * se, delta + 1.96 * se) if se else (None, None))
        rows = [("final", delta, low, high)]
        if "delta_at_vanilla_gpu_s" in entry:
            rows.append(("at vanilla's GPU s", entry["delta_at_vanilla_gpu_s"], None, None))
        if "delta_at_headless_gpu_s" in entry:
            rows.append(("at headless's GPU s", entry["delta_at_headless_gpu_s"], None, None))
        better = "higher" if entry.get("higher_is_better", True) else "lower"
        panels.append((entry["label"], f"headless − vanilla ({better} is better for headless)", rows))
    if not panels:
        return None
    return forest_panels(panels, Path(out_dir) / f"{report['study']}-differences.png")


def write_report(piece_paths: list[str | Path], output_dir: str | Path, bootstrap: int = 1000) -> dict:
    """Merge the pieces into OUTPUT_DIR/{report.json, report.md, <study>-<metric>.png,
    <study>-pretraining.png}."""
    pieces = [load_piece(p) for p in piece_paths]
    report = build_report(pieces, bootstrap=bootstrap)
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise HeadlessError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{report['study']}-report.json", report)
    atomic_write(out / f"{report['study']}-report.md", report_markdown(report))
    plot_report(report, out)
    plot_pretraining(report, out)
    plot_differences(report, out)
    return report



SUMMARY_HEADER = ("| study | campaign | metric | headless | vanilla | headless − vanilla [95 %] "
                  "| at equal GPU s | epochs (h / v) | seeds (h / v) | status |\n|---|---|---|---|---|---|---|---|---|---|")


def load_report(path: str | Path) -> dict:
    """A report written by `write_report`, with its campaign (the folder holding it) and whether a
    `SUPERSEDED` note beside it retires it: a committed result is quoted from its report, never by hand."""
    path = Path(path)
    report = _read_json(path, "report", "`headless report` report", REPORT_FORMAT)
    note = path.resolve().parent / "SUPERSEDED"
    report["_campaign"] = path.resolve().parent.name
    report["_superseded"] = note.read_text(encoding="utf-8").strip().splitlines()[0] if note.is_file() else None
    return report


def summary_entry(report: dict) -> tuple[str, str, dict]:
    """(the study with its setting, the metric's label, its headline entry): the report's first
    headline metric that both twins have, at the final checkpoints (read from the report itself, so
    reports made before a headline metric existed still summarise as they were written)."""
    headline = report["headline"]
    metric = next((m for m, e in headline.items() if "delta" in e), next(iter(headline), None))
    entry = headline.get(metric, {}) if metric else {}
    label = entry.get("label", metric or "–")
    vanilla_own = sorted({o for p in report["pieces"] if p["flavour"] == "vanilla" for o in p.get("overrides") or []})
    # reports made before the vocabulary was recorded summarise as they were written
    setting = ([f"V = {report['vocab_size']:,}"] if report.get("vocab_size") else []) + (
        [f"vanilla: `{' '.join(vanilla_own)}`"] if vanilla_own else [])
    return report["study"] + (f" ({'; '.join(setting)})" if setting else ""), label, entry


def summary_row(report: dict) -> str:
    """One Markdown row of `summary_entry`'s metric."""
    name, label, entry = summary_entry(report)
    by = {f: [p for p in report["pieces"] if p["flavour"] == f] for f in ("headless", "vanilla")}
    epochs = " / ".join(f"{statistics.fmean(p['pretrain'].get('epochs', 0) for p in by[f]):.1f}" if by[f] else "–"
                        for f in by)
    seeds = " / ".join(str(len(found)) for found in twin_seeds(report["pieces"]).values())
    if "delta" in entry:
        b = entry.get("paired_bootstrap")
        spread = (f" [{b['low']:+.2f}, {b['high']:+.2f}]" if b else
                  f" ± {entry['delta_se']:.2f} (s.e.)" if entry.get("delta_se") is not None else "")
        # the longer twin's curve read at the other's last GPU second (the paper's comparison)
        at = entry.get("delta_at_vanilla_gpu_s", entry.get("delta_at_headless_gpu_s"))
        cells = [f"{entry['headless']['mean']:.2f}", f"{entry['vanilla']['mean']:.2f}", f"{entry['delta']:+.2f}{spread}",
                 "–" if at is None else f"{at:+.2f}"]
    else:
        cells = ["–", "–", "needs both twins", "–"]
    status = f"superseded: {report['_superseded']}" if report.get("_superseded") else "current"
    unpaired = unpaired_gpu_seeds(report)
    if unpaired:
        status += f"; {_seeds_text(unpaired)}: twins on different GPU models"
    return f"| {name} | {report['_campaign']} | {label} | " + " | ".join(cells) + f" | {epochs} | {seeds} | {status} |"


def summary_markdown(report_paths: list[str | Path]) -> str:
    """`headless report --summary`: a table, one row per report, in the order given."""
    return SUMMARY_HEADER + "\n" + "\n".join(summary_row(load_report(p)) for p in report_paths) + "\n"


def summary_points(report_paths: list[str | Path]) -> list[dict]:
    """The summary's differences, as plotted by `summary_plot` (and kept in its PNG's metadata)."""
    points = []
    for path in report_paths:
        report = load_report(path)
        name, label, entry = summary_entry(report)
        if "delta" not in entry:
            continue
        b = entry.get("paired_bootstrap")
        points.append({"campaign": report["_campaign"], "study": name.replace("`", ""), "metric": label,
                       "seeds": "/".join(str(len(found)) for found in twin_seeds(report["pieces"]).values()),
                       "delta": round(entry["delta"], 4), "low": round(b["low"], 4) if b else None,
                       "high": round(b["high"], 4) if b else None, "superseded": bool(report.get("_superseded"))})
    return points


def summary_plot(report_paths: list[str | Path], path: str | Path) -> Path:
    """`headless report --summary ... --plot PNG`: headless − vanilla of every report's summary
    metric with its 95 % paired bootstrap, one panel per metric (their units differ); a grey
    whisker crosses 0.  The plotted numbers go into the PNG's "Description" text chunk."""
    from headless.eval.plots import forest_panels

    points = summary_points(report_paths)
    if not points:
        raise HeadlessError("headless report --plot: no report with both twins to plot")
    panels: dict[str, list[tuple]] = {}
    for p in points:
        tag = ", superseded" if p["superseded"] else ""
        panels.setdefault(p["metric"], []).append(
            (f"{p['campaign']}\n{p['study']}, seeds {p['seeds']}{tag}", p["delta"], p["low"], p["high"]))
    return forest_panels([(metric, "headless − vanilla (points; 95 % paired bootstrap)", rows)
                          for metric, rows in panels.items()], Path(path), width=11.0,
                         metadata={"Description": json.dumps(points, sort_keys=True)})
