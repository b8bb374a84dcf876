"""How selective is the distillation signal? Per-token KL(teacher ‖ student) on guided trajectories.

For a problem x, its strategy s and a guided trajectory ỹ (the data's strong `response`, or one
completion sampled from the model with s in its prompt), the teacher is the model on the guided
prompt x ⊕ s and the student the same model on the autonomous prompt x; both score the same tokens
ỹ_t, and per token

    KL_t = Σ_v q_t(v) (log q_t(v) − log p_t(v)),   q_t = π(·| x ⊕ s, ỹ_<t),  p_t = π(·| x, ỹ_<t)

— the quantity SGPO's distillation term minimises. The summary says how concentrated it is: the share
of the total KL mass carried by the top 1% / 5% / 10% of tokens, and, where the data marks
strategy-critical spans, the share of KL mass on those tokens against their share of tokens.

Critical spans are CHARACTER spans into the `response` text, column `critical_spans`:
`[[start, end], ...]` with `end` exclusive; a token is critical when its character range (from the
fast tokenizer's offset mapping) overlaps a span.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sgpo.data import DataError
from sgpo.objectives.divergence import token_divergence
from sgpo.objectives.lm_head import distill_terms
from sgpo.prompts import tokenize_prompts
from sgpo.rollout import generate_completions
from sgpo.strategies.base import Strategy, render_strategy

TOP_FRACTIONS = (0.01, 0.05, 0.10)


# ----------------------------------------------------------------------------- pure functions


def overlapping_tokens(offsets: Sequence[Sequence[int]], spans: Sequence[Sequence[int]]) -> list[bool]:
    """For each token's character range [s, e), whether it overlaps any span [a, b): s < b and a < e.
    Zero-width tokens (s == e, e.g. special tokens) overlap nothing."""
    out = []
    for s, e in offsets:
        out.append(s < e and any(s < b and a < e for a, b in spans))
    return out


def top_mass_shares(kl: Sequence[float], fractions: Sequence[float] = TOP_FRACTIONS) -> dict[str, float | None]:
    """Share of the total KL mass on the top ⌈f·N⌉ tokens (at least one), for each fraction f.
    Negative values (float round-off of a zero KL) count as 0. None when the total is 0."""
    vals = sorted((max(0.0, float(v)) for v in kl), reverse=True)
    total = sum(vals)
    out: dict[str, float | None] = {}
    for f in fractions:
        key = f"{100 * f:g}%"
        if not vals or total <= 0:
            out[key] = None
            continue
        m = max(1, math.ceil(f * len(vals) - 1e-9))
        out[key] = sum(vals[:m]) / total
    return out


def critical_share(kl: Sequence[float], critical: Sequence[bool]) -> dict[str, float | None]:
    """KL-mass share of the critical tokens, their token share, and the ratio of the two
    (enrichment: 1 = the KL is spread as the tokens are; >1 = concentrated on critical tokens)."""
    if len(kl) != len(critical):
        raise ValueError(f"{len(kl)} KL values but {len(critical)} critical flags")
    vals = [max(0.0, float(v)) for v in kl]
    total = sum(vals)
    n = len(vals)
    token_share = sum(map(bool, critical)) / n if n else None
    mass_share = sum(v for v, c in zip(vals, critical) if c) / total if total > 0 else None
    enrichment = mass_share / token_share if mass_share is not None and token_share else None
    return {"token_share": token_share, "kl_mass_share": mass_share, "enrichment": enrichment}


# ----------------------------------------------------------------------------- model side


def _plain_head(model) -> bool:
    cfg = getattr(model, "config", None)
    odd = any(getattr(cfg, a, None) not in (None, 1.0) for a in ("final_logit_softcapping", "logit_scale"))
    head = model.get_output_embeddings()
    return not odd and isinstance(head, torch.nn.Linear)


@torch.no_grad()
def token_kl(
    model,
    teacher_prompt_ids: Sequence[int],
    student_prompt_ids: Sequence[int],
    completion_ids: Sequence[int],
    *,
    temperature: float = 1.0,
    chunk: int = 256,
) -> dict[str, torch.Tensor]:
    """Per completion token: `kl` KL(teacher‖student), `teacher_logp` and `student_logp` of the token.

    Each prompt is followed by the same completion; the distributions over token t come from the
    position before it. Full-vocabulary logits exist only for `chunk` positions at a time (from the
    final hidden states and the LM head) when the head is a plain linear map. All (C,).
    """

    C = len(completion_ids)
    if C == 0:
        empty = torch.zeros(0)
        return {"kl": empty, "teacher_logp": empty, "student_logp": empty}
    device = next(model.parameters()).device
    targets = torch.as_tensor(list(completion_ids), dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    try:
        if _plain_head(model):
            head = model.get_output_embeddings()

            def states(prompt):
                ids = torch.as_tensor([list(prompt) + list(completion_ids)], dtype=torch.long, device=device)
                h = model.base_model(input_ids=ids).last_hidden_state[0]  # (P+C, H)
                return h[len(prompt) - 1 : len(prompt) - 1 + C]  # positions predicting the completion

            h_t, h_s = states(teacher_prompt_ids), states(student_prompt_ids)
            parts = [
                distill_terms(
                    h_s[a : a + chunk],
                    h_t[a : a + chunk],
                    head.weight,
                    targets[a : a + chunk],
                    temperature=temperature,
                    bias=head.bias,
                )
                for a in range(0, C, chunk)
            ]
            return {
                "kl": torch.cat([p.divergence for p in parts]).float().cpu(),
                "teacher_logp": torch.cat([p.teacher_logp for p in parts]).float().cpu(),
                "student_logp": torch.cat([p.student_logp for p in parts]).float().cpu(),
            }
        # logit soft-capping / scaling: take the model's own logits for the completion positions

        def logits(prompt):
            ids = torch.as_tensor([list(prompt) + list(completion_ids)], dtype=torch.long, device=device)
            out = model(input_ids=ids, logits_to_keep=C + 1).logits[0, :-1]  # (C, V)
            return out.float() / temperature

        lt, ls = logits(teacher_prompt_ids), logits(student_prompt_ids)
        kl = token_divergence(ls, lt, "forward_kl")
        pick = targets.unsqueeze(-1)
        return {
            "kl": kl.cpu(),
            "teacher_logp": lt.log_softmax(-1).gather(-1, pick).squeeze(-1).cpu(),
            "student_logp": ls.log_softmax(-1).gather(-1, pick).squeeze(-1).cpu(),
        }
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------- rows


@dataclass
class Trajectory:
    """One guided trajectory, tokenised, with its per-token KL."""

    id: str
    problem: str
    strategy: str
    text: str
    source: str  # "response" or "sampled"
    token_ids: list[int]
    token_texts: list[str]
    spans: list[tuple[int, int]] | None  # character range of each token in `text` (None: not known)
    critical: list[bool] | None
    kl: list[float] = field(default_factory=list)
    teacher_logp: list[float] = field(default_factory=list)
    student_logp: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _check_spans(value: Any, text: str, where: str) -> list[tuple[int, int]]:
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{where}: column 'critical_spans' must be a list of [start, end] pairs, got {type(value).__name__}")
    spans = []
    for j, pair in enumerate(value):
        ok = (
            isinstance(pair, (list, tuple))
            and len(pair) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in pair)
        )
        if not ok or not 0 <= pair[0] < pair[1] <= len(text):
            raise DataError(
                f"{where}: column 'critical_spans' entry {j} is {pair!r}; need [start, end] with "
                f"0 <= start < end <= {len(text)} (character offsets into 'response', end exclusive)"
            )
        spans.append((pair[0], pair[1]))
    return spans


def tokenize_response(
    tokenizer, text: str, critical_spans: Any, where: str
) -> tuple[list[int], list[str], list | None, list | None]:
    """Token ids of a response, their texts, their character ranges, and which are critical."""
    spans_given = critical_spans is not None
    spans = _check_spans(critical_spans, text, where) if spans_given else None
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        ids = list(enc["input_ids"])
        texts = [text[s:e] for s, e in offsets]
        critical = overlapping_tokens(offsets, spans) if spans is not None else None
        return ids, texts, offsets, critical
    if spans_given:
        raise DataError(f"{where}: critical spans need a fast tokenizer (its offset mapping maps characters to tokens)")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return list(ids), token_texts(tokenizer, ids), None, None


def token_texts(tokenizer, ids: Sequence[int]) -> list[str]:
    """The text of each token on its own (for display; a token that decodes to nothing, such as a
    special token, shows as itself)."""
    return [tokenizer.convert_tokens_to_string([t]) or str(t) for t in tokenizer.convert_ids_to_tokens(list(ids))]


def strategy_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return render_strategy(Strategy.model_validate(value))
    return value if isinstance(value, str) and value.strip() else None


def build_trajectories(
    model,
    tokenizer,
    rows: Sequence[dict[str, Any]],
    *,
    prompt_format,
    source_name: str,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    seed: int | None = None,
) -> list[Trajectory]:
    """Tokenised guided trajectories: each row's `response`, or one completion sampled from `model`
    with the strategy in its prompt when the row has no response."""

    trajs: list[Trajectory] = []
    to_sample: list[int] = []
    for i, row in enumerate(rows):
        where = f"{source_name}: row {i} (id {row.get('id', i)})"
        strategy = strategy_text(row.get("strategy"))
        if strategy is None:
            raise DataError(f"{where}: column 'strategy' is missing or empty; the teacher needs it in its prompt")
        response = row.get("response")
        traj = Trajectory(
            id=str(row.get("id", i)),
            problem=row["problem"],
            strategy=strategy,
            text="",
            source="",
            token_ids=[],
            token_texts=[],
            spans=None,
            critical=None,
            extra={k: row[k] for k in ("family", "answer") if k in row},
        )
        if isinstance(response, str) and response.strip():
            ids, texts, spans, critical = tokenize_response(tokenizer, response, row.get("critical_spans"), where)
            traj.text, traj.source, traj.token_ids, traj.token_texts = response, "response", ids, texts
            traj.spans, traj.critical = spans, critical
        else:
            to_sample.append(i)
        trajs.append(traj)
    if to_sample:
        if seed is not None:
            torch.manual_seed(seed)
        prompts = [prompt_format.render(tokenizer, trajs[i].problem, trajs[i].strategy) for i in to_sample]
        special = not prompt_format.applies_chat_template(tokenizer)
        gen = generate_completions(
            model,
            tokenizer,
            tokenize_prompts(tokenizer, prompts, max_length=None, add_special_tokens=special),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
        )
        for j, i in enumerate(to_sample):
            n = int(gen.completion_lengths[j])
            ids = gen.completion_ids[j, :n].tolist()
            t = trajs[i]
            t.source, t.token_ids, t.token_texts, t.text = "sampled", ids, token_texts(tokenizer, ids), gen.texts[j]
    return trajs


def score_trajectories(
    model, tokenizer, trajs: Sequence[Trajectory], *, prompt_format, temperature: float = 1.0, progress=None
) -> None:
    """Fill in each trajectory's per-token KL and log-probs (teacher: guided prompt; student: plain)."""

    special = not prompt_format.applies_chat_template(tokenizer)
    for n, t in enumerate(trajs):
        teacher, student = tokenize_prompts(
            tokenizer,
            [prompt_format.render(tokenizer, t.problem, t.strategy), prompt_format.render(tokenizer, t.problem)],
            max_length=None,
            add_special_tokens=special,
        )
        out = token_kl(model, teacher, student, t.token_ids, temperature=temperature)
        t.kl, t.teacher_logp, t.student_logp = out["kl"].tolist(), out["teacher_logp"].tolist(), out["student_logp"].tolist()
        if progress:
            progress(n + 1, len(trajs))


