"""Several benchmarks in one run, and their outputs.

OUT/results.json      settings, per-benchmark metrics, the average across benchmarks
OUT/results.md        the same as a Markdown table
OUT/samples/NAME.jsonl          one line per sample (prompt, completion, extracted, correct, timed_out, ...)
OUT/samples/NAME.greedy.jsonl   the greedy pass, when asked for next to sampling

The outputs are rewritten after every benchmark, so an interrupted run keeps what it finished; run
again with the same model (`model_identity`: the same files, not just the same folder name) and the
same settings and the finished benchmarks are read back instead of sampled again.

`default_out_dir` is where `sgpo eval` writes when no `--out` is given: inside the model's folder
(`MODEL/eval/TAG`), where `sgpo report MODEL` finds it, one folder per benchmark set and sampling mode.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from sgpo.data import read_rows, write_json, write_rows
from sgpo.evaluation.benchmarks import Benchmark
from sgpo.evaluation.harness import EvalConfig, EvalResult, eval_settings, evaluate_records

logger = logging.getLogger(__name__)


def _json_roundtrip(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


#: files of a model folder that decide its outputs: weights, config, tokenizer, chat template
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json", ".model", ".txt", ".jinja")


def model_identity(model: str | os.PathLike) -> dict[str, Any]:
    """What makes two evaluated models the same, for reading results back.

    A local folder (or file): its resolved path and, for each top-level file with a suffix in
    `MODEL_FILE_SUFFIXES`, its name, size and modification time in ns. Anything else (a hub id, a
    label): `{"name": model}`, plus the commit of the hub cache's snapshot when the id is cached.

    Sizes and modification times rather than a hash of the contents: hashing reads every weight byte
    (minutes for a large model, at every start), and a hash of the safetensors header alone (tensor
    names, dtypes, shapes, offsets) is the same for every checkpoint of one architecture, so it cannot
    tell two trainings apart. Saving a model rewrites its files, so new weights always get a new
    fingerprint; a copy that does not keep the times (`cp` without `-p`) or a `touch` gets a new one
    too — that costs a re-evaluation, never a wrong read-back.
    """
    path = Path(str(model)).expanduser()
    if path.exists():
        path = path.resolve()
        files = (
            [path]
            if path.is_file()
            else sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MODEL_FILE_SUFFIXES)
        )
        stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        return {"path": str(path), "files": [list(s) for s in stats]}
    identity: dict[str, Any] = {"name": str(model)}
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(model), "config.json")
        if isinstance(cached, str):  # .../snapshots/<commit>/config.json
            identity["revision"] = Path(cached).parent.name
    except Exception:  # noqa: BLE001 - not a valid hub id: the name alone identifies it
        pass
    return identity


def default_out_dir(model: str | os.PathLike, benchmarks: Sequence[Benchmark], config: EvalConfig) -> Path:
    """`MODEL/eval/TAG` for a local model folder (found there by `sgpo report MODEL`), else
    `eval/ORG__NAME/TAG`. TAG names the benchmarks and the sampling mode, e.g. `math500+aime24-k8-t0.6`,
    `heldout-guided`, so two evaluations of one model with other benchmarks or modes keep both."""
    s = config.sampling
    tag = "+".join(b.name for b in benchmarks)
    tag += (f"-k{s.k}" if s.k > 1 else "") + (f"-t{s.temperature:g}" if s.temperature > 0 else "")
    tag += "-guided" if config.guided else ""
    tag = re.sub(r"[^A-Za-z0-9._+=-]", "_", tag)
    if len(tag) > 100:
        tag = tag[:80] + "-" + hashlib.sha256(tag.encode()).hexdigest()[:12]
    path = Path(str(model)).expanduser()
    if path.is_dir():
        return path / "eval" / tag
    return Path("eval") / re.sub(r"[^A-Za-z0-9._-]", "_", str(model).replace("/", "__")) / tag


def _resumed(out_dir: Path, previous: dict, bench: Benchmark, settings: dict, tag: str) -> EvalResult | None:
    """The result of an earlier run of this benchmark with the same settings, read back from disk
    (the caller has checked that `previous` is of the same model)."""
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
    config: EvalConfig = EvalConfig(),
    *,
    model: str | os.PathLike,
    greedy: bool = False,
    overwrite: bool = False,
    verifier=None,
    progress=None,
) -> dict[str, Any]:
    """Evaluate `generator` (see `harness.make_generator`) on each benchmark; write and return the
    results document. `model` is the path or hub id the generator was loaded from (or a label):
    results in `out_dir` are read back only when they are of the same `model_identity(model)` and
    settings. `greedy=True` adds a greedy pass when sampling (temperature > 0)."""
    out_dir = Path(out_dir)
    (out_dir / "samples").mkdir(parents=True, exist_ok=True)
    identity = _json_roundtrip(model_identity(model))
    previous: dict[str, Any] = {}
    if not overwrite and (out_dir / "results.json").is_file():
        try:
            previous = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            logger.warning("%s/results.json is not valid JSON; starting over", out_dir)
        if previous and previous.get("model_identity") != identity:
            if progress:
                progress(
                    f"{out_dir} holds results of another model ({previous.get('model', '?')}, or its files "
                    "changed since); evaluating again"
                )
            previous = {}
    doc: dict[str, Any] = {
        "model": str(model),
        "model_identity": identity,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "settings": _json_roundtrip(eval_settings(config, generator.name)),
        "benchmarks": {},
        "average": {},
    }
    s = config.sampling
    passes = [("main", config)]
    if greedy and s.temperature > 0:
        passes.append(("greedy", replace(config, sampling=replace(s, k=1, temperature=0.0))))
    for bench in benchmarks:
        entry: dict[str, Any] = {}
        for tag, cfg in passes:
            label = f"{bench.name}{' (greedy)' if tag == 'greedy' else ''}"
            settings = eval_settings(cfg, generator.name)
            result = _resumed(out_dir, previous, bench, settings, tag)
            if result is not None:
                if progress:
                    progress(
                        f"{label}: read back from an earlier run of this model with the same settings "
                        "(--overwrite to run it again)"
                    )
            else:
                if progress:
                    progress(f"{label}: {len(bench)} problems × {cfg.sampling.k} sample(s)")
                result = evaluate_records(generator, None, bench.records, cfg, verifier=verifier)
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
