"""Several benchmarks in one run, and their outputs.

OUT/results.json      settings, per-benchmark metrics, the average across benchmarks
OUT/results.md        the same as a Markdown table
OUT/samples/NAME.jsonl          one line per sample (prompt, completion, extracted, correct, timed_out, ...)
OUT/samples/NAME.greedy.jsonl   the greedy pass, when asked for next to sampling

The outputs are rewritten after every benchmark, so an interrupted run keeps what it finished; run
again with the same settings and the finished benchmarks are read back instead of sampled again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sgpo.data import read_rows, write_json, write_rows
from sgpo.evaluation.benchmarks import Benchmark
from sgpo.evaluation.harness import EvalResult, eval_settings, evaluate_records
from sgpo.prompts import PromptFormat

logger = logging.getLogger(__name__)


def _json_roundtrip(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _resumed(out_dir: Path, previous: dict, bench: Benchmark, settings: dict, tag: str) -> EvalResult | None:
    """The result of an earlier run of this benchmark with the same settings, read back from disk."""
    entry = previous.get("benchmarks", {}).get(bench.name, {})
    entry = entry.get("greedy_run", {}) if tag == "greedy" else entry
    path = out_dir / "samples" / f"{bench.name}{'.greedy' if tag == 'greedy' else ''}.jsonl"
    if not entry or not path.is_file():
        return None
    if entry.get("settings") != _json_roundtrip(settings) or entry.get("source") != bench.source or entry.get("n") != len(bench):
        return None
    samples = read_rows(path)
    k = settings["k"]
    if [s.get("id") for s in samples] != [r["id"] for r in bench.records for _ in range(k)]:
        return None
    return EvalResult(records=bench.records, samples=samples, k=k, settings=settings)


def average(entries: dict[str, dict]) -> dict[str, Any]:
    """Unweighted mean over benchmarks (each benchmark counts once, whatever its size), as papers
    report their "Avg." column; pass@j only for the j every benchmark has."""
    if not entries:
        return {}
    vals = list(entries.values())
    common = set.intersection(*(set(e["pass_at_k"]) for e in vals))
    out: dict[str, Any] = {
        "benchmarks": list(entries),
        "accuracy": sum(e["accuracy"] for e in vals) / len(vals),
        "pass_at_k": {j: sum(e["pass_at_k"][j] for e in vals) / len(vals) for j in sorted(common, key=int)},
    }
    if all("greedy_accuracy" in e for e in vals):
        out["greedy_accuracy"] = sum(e["greedy_accuracy"] for e in vals) / len(vals)
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def markdown_table(doc: dict[str, Any]) -> str:
    """The results as a Markdown table (percentages)."""
    benches = doc.get("benchmarks", {})
    if not benches:
        return "_no results_\n"
    k = max(e["k"] for e in benches.values())
    js = sorted({j for e in benches.values() for j in e["pass_at_k"] if j != "1" and int(j) > 1}, key=int)
    greedy = any("greedy_accuracy" in e for e in benches.values())
    head = ["benchmark", "n", f"avg@{k}" if k > 1 else "accuracy", "95% CI"] + [f"pass@{j}" for j in js]
    head += ["greedy"] if greedy and k > 1 else []
    head += ["timeouts", "mean tokens"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name, e in benches.items():
        row = [name, str(e["n"]), _pct(e["accuracy"]), f"{_pct(e['ci95'][0])}–{_pct(e['ci95'][1])}"]
        row += [_pct(e["pass_at_k"].get(j)) for j in js]
        row += [_pct(e.get("greedy_accuracy"))] if greedy and k > 1 else []
        row += [str(e["num_timeouts"]), f"{e['mean_completion_tokens']:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    avg = doc.get("average", {})
    if len(benches) > 1 and avg:
        row = ["**average**", "", _pct(avg["accuracy"]), ""] + [_pct(avg["pass_at_k"].get(j)) for j in js]
        row += [_pct(avg.get("greedy_accuracy"))] if greedy and k > 1 else []
        row += ["", ""]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _write_outputs(out_dir: Path, doc: dict[str, Any]) -> None:
    doc["average"] = average(doc["benchmarks"])
    write_json(out_dir / "results.json", doc)
    (out_dir / "results.md").write_text(markdown_table(doc), encoding="utf-8")


def run_suite(
    generator,
    benchmarks: Sequence[Benchmark],
    out_dir: str | Path,
    *,
    model_name: str,
    k: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 512,
    guided: bool = False,
    prompt_format: PromptFormat | None = None,
    seed: int | None = None,
    verifier=None,
    greedy: bool = False,
    overwrite: bool = False,
    progress=None,
) -> dict[str, Any]:
    """Evaluate `generator` (see `harness.make_generator`) on each benchmark; write and return the
    results document. `greedy=True` adds a greedy pass when sampling (temperature > 0)."""
    out_dir = Path(out_dir)
    (out_dir / "samples").mkdir(parents=True, exist_ok=True)
    fmt = prompt_format or PromptFormat()
    previous: dict[str, Any] = {}
    if not overwrite and (out_dir / "results.json").is_file():
        try:
            previous = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            logger.warning("%s/results.json is not valid JSON; starting over", out_dir)
    doc: dict[str, Any] = {
        "model": model_name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "settings": _json_roundtrip(eval_settings(k=k, temperature=temperature, top_p=top_p,
                                                  max_new_tokens=max_new_tokens, guided=guided, seed=seed,
                                                  backend=generator.name, prompt_format=fmt)),
        "benchmarks": {},
        "average": {},
    }
    passes = [("main", k, temperature)] + ([("greedy", 1, 0.0)] if greedy and temperature > 0 else [])
    for bench in benchmarks:
        entry: dict[str, Any] = {}
        for tag, kk, temp in passes:
            settings = eval_settings(k=kk, temperature=temp, top_p=top_p, max_new_tokens=max_new_tokens,
                                     guided=guided, seed=seed, backend=generator.name, prompt_format=fmt)
            result = _resumed(out_dir, previous, bench, settings, tag)
            if result is not None:
                if progress:
                    progress(f"{bench.name}{' (greedy)' if tag == 'greedy' else ''}: read back from an earlier run "
                             "with the same settings (--overwrite to run it again)")
            else:
                if progress:
                    progress(f"{bench.name}: {len(bench)} problems × {kk} sample(s){' (greedy)' if tag == 'greedy' else ''}")
                result = evaluate_records(generator, None, bench.records, k=kk, temperature=temp, top_p=top_p,
                                          max_new_tokens=max_new_tokens, guided=guided, prompt_format=fmt,
                                          verifier=verifier, seed=seed)
            samples_path = out_dir / "samples" / f"{bench.name}{'.greedy' if tag == 'greedy' else ''}.jsonl"
            write_rows(samples_path, result.samples)
            summary = _json_roundtrip(result.summary())
            summary.update(source=bench.source, samples_file=str(samples_path.relative_to(out_dir)))
            if tag == "main":
                entry.update(summary)
            else:
                entry["greedy_run"] = summary
                entry["greedy_accuracy"] = summary["accuracy"]
                entry["greedy_ci95"] = summary["ci95"]
        doc["benchmarks"][bench.name] = entry
        _write_outputs(out_dir, doc)
    return doc