def summarize(trajs: Sequence[Trajectory]) -> dict[str, Any]:
    """Pooled over all tokens of all trajectories."""
    all_kl = [v for t in trajs for v in t.kl]
    total = sum(max(0.0, v) for v in all_kl)
    out: dict[str, Any] = {
        "rows": len(trajs),
        "tokens": len(all_kl),
        "kl_total": total,
        "kl_mean_per_token": total / len(all_kl) if all_kl else None,
        "kl_mean_per_trajectory": total / len(trajs) if trajs else None,
        "top_mass_share": top_mass_shares(all_kl),
        "sources": {s: sum(1 for t in trajs if t.source == s) for s in ("response", "sampled")},
    }
    with_spans = [t for t in trajs if t.critical is not None]
    if with_spans:
        kl = [v for t in with_spans for v in t.kl]
        crit = [c for t in with_spans for c in t.critical]  # type: ignore[union-attr]
        out["critical"] = {"rows": len(with_spans), "tokens": len(kl), "critical_tokens": sum(crit), **critical_share(kl, crit)}
    return out


# ----------------------------------------------------------------------------- outputs


def plot_concentration(trajs: Sequence[Trajectory], summary: dict, out_path: Path) -> bool:
    """Cumulative share of KL mass against the share of tokens, tokens sorted by KL (a Lorenz-style
    curve; the diagonal is KL spread evenly)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    vals = sorted((max(0.0, v) for t in trajs for v in t.kl), reverse=True)
    total = sum(vals)
    if not vals or total <= 0:
        return False
    fig = Figure(figsize=(5.2, 3.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    n = len(vals)
    cum, acc = [0.0], 0.0
    for v in vals:
        acc += v
        cum.append(acc / total)
    ax.plot([i / n for i in range(n + 1)], cum, color="#d62728", linewidth=1.8, label="tokens sorted by KL")
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", linewidth=1, label="KL spread evenly")
    for key, share in summary["top_mass_share"].items():
        if share is not None:
            f = float(key.rstrip("%")) / 100
            ax.plot([f], [share], "o", color="#d62728", markersize=4)
            ax.annotate(f"top {key}: {100 * share:.0f}%", (f, share), textcoords="offset points", xytext=(6, -10), fontsize=8)
    crit = summary.get("critical")
    if crit and crit.get("kl_mass_share") is not None:
        ax.plot(
            [crit["token_share"]],
            [crit["kl_mass_share"]],
            "s",
            color="#1f77b4",
            markersize=6,
            label=f"critical tokens ({100 * crit['token_share']:.0f}% of tokens, {100 * crit['kl_mass_share']:.0f}% of KL)",
        )
    ax.set_xlabel("share of tokens")
    ax.set_ylabel("share of total KL mass")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, frameon=False, loc="lower right")
    ax.set_title("Where the KL(teacher ‖ student) mass sits", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_path)
    return True


def _colour(kl: float, scale: float) -> str:
    a = 0.0 if scale <= 0 else min(1.0, max(0.0, kl) / scale)
    return f"rgba(214,39,40,{a:.3f})"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.4em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; } th, td { border: 1px solid #ccc; padding: 3px 9px; text-align: right; }
td:first-child, th:first-child { text-align: left; } th { background: #f3f3f3; }
.traj { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.85em; white-space: pre-wrap; line-height: 1.7;
        border: 1px solid #e5e5e5; padding: 8px; border-radius: 4px; }
.t { border-radius: 2px; } .crit { border-bottom: 2px solid #1f77b4; }
.meta { color: #555; font-size: 0.85em; } details { margin: 4px 0; } summary { cursor: pointer; color: #444; }
.legend span { display: inline-block; width: 28px; height: 12px; vertical-align: middle; }
.top { display: flex; gap: 24px; align-items: flex-start; flex-wrap: wrap; }
"""


