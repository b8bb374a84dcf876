"""Problem data sets: reading JSONL / JSON / parquet / `datasets` objects, and validating them.

Every error names the source (file or data set), the row and the column, and lists the columns that
were found, so a bad row in a 46k-row file is found without opening a debugger.

Canonical columns after `load_problems`: `id` (str, unique), `problem` (str), `answer` (str),
`strategy` (str or None); any other columns are kept and passed to reward functions. TRL's data
formats are read too: a `prompt` column instead of `problem` — standard (a string) or conversational
(a list of `{"role", "content"}` messages; `problem` is then its last user message) — kept as given in
`PROMPT_GIVEN`, and a `solution` column as the answer when there is no `answer` column.
`tokenize_problems` adds the prompts as text and token ids (the `INTERNAL_COLUMNS`, which reward
functions never see): a prompt that does not fit fails here, before a model is loaded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sgpo.prompts import PromptFormat, tokenize_prompts

if TYPE_CHECKING:  # imported lazily: `datasets` costs ~2 s at start-up
    import datasets

logger = logging.getLogger(__name__)

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
# the columns `tokenize_problems` adds (never passed to reward functions)
PROMPT_IDS, GUIDED_IDS, PROMPT_TEXT, GUIDED_TEXT = "_prompt_ids", "_guided_ids", "_prompt_text", "_guided_text"
RESPONSE_IDS = "_response_ids"  # the strong response as completion tokens (mix_strong_responses)
PROMPT_GIVEN = "_prompt"  # TRL's `prompt` as the data gave it (str or messages); absent for `problem` data
INTERNAL_COLUMNS = (PROMPT_IDS, GUIDED_IDS, PROMPT_TEXT, GUIDED_TEXT, RESPONSE_IDS, PROMPT_GIVEN)
TRL_PROMPT, TRL_SOLUTION = "prompt", "solution"  # TRL's column names (its standard and conversational formats)


class DataError(ValueError):
    """A data set is missing, empty or malformed. The message names the file, row and column."""


@dataclass(frozen=True)
class ColumnMap:
    """Which source column holds each canonical field."""

    problem: str = "problem"
    answer: str = "answer"
    strategy: str = "strategy"
    id: str = "id"


def _source_name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"<{type(source).__name__}>"


def iter_jsonl(path: str | os.PathLike):
    """`(line number, value, None)` for each non-blank line of a JSONL file, or `(line number, None,
    the json.JSONDecodeError)` where a line does not parse; the caller decides to raise or skip."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line), None
            except json.JSONDecodeError as exc:
                yield lineno, None, exc


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON, atomically (a temporary file renamed over `path`), so a reader or
    an interrupted run never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


def atomic_dir(final: Path, write: Callable[[Path], Any]) -> Path:
    """Write a folder under a temporary name (`<final>.tmp`, emptied first), then rename it into place."""
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a `.jsonl`, `.json` (a list of objects, or {"data": [...]}) or `.parquet` file into dicts."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for lineno, row, exc in iter_jsonl(path):
            if exc is not None:
                raise DataError(f"{path}: line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})")
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
        return rows
    if suffix == ".json":
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(obj, dict) and isinstance(obj.get("data"), list):
            obj = obj["data"]
        if not isinstance(obj, list):
            raise DataError(f'{path}: expected a list of objects (or {{"data": [...]}})')
        for i, row in enumerate(obj):
            if not isinstance(row, dict):
                raise DataError(f"{path}: row {i}: expected a JSON object, got {type(row).__name__}")
        return obj
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise DataError(f"{path}: unsupported file type {suffix!r} (use one of {', '.join(FILE_SUFFIXES)})")


def write_rows(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write rows as `.jsonl`, `.json` or `.parquet` (by suffix); the parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [dict(r) for r in rows]
    suffix = path.suffix.lower()
    tmp = path.with_name(path.name + ".tmp")
    if suffix == ".jsonl":
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif suffix == ".json":
        tmp.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp)
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r} (use one of {', '.join(FILE_SUFFIXES)})")
    os.replace(tmp, path)
    return path