def _token_spans_html(t: Trajectory, scale: float) -> str:
    out = []
    pos = 0
    for j, text in enumerate(t.token_texts):
        if t.spans is not None:
            s, e = t.spans[j]
            if s > pos:  # text between tokens (e.g. spaces a pre-tokenizer dropped)
                out.append(html.escape(t.text[pos:s]))
            pos = max(pos, e)
        cls = "t crit" if t.critical is not None and t.critical[j] else "t"
        tip = f"KL={t.kl[j]:.4f} | log q={t.teacher_logp[j]:.3f} | log p={t.student_logp[j]:.3f}"
        out.append(
            f"<span class='{cls}' style='background:{_colour(t.kl[j], scale)}' title='{html.escape(tip)}'>"
            f"{html.escape(text)}</span>"
        )
    if t.spans is not None and pos < len(t.text):
        out.append(html.escape(t.text[pos:]))
    return "".join(out)


def colour_scale(trajs: Sequence[Trajectory]) -> float:
    """The KL that gets the full colour: the 99th percentile over all tokens (outliers saturate)."""
    vals = sorted(max(0.0, v) for t in trajs for v in t.kl)
    if not vals:
        return 0.0
    return vals[min(len(vals) - 1, int(0.99 * (len(vals) - 1) + 0.5))] or vals[-1]