def load_rows(source: Any, split: str = "train") -> tuple[list[dict[str, Any]], str]:
    """Rows of any supported source, plus a human-readable name of it for error messages.

    `source` may be a `datasets.Dataset`, a `DatasetDict` (the `split` is taken), an `IterableDataset`
    (streamed once, whole: every row is validated before training), a list of dicts, a
    file path (`.jsonl`, `.json`, `.parquet`), a folder written by `Dataset.save_to_disk`, or a
    Hugging Face hub id (needs network access, unless it is cached).
    """
    import datasets

    name = _source_name(source)
    if isinstance(source, datasets.DatasetDict):
        if split not in source:
            raise DataError(f"{name}: no split {split!r} (splits found: {', '.join(source)})")
        source = source[split]
    if isinstance(source, datasets.Dataset):
        return source.to_list(), name
    if isinstance(source, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        if isinstance(source, datasets.IterableDatasetDict):
            if split not in source:
                raise DataError(f"{name}: no split {split!r} (splits found: {', '.join(source)})")
            source = source[split]
        return [dict(r) for r in source], name  # read whole: the problems are shuffled and validated up front
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        return [dict(r) for r in source], name
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_file():
            return read_rows(path), name
        if path.is_dir():
            try:
                loaded = datasets.load_from_disk(str(path))
            except Exception as exc:  # noqa: BLE001 - re-raised with the path
                raise DataError(f"{path}: not a data set folder written by save_to_disk ({exc})") from exc
            return load_rows(loaded, split)
        looks_local = str(source).startswith((".", "/", "~")) or str(source).count("/") > 1
        if path.suffix.lower() in FILE_SUFFIXES or looks_local:
            raise DataError(f"{path}: no such file or folder")
        try:
            loaded = datasets.load_dataset(str(source), split=split)
        except Exception as exc:  # noqa: BLE001
            raise DataError(
                f"{source}: not a local file and could not be loaded from the Hugging Face hub ({exc}). "
                "Give a path to a .jsonl/.json/.parquet file when offline."
            ) from exc
        return loaded.to_list(), name
    raise DataError(f"unsupported data source of type {type(source).__name__}")


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    return None


def load_problems(
    source: Any,
    *,
    columns: ColumnMap = ColumnMap(),
    split: str = "train",
    require_answer: bool = True,
    require_strategy: bool = False,
    extra_required: Sequence[str] = (),
    name: str | None = None,
    trl_formats: bool = False,
) -> datasets.Dataset:
    """Load and validate a problem data set; returns a `datasets.Dataset` with canonical columns.
    Messages name the source by its path, or by `name` (e.g. "train_dataset") when it is in memory.

    Raises `DataError` naming the source, row and column for: an empty data set, a missing column
    (listing the columns found), a non-string / empty `problem` or `answer`, a duplicate `id`, and,
    with `require_strategy=True`, a missing or empty strategy. Without it, rows whose strategy is
    missing, empty or not a string get `strategy=None` and train with RL only. With `trl_formats` (the
    trainer's data), TRL's `prompt` and `solution` columns stand in for missing `problem` and `answer`
    ones (`trl_columns`); a `prompt` is kept as given in `PROMPT_GIVEN`.
    """
    import datasets

    rows, found_name = load_rows(source, split)
    name = found_name if name is None or isinstance(source, (str, os.PathLike)) else name
    if not rows:
        raise DataError(f"{name}: the data set is empty (0 rows)")
    columns = trl_columns(rows[0], columns, name) if trl_formats else columns
    found = sorted({k for r in rows[:1000] for k in r})
    required = [("problem", columns.problem)] + ([("answer", columns.answer)] if require_answer else [])
    required += [(c, c) for c in extra_required]

    def missing(i: int, col: str, row: Mapping[str, Any]) -> DataError:
        hint = ""
        if i == 0:
            field = [k for k, v in required if v == col][0]
            hint = (
                f" Map another column with `{field}_column` (--{field}-column on the command line)."
                if any(v == col for _, v in required)
                else ""
            )
        return DataError(f"{name}: row {i}: missing column {col!r} (columns found: {', '.join(sorted(row)) or 'none'}).{hint}")

    out: list[dict[str, Any]] = []
    seen_ids: dict[str, int] = {}
    for i, row in enumerate(rows):
        for canonical, col in required:
            if col not in row:
                raise missing(i, col, row)
            if col == TRL_PROMPT:
                continue  # checked by prompt_problem
            text = _as_text(row[col])
            if text is None or not text.strip():
                kind = "empty" if row[col] in (None, "") else f"a {type(row[col]).__name__}"
                raise DataError(f"{name}: row {i}: column {col!r} must be a non-empty string, got {kind}")
        # (TRL's `solution` stays a column as well: TRL's reward functions read it by that name)
        canonical = (columns.problem, columns.answer if columns.answer != TRL_SOLUTION else None, columns.strategy, columns.id)
        rec = {k: v for k, v in row.items() if k not in canonical}
        if columns.problem == TRL_PROMPT:
            rec["problem"] = prompt_problem(row[TRL_PROMPT], f"{name}: row {i}: column {TRL_PROMPT!r}", rows[0][TRL_PROMPT])
            rec[PROMPT_GIVEN] = row[TRL_PROMPT]
        else:
            rec["problem"] = _as_text(row[columns.problem])
        rec["answer"] = _as_text(row.get(columns.answer)) if columns.answer in row else None
        rec["id"] = _row_id(row, i, columns.id, seen_ids, name)
        rec["strategy"] = _row_strategy(row, i, columns.strategy, require_strategy, found, name)
        out.append(rec)
    return datasets.Dataset.from_list(out)


def trl_columns(first_row: Mapping[str, Any], columns: ColumnMap, name: str) -> ColumnMap:
    """`columns` with TRL's names where the data uses them: its `prompt` column when the default
    `problem` column is absent, its `solution` column when the default `answer` column is absent;
    each substitution is said in one line."""
    if columns.problem == "problem" and "problem" not in first_row and TRL_PROMPT in first_row:
        columns = replace(columns, problem=TRL_PROMPT)
    if columns.answer == "answer" and "answer" not in first_row and TRL_SOLUTION in first_row:
        logger.warning("%s: no 'answer' column: the answers are TRL's 'solution' column", name)
        columns = replace(columns, answer=TRL_SOLUTION)
    return columns


def is_conversation(value: Any) -> bool:
    """TRL's conversational format: a list of messages (dicts with `role` and `content`)."""
    return isinstance(value, list) and all(isinstance(m, Mapping) for m in value)


def prompt_problem(value: Any, where: str, first: Any = None) -> str:
    """The problem text of a TRL `prompt`: the string itself (standard format), or the content of the
    last user message of a conversation. Raises `DataError` naming `where` for anything else, or for a
    format other than `first`'s (one data set, one format, as in TRL)."""
    if first is not None and is_conversation(first) != is_conversation(value):
        fmt = "a list of messages" if is_conversation(first) else "a string"
        raise DataError(f"{where}: must be {fmt} like row 0's (one data set, one prompt format), got a {type(value).__name__}")
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}: must be a non-empty string or a list of messages, got empty")
        return value
    if not is_conversation(value) or not value:
        raise DataError(f"{where}: must be a string or a non-empty list of messages ({{'role', 'content'}}), got {value!r:.80}")
    for k, m in enumerate(value):
        if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: message {k} needs a string 'role' and a string 'content', got {dict(m)!r:.80}")
    users = [m["content"] for m in value if m["role"] == "user"]
    if not users or not users[-1].strip():
        raise DataError(f"{where}: the conversation has no user message with text (the strategy goes into the last one)")
    return users[-1]


def _row_id(row: Mapping[str, Any], i: int, column: str, seen_ids: dict[str, int], name: str) -> str:
    """The row's id (its row number when it has none); raises `DataError` for a bad or duplicate one."""
    raw_id = row.get(column)
    rid = _as_text(raw_id) if raw_id is not None else str(i)
    if rid is None:
        raise DataError(f"{name}: row {i}: column {column!r} must be a string or number, got {type(raw_id).__name__}")
    if rid in seen_ids:
        raise DataError(f"{name}: row {i}: duplicate id {rid!r} (first seen in row {seen_ids[rid]})")
    seen_ids[rid] = i
    return rid


def _row_strategy(row: Mapping[str, Any], i: int, column: str, required: bool, found: list[str], name: str) -> str | None:
    """The row's strategy, None when it has no usable one (a `DataError` instead when `required`)."""
    strategy = row.get(column)
    if isinstance(strategy, str) and strategy.strip():
        return strategy
    if required:
        what = (
            "missing"
            if column not in row
            else ("empty" if strategy in (None, "") or isinstance(strategy, str) else f"a {type(strategy).__name__}")
        )
        raise DataError(
            f"{name}: row {i}: column {column!r} is {what}, and require_strategy is set (columns found: {', '.join(found)})"
        )
    return None