def render_html(trajs: Sequence[Trajectory], summary: dict, out_path: Path, figure: str | None, title: str) -> None:
    scale = colour_scale(trajs)
    parts = [
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p class='meta'>Each token of a guided trajectory is coloured by KL(teacher ‖ student): the teacher is the "
        "model with the strategy in its prompt, the student the same model without it, both scoring the same "
        "token. Hover a token for its KL and both log-probabilities. Underlined: strategy-critical tokens.</p>",
    ]
    rows = [
        ["trajectories", summary["rows"]],
        ["tokens", summary["tokens"]],
        ["mean KL per token (nats)", f"{summary['kl_mean_per_token']:.4f}" if summary["kl_mean_per_token"] is not None else "–"],
    ]
    rows += [[f"KL mass on the top {k} of tokens", _pct(v)] for k, v in summary["top_mass_share"].items()]
    crit = summary.get("critical")
    if crit:
        rows += [
            ["critical tokens: share of tokens", _pct(crit["token_share"])],
            ["critical tokens: share of KL mass", _pct(crit["kl_mass_share"])],
            ["enrichment (mass share / token share)", f"{crit['enrichment']:.2f}×" if crit["enrichment"] is not None else "–"],
        ]
    table = (
        "<table>"
        + "".join(f"<tr><td>{html.escape(str(a))}</td><td>{html.escape(str(b))}</td></tr>" for a, b in rows)
        + "</table>"
    )
    img = f"<img src='{html.escape(figure)}' alt='KL concentration' width='440'>" if figure else ""
    parts.append(f"<div class='top'>{table}{img}</div>")
    parts.append(
        "<p class='legend'>colour scale: <span style='background:rgba(214,39,40,0.05)'></span> 0 "
        f"<span style='background:rgba(214,39,40,0.5)'></span> {scale / 2:.3g} "
        f"<span style='background:rgba(214,39,40,1)'></span> ≥ {scale:.3g} nats</p>"
    )
    for t in trajs:
        kl_sum = sum(max(0.0, v) for v in t.kl)
        meta = f"id {t.id} · {len(t.token_ids)} tokens ({t.source}) · KL sum {kl_sum:.3f}"
        if "family" in t.extra:
            meta += f" · family {t.extra['family']}"
        if t.critical is not None:
            cs = critical_share(t.kl, t.critical) if t.kl else {}
            meta += f" · critical: {_pct(cs.get('token_share'))} of tokens, {_pct(cs.get('kl_mass_share'))} of KL"
        parts.append(f"<h2>{html.escape(t.id)}</h2><p class='meta'>{html.escape(meta)}</p>")
        parts.append(f"<details><summary>problem</summary><div class='traj'>{html.escape(t.problem)}</div></details>")
        parts.append(f"<details><summary>strategy</summary><div class='traj'>{html.escape(t.strategy)}</div></details>")
        parts.append(f"<div class='traj'>{_token_spans_html(t, scale)}</div>")
    parts.append("</body></html>")
    out_path.write_text("\n".join(parts), encoding="utf-8")


def write_outputs(trajs: Sequence[Trajectory], summary: dict, out_dir: Path, title: str) -> dict[str, Path]:
    """selectivity.html, summary.json, tokens.jsonl and kl_concentration.png in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out_dir / "summary.json", "tokens": out_dir / "tokens.jsonl", "html": out_dir / "selectivity.html"}
    fig = out_dir / "kl_concentration.png"
    has_fig = plot_concentration(trajs, summary, fig)
    if has_fig:
        paths["figure"] = fig
    paths["summary"].write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    with paths["tokens"].open("w", encoding="utf-8") as fh:
        for t in trajs:
            fh.write(
                json.dumps(
                    {
                        "id": t.id,
                        "source": t.source,
                        "token_ids": t.token_ids,
                        "tokens": t.token_texts,
                        "kl": t.kl,
                        "teacher_logp": t.teacher_logp,
                        "student_logp": t.student_logp,
                        "critical": t.critical,
                        **t.extra,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    render_html(trajs, summary, paths["html"], fig.name if has_fig else None, title)
    return paths