def trl_prompt_format(dataset: datasets.Dataset) -> str | None:
    """ "conversational" or "standard" when the problems came from TRL's `prompt` column, else None."""
    if PROMPT_GIVEN not in dataset.column_names or len(dataset) == 0:
        return None
    return "conversational" if is_conversation(dataset[0][PROMPT_GIVEN]) else "standard"


def count_missing_strategies(ds: datasets.Dataset) -> int:
    """Rows that will train with RL only because they have no usable strategy."""
    return sum(1 for s in ds["strategy"] if s is None)


def tokenize_problems(
    dataset: datasets.Dataset,
    tokenizer,
    prompt_format: PromptFormat,
    *,
    source_name: str,
    guided: bool,
    max_prompt_length: int | None,
    strategy_column: str = "strategy",
    strong_response_column: str | None = None,
    max_completion_length: int | None = None,
) -> datasets.Dataset:
    """`dataset` with every prompt rendered and tokenized: the autonomous prompt x of every row and,
    when `guided`, the guided prompt x ⊕ s of every row with a strategy (`INTERNAL_COLUMNS`); with
    `strong_response_column`, the strong responses as completion tokens too (`tokenize_responses`).

    Raises `DataError` when `guided` and no row has a strategy (nothing to distil), and
    `PromptTooLongError` naming the rows whose prompt exceeds `max_prompt_length`; rows without a
    strategy are logged (they train with RL only). `strategy_column` only names the column in messages."""
    n_missing = count_missing_strategies(dataset)
    if guided and n_missing == len(dataset):
        raise DataError(
            f"{source_name}: none of the {len(dataset)} problems has a usable strategy (column "
            f"{strategy_column!r} missing or empty), so there is nothing to distil: train GRPO with "
            "--num_guided_generations 0 --distill_coef 0, or add strategies with `sgpo extract`"
        )
    if guided and n_missing:
        logger.warning(
            "%s: %d of %d problems have no usable strategy (missing, empty or not a string); they train with RL only",
            source_name,
            n_missing,
            len(dataset),
        )
    ids = [str(i) for i in dataset["id"]]
    problems = dataset["problem"]
    strategies = dataset["strategy"]
    given = dataset[PROMPT_GIVEN] if PROMPT_GIVEN in dataset.column_names else [None] * len(dataset)
    chats = [g if is_conversation(g) else None for g in given]
    try:
        texts = [prompt_format.render(tokenizer, p, conversation=c) for p, c in zip(problems, chats)]
    except ValueError as exc:
        raise DataError(f"{source_name}: {exc}") from None
    names = [f"{i} (id {pid!r})" for i, pid in enumerate(ids)]
    special = not prompt_format.applies_chat_template(tokenizer)
    prompt_ids = tokenize_prompts(
        tokenizer, texts, max_length=max_prompt_length, row_names=names, what="prompt", add_special_tokens=special
    )
    guided_texts = [""] * len(dataset)
    guided_ids: list[list[int]] = [[] for _ in range(len(dataset))]
    if guided:
        rows = [i for i, s in enumerate(strategies) if s is not None]
        g_texts = [prompt_format.render(tokenizer, problems[i], strategies[i], conversation=chats[i]) for i in rows]
        g_ids = tokenize_prompts(
            tokenizer,
            g_texts,
            max_length=max_prompt_length,
            row_names=[names[i] for i in rows],
            what="guided prompt",
            add_special_tokens=special,
        )
        for i, t, g in zip(rows, g_texts, g_ids):
            guided_texts[i], guided_ids[i] = t, g
    dataset = dataset.add_column(PROMPT_TEXT, texts).add_column(PROMPT_IDS, prompt_ids)
    dataset = dataset.add_column(GUIDED_TEXT, guided_texts).add_column(GUIDED_IDS, guided_ids)
    if strong_response_column is not None:
        responses = tokenize_responses(dataset, tokenizer, strong_response_column, max_completion_length, source_name, names)
        dataset = dataset.add_column(RESPONSE_IDS, responses)
    return dataset


def tokenize_responses(
    dataset: datasets.Dataset, tokenizer, column: str, max_length: int | None, source_name: str, names: list[str]
) -> list[list[int]]:
    """The strong responses of `column` as completion tokens (EOS appended); every row needs one that
    fits in `max_length` (max_completion_length: a cut response would be trained on as if the strong
    model had stopped there)."""
    if column not in dataset.column_names:
        raise DataError(
            f"{source_name}: mix_strong_responses needs the strong responses in column {column!r}, which the data "
            f"does not have (columns: {', '.join(sorted(c for c in dataset.column_names if not c.startswith('_')))}); "
            "set strong_response_column"
        )
    texts = dataset[column]
    empty = [names[i] for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if empty:
        raise DataError(
            f"{source_name}: {len(empty)} row(s) without a strong response in column {column!r}: row {', row '.join(empty[:10])}"
        )
    ids = [list(t) + [tokenizer.eos_token_id] for t in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    long = [(names[i], len(t)) for i, t in enumerate(ids) if max_length is not None and len(t) > max_length]
    if long:
        shown = ", ".join(f"row {n} ({k} tokens)" for n, k in long[:10])
        raise DataError(
            f"{source_name}: {len(long)} strong response(s) longer than max_completion_length="
            f"{max_length} (EOS included): {shown}; raise max_completion_length or drop these rows"
        )
    return ids


def data_prompt_format(args, dataset: datasets.Dataset | None = None) -> PromptFormat:
    """The prompt format of `args` (an `SGPOConfig`'s prompt fields), as `dataset` is prompted: data in
    TRL's `prompt` format through `PromptFormat.for_trl_prompts`."""
    fmt = PromptFormat(
        template=args.prompt_template,
        guided_template=args.guided_prompt_template,
        system_prompt=args.system_prompt,
        use_chat_template=args.use_chat_template,
        chat_template_kwargs=args.chat_template_kwargs,
    )
    style = None if dataset is None else trl_prompt_format(dataset)
    return fmt if style is None else fmt.for_trl_prompts(conversational=style == "conversational")


def training_problems(
    source: Any, tokenizer, args, split: str = "train", what: str = "train_dataset"
) -> tuple[datasets.Dataset, PromptFormat]:
    """A trainer's problems, validated and tokenized, and the prompt format they were rendered with.

    `args` is an `SGPOConfig` (its column, prompt and length fields); `what` names an in-memory source
    in messages. Data in TRL's `prompt` format is
    prompted as TRL does (`PromptFormat.for_trl_prompts`), which is said in one line."""
    columns = ColumnMap(args.problem_column, args.answer_column, args.strategy_column, args.id_column)
    source_name = str(source) if isinstance(source, (str, os.PathLike)) else what
    dataset = load_problems(
        source, columns=columns, split=split, require_strategy=args.require_strategy, name=source_name, trl_formats=True
    )
    fmt = data_prompt_format(args, dataset)
    style = trl_prompt_format(dataset)
    if style is not None:
        logger.warning(
            "%s: TRL's %s 'prompt' column: prompts as given%s; guided prompts add the strategy to %s (template %r)",
            source_name, style, ", through the chat template" if style == "conversational" else " (no chat template, as TRL)",
            "the last user message" if style == "conversational" else "the prompt", fmt.guided_template,
        )  # fmt: skip
    dataset = tokenize_problems(
        dataset, tokenizer, fmt, source_name=source_name, guided=args.num_guided_generations > 0,
        max_prompt_length=args.max_prompt_length, strategy_column=args.strategy_column,
        strong_response_column=args.strong_response_column if args.mix_strong_responses else None,
        max_completion_length=args.max_completion_length,
    )  # fmt: skip
    return dataset, fmt
