"""The strategy world's tokenizer, tiny model, warm-up, evaluation and first demo stages."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sgpo.checkpoints import OutputDirError
from sgpo.commands.world import main
from sgpo.prompts import tokenize_prompts
from sgpo.world.evaluate import heldout_accuracy, summarize
from sgpo.world.extractor import fill_strategies
from sgpo.world.families import WORLD_V1, WORLDS, Instance
from sgpo.world.generate import WorldSpec, build_world
from sgpo.world.model import ModelSpec, build_model, load_model, num_parameters, save_model
from sgpo.world.pipeline import prepare_out, run_pipeline
from sgpo.world.prompt import WORLD_PROMPT_FORMAT
from sgpo.world.settings import WorldRunConfig, make_config
from sgpo.world.tokenizer import EOS_TOKEN, PAD_TOKEN, build_tokenizer, world_texts
from sgpo.world.warmup import WarmupConfig, build_examples, exposed_records, step_batch, swapped_record, warmup

SMALL = WorldSpec(per_family={"heldout": 4, "train": 2, "warmup": 20})
MICRO_MODEL = ModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)


@pytest.fixture(scope="module")
def world():
    return {s: fill_strategies(rows) for s, rows in build_world(0, SMALL).items()}


@pytest.fixture(scope="module")
def tokenizer(world):
    return build_tokenizer(world_texts(world["warmup"], WORLD_PROMPT_FORMAT))


def test_tokenizer_round_trips_the_world_and_is_deterministic(world, tokenizer):
    again = build_tokenizer(world_texts(world["warmup"], WORLD_PROMPT_FORMAT))
    assert tokenizer.get_vocab() == again.get_vocab()
    assert tokenizer.pad_token == PAD_TOKEN and tokenizer.eos_token == EOS_TOKEN
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    rows = world["heldout"] + world["train"]  # text the tokenizer was not trained on
    texts = [r["response"] for r in rows]
    texts += [WORLD_PROMPT_FORMAT.render(tokenizer, r["problem"], s) for r in rows for s in (None, r["strategy"])]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    # words of the world are single tokens, and a digit never merges with a brace
    ids = tokenizer("answer : \\boxed{7}", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids)[-3:] == ["{", "7", "}"]


def test_prompts_go_through_the_chat_template(world, tokenizer):
    r = world["heldout"][0]
    text = WORLD_PROMPT_FORMAT.render(tokenizer, r["problem"], r["strategy"])
    assert text.startswith("<|im_start|>user\n" + r["problem"] + "\nstrategy :\n" + r["strategy"])
    assert text.endswith("\\boxed{} .<|im_end|>\n<|im_start|>assistant\n")
    ids = tokenize_prompts(tokenizer, [text], max_length=None)[0]
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 2


def test_model_saves_and_loads_by_path(tmp_path, tokenizer):
    model = build_model(tokenizer, ModelSpec(), seed=0)
    # default spec: ~0.9 M parameters (tied embeddings counted once)
    assert 0.7e6 < num_parameters(model) < 1.1e6
    assert model.config.model_type == "qwen2"
    small = build_model(tokenizer, MICRO_MODEL, seed=0)
    assert torch.equal(small.model.embed_tokens.weight, build_model(tokenizer, MICRO_MODEL, seed=0).model.embed_tokens.weight)
    save_model(small, tokenizer, tmp_path / "m")
    loaded, loaded_tok = load_model(tmp_path / "m")
    assert loaded_tok.get_vocab() == tokenizer.get_vocab() and loaded_tok.chat_template == tokenizer.chat_template
    assert loaded.generation_config.eos_token_id == tokenizer.eos_token_id
    # the folder carries the world's prompt format, so `sgpo eval` / `sgpo selectivity` use it
    from sgpo.prompts import PromptFormat
    from sgpo.world.prompt import WORLD_PROMPT_FORMAT

    assert PromptFormat.from_file(tmp_path / "m" / "prompt_format.json") == WORLD_PROMPT_FORMAT
    x = torch.tensor([tokenizer("list : 1 2 3", add_special_tokens=False)["input_ids"]])
    small.eval()
    assert torch.equal(small(x).logits, loaded(x).logits)


def test_warmup_batches_mix_guided_and_autonomous_examples(world, tokenizer):
    exposure = {"sum": 1.0, "sum_even": 0.5, "sum_alt": 0.0}
    cfg = WarmupConfig(batch_size=8, guided_fraction=0.75, auto_exposure=exposure, swap_fraction=0.5, seed=1)
    data = build_examples(world["warmup"], tokenizer, cfg.auto_exposure, swap_fraction=cfg.swap_fraction)
    per_family = {f: sum(r["family"] == f for r in world["warmup"]) for f in data.guided}
    assert {f: len(v) for f, v in data.guided.items()} == per_family
    # every sum record, half of the sum_even ones (20 of each family: 20 + 10), none of the others
    assert len(data.auto) == per_family["sum"] + per_family["sum_even"] // 2 == 30
    exposed = exposed_records(world["warmup"], exposure)
    assert [r["family"] for r in exposed].count("sum_even") == 10
    evens = [r for r in world["warmup"] if r["family"] == "sum_even"]
    assert [r for r in exposed if r["family"] == "sum_even"] == evens[:10]  # the family's first records
    # every record is swapped once, onto another family of its world (v2 has no family with a target)
    assert sum(len(v) for v in data.swapped.values()) == len(world["warmup"])
    assert set(data.swapped) == set(data.guided)
    guided, auto = step_batch(data, cfg, 5)
    assert (len(guided), len(auto)) == (6, 2)  # round(8 * 0.75) guided, the rest autonomous
    assert step_batch(data, cfg, 5) == (guided, auto)  # a pure function of (seed, step)
    late = replace(cfg, auto_from_step=6)  # guided only before step 6, mixed from it
    assert [tuple(map(len, step_batch(data, late, t))) for t in (0, 5, 6, 9)] == [(8, 0), (8, 0), (6, 2), (6, 2)]
    assert all(e.completion[-1] == tokenizer.eos_token_id for e in guided + auto)
    # over many steps both kinds of guided example are drawn
    drawn = [id(e) for t in range(40) for e in step_batch(data, cfg, t)[0]]
    swapped_ids = {id(e) for v in data.swapped.values() for e in v}
    assert 0 < sum(i in swapped_ids for i in drawn) < len(drawn)
    with pytest.raises(ValueError, match="auto_exposure names"):
        build_examples(world["warmup"], tokenizer, {"median": 1.0})
    with pytest.raises(ValueError, match="shares in"):
        build_examples(world["warmup"], tokenizer, {"sum": 1.5})


def test_autonomous_exposure_can_keep_to_short_lists_while_the_guided_examples_span_all(tokenizer):
    """v2.2's warm-up (`auto_max_numbers`): lists longer than the RL and test problems' are shown with
    a strategy only; the exposure share counts the family's short-list records."""
    spec = WorldSpec(per_family={"warmup": 40}, families="v2.1", warmup_length=(5, 10))
    records = fill_strategies(build_world(0, spec)["warmup"])
    n_numbers = lambda r: len(r["problem"].rpartition("list :")[2].split())  # noqa: E731
    assert max(map(n_numbers, records)) == 10
    every = exposed_records(records, {"sum": 1.0, "sum_even": 0.5})
    short = exposed_records(records, {"sum": 1.0, "sum_even": 0.5}, max_numbers=8)
    assert max(map(n_numbers, every)) == 10 and max(map(n_numbers, short)) <= 8
    short_sums = [r for r in records if r["family"] == "sum" and n_numbers(r) <= 8]
    short_evens = [r for r in records if r["family"] == "sum_even" and n_numbers(r) <= 8]
    assert [r for r in short if r["family"] == "sum"] == short_sums  # exposure 1: every short one
    assert [r for r in short if r["family"] == "sum_even"] == short_evens[: round(0.5 * len(short_evens))]
    data = build_examples(records, tokenizer, {"sum": 1.0}, auto_max_numbers=8)
    assert len(data.auto) == len(short_sums) and sum(len(v) for v in data.guided.values()) == len(records)
    cfg = WarmupConfig(auto_max_numbers=8)
    assert cfg.to_dict()["auto_max_numbers"] == 8 and "auto_max_numbers" not in WarmupConfig().to_dict()


def test_exposure_by_wording_takes_the_same_share_of_every_familys_records_asked_in_a_wording(tokenizer):
    """World v2.5's warm-up (`wording_exposure`): the quota is per family and wording, round(share ×
    records of that family asked in that wording), the first such records in order."""
    records = fill_strategies(build_world(0, WorldSpec(per_family={"warmup": 30}, families="v2.4"))["warmup"])
    v24 = {f.name: f for f in WORLDS["v2.4"]}
    shares = (1.0, 0.5, 0.0)
    exposed = exposed_records(records, {}, wording_exposure=shares, families=WORLDS["v2.4"])
    asked = lambda rows, f, i: [r for r in rows if r["family"] == f and r["problem"].startswith(v24[f].questions[i] + " list :")]  # noqa: E731
    for f in v24:
        for i, share in enumerate(shares):
            mine = asked(records, f, i)
            assert len(mine) > 3  # 30 records over 3 wordings: every wording is asked
            # e.g. 11 records asked in wording 1 at share 0.5: round(5.5) = 6 (Python rounds half to even), the first 6
            assert asked(exposed, f, i) == mine[: round(share * len(mine))]
    assert len(exposed) == sum(round(s * len(asked(records, f, i))) for f in v24 for i, s in enumerate(shares))
    data = build_examples(records, tokenizer, {}, families=WORLDS["v2.4"], wording_exposure=shares)
    assert len(data.auto) == len(exposed)
    with pytest.raises(ValueError, match="set one of auto_exposure and wording_exposure"):
        exposed_records(records, {"sum": 0.5}, wording_exposure=shares)
    with pytest.raises(ValueError, match="shares in"):
        exposed_records(records, {}, wording_exposure=(1.0, 1.5, 0.0))
    with pytest.raises(ValueError, match="has a wording 2"):
        exposed_records(records, {}, wording_exposure=(1.0, 0.5))
    cfg = WarmupConfig(auto_exposure={}, wording_exposure=shares)
    assert cfg.to_dict()["wording_exposure"] == [1.0, 0.5, 0.0] and "wording_exposure" not in WarmupConfig().to_dict()


def test_wording_index_names_the_place_of_the_question_in_its_family():
    from sgpo.world.families import FAMILY_BY_NAME, problem_text, wording_index

    for f in (*WORLDS["v2.4"], FAMILY_BY_NAME["count_target"]):
        for i, q in enumerate(f.questions):
            assert wording_index(f, problem_text(f, Instance((3, 7, 3), 3), q)) == i
    with pytest.raises(ValueError, match="not asked in one of family 'sum'"):
        wording_index(WORLDS["v2.4"][0], "what is the total of the even numbers ? list : 1 2")


def test_a_v1_record_is_swapped_within_v1_onto_a_family_without_target():
    records = fill_strategies(build_world(0, WorldSpec(per_family={"warmup": 3}, families="v1"))["warmup"])
    v1 = {f.name for f in WORLD_V1}
    for r in records:
        s = swapped_record(r)
        assert s["family"] in v1 and s["family"] not in (r["family"], "count_target")
        assert s["problem"] == r["problem"] and s["response"] != r["response"]


def test_a_v2_1_record_is_swapped_within_the_world_it_is_given(tokenizer):
    """v2 and v2.1 share family names, so a record does not tell its world: the warm-up is given it
    (`families`), and a v2.1 record's swapped solution draws v2.1's six notations; without it, the
    record's family name resolves to v2 and its three."""
    spec = WorldSpec(per_family={"warmup": 12}, families="v2.1", warmup_length=(5, 10))
    records = fill_strategies(build_world(0, spec)["warmup"])
    marks = lambda rows: {c for r in rows for c in r["response"].split(" . ")[1] if c in ">=:~|/"}  # noqa: E731
    assert marks([swapped_record(r, WORLDS["v2.1"]) for r in records]) == set(">=:~|/")
    assert marks([swapped_record(r) for r in records]) == set(">=:")
    data = build_examples(records, tokenizer, {}, swap_fraction=1.0, families=WORLDS["v2.1"])
    texts = [tokenizer.decode(e.completion) for v in data.swapped.values() for e in v]
    assert {c for t in texts for c in t.split(" . ")[1] if c in ">=:~|/"} == set(">=:~|/")
    with pytest.raises(ValueError, match="not one of"):
        swapped_record(records[0], WORLDS["v1"])


def test_warmup_is_deterministic_and_resumes_to_the_same_weights(tmp_path, world, tokenizer):
    cfg = WarmupConfig(steps=6, batch_size=6, save_every=3, warmup_steps=2, seed=0)

    def fresh():
        return build_model(tokenizer, MICRO_MODEL, seed=0)

    m1 = fresh()
    losses1 = warmup(m1, tokenizer, world["warmup"], cfg)
    assert losses1[-1] < losses1[0]

    m2 = fresh()

    def interrupt(step, loss):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        warmup(m2, tokenizer, world["warmup"], cfg, state_dir=tmp_path, on_step=interrupt)
    m3 = fresh()  # a new process would start from the initial model and find the checkpoint of step 3
    losses3 = warmup(m3, tokenizer, world["warmup"], cfg, state_dir=tmp_path)
    assert losses3 == losses1
    for (n, a), (_, b) in zip(m1.state_dict().items(), m3.state_dict().items()):
        assert torch.equal(a, b), n
    with pytest.raises(ValueError, match="another config"):
        warmup(fresh(), tokenizer, world["warmup"], WarmupConfig(steps=7, save_every=3), state_dir=tmp_path)


def test_summarize_counts_per_family():
    records = [{"family": "a"}, {"family": "a"}, {"family": "b"}, {"family": "b"}]
    out = summarize(records, {"auto": [True, False, False, False], "guided": [True, True, True, False]})
    # auto 1/4, guided 3/4; family a: auto 1/2 guided 2/2; family b: auto 0/2 guided 1/2
    assert (out["auto"], out["guided"], out["gap"], out["n"]) == (0.25, 0.75, 0.5, 4)
    assert out["per_family"]["a"] == {"auto": 0.5, "guided": 1.0, "gap": 0.5, "n": 2}
    assert out["per_family"]["b"] == {"auto": 0.0, "guided": 0.5, "gap": 0.5, "n": 2}


def test_heldout_accuracy_runs_the_real_generation_and_verifier(world, tokenizer):
    model = build_model(tokenizer, MICRO_MODEL, seed=0)
    progress = []
    out = heldout_accuracy(
        model,
        tokenizer,
        world["heldout"][:6],
        max_new_tokens=4,
        batch_size=4,
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert progress == [(6, 12), (12, 12)]  # after each mode (autonomous, guided)
    assert out["n"] == 6 and set(out["per_family"]) == {r["family"] for r in world["heldout"][:6]}
    # 4 random-init tokens cannot reach "\boxed{...}": every answer is wrong
    assert out["auto"] == out["guided"] == 0.0
    with pytest.raises(ValueError, match="no strategy"):
        heldout_accuracy(model, tokenizer, [{**world["heldout"][0], "strategy": None}], max_new_tokens=2)


def micro_config(seed: int = 0) -> WorldRunConfig:
    return WorldRunConfig(
        seed=seed,
        world=WorldSpec(per_family={"heldout": 2, "train": 1, "warmup": 8}),
        model=MICRO_MODEL,
        warmup=WarmupConfig(steps=3, batch_size=4, warmup_steps=1, save_every=2, seed=seed),
        eval_max_new_tokens=6,
        warmup_processes=1,
    )


def test_pipeline_writes_every_stage_and_reruns_to_the_same_numbers(tmp_path):
    cfg = micro_config()
    first = run_pipeline(tmp_path / "a", cfg, methods=())
    for path in (
        "config.json",
        "world/oracle/train.jsonl",
        "world/heldout.jsonl",
        "tokenizer/tokenizer.json",
        "model-init/model.safetensors",
        "warmup/model.safetensors",
        "warmup-state/state.pt",
        "eval/warmup.json",
        "warmup.json",
    ):
        assert (tmp_path / "a" / path).exists(), path
    assert not (tmp_path / "a" / "grpo").exists() and not (tmp_path / "a" / "results.json").exists()  # no training asked for
    saved = json.loads((tmp_path / "a" / "warmup.json").read_text())
    assert saved["heldout"] == first["methods"]["warmup"] and saved["seed"] == 0
    assert set(saved["wall_seconds"]) >= {"build world", "extract strategies", "warm-up", "evaluate warmup", "total"}
    second = run_pipeline(tmp_path / "b", cfg, methods=())  # same seed, fresh folder: same numbers and weights
    assert (second["methods"], second["warmup_loss"]) == (first["methods"], first["warmup_loss"])
    for name in ("world/warmup.jsonl", "tokenizer/tokenizer.json", "warmup/model.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    resumed = run_pipeline(tmp_path / "a", cfg, methods=())  # rerun in place: stages are skipped, numbers kept
    assert resumed["methods"] == first["methods"]


def test_the_pipelines_warm_up_swaps_a_v2_1_world_within_v2_1(tmp_path, monkeypatch):
    """The wiring of `families`: the pipeline's warm-up gives the world's families to the swap (a
    record alone would resolve to v2's), and its `auto_max_numbers` to the exposure; seen with spies
    around the real functions."""
    import sgpo.world.warmup as warmup_module

    given, real = [], warmup_module.swapped_record
    monkeypatch.setattr(warmup_module, "swapped_record", lambda r, families=None: given.append(families) or real(r, families))
    limits, real_exposed = [], warmup_module.exposed_records

    def exposed(r, e, max_numbers=None, wording_exposure=None, families=None):
        limits.append((max_numbers, wording_exposure, families and tuple(families)))
        return real_exposed(r, e, max_numbers, wording_exposure, families)

    monkeypatch.setattr(warmup_module, "exposed_records", exposed)
    cfg = micro_config()
    warm = replace(cfg.warmup, swap_fraction=1.0, auto_max_numbers=6, auto_exposure={}, wording_exposure=(1.0, 0.5, 0.0))
    cfg = replace(cfg, world=replace(cfg.world, families="v2.1"), warmup=warm)
    run_pipeline(tmp_path / "w", cfg, methods=())
    assert len(given) == 8 * 6 and all(f is not None and tuple(f) == WORLDS["v2.1"] for f in given)
    # and the warm-up config's autonomous list limit and exposure by wording, with the world
    assert limits == [(6, (1.0, 0.5, 0.0), WORLDS["v2.1"])]


@pytest.mark.slow
def test_data_parallel_warmup_is_the_one_process_warmup(tmp_path):
    # 2 processes, each with its share of every batch and the gradients summed: the same losses and
    # weights as one process, up to the order of the floating-point sums
    cfg = replace(micro_config(), warmup=WarmupConfig(steps=4, batch_size=6, warmup_steps=1, save_every=2))
    run_pipeline(tmp_path / "one", cfg, methods=())
    run_pipeline(tmp_path / "two", replace(cfg, warmup_processes=2), methods=())
    one, two = (json.loads((tmp_path / d / "warmup" / "warmup_losses.json").read_text())["losses"] for d in ("one", "two"))
    assert len(one) == len(two) == 4 and one != two  # not the same bits: the sums ran in another order
    assert one == pytest.approx(two, rel=1e-5, abs=0)
    a, b = (load_model(tmp_path / d / "warmup")[0].state_dict() for d in ("one", "two"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-4, rtol=0, msg=name)
    assert not (tmp_path / "two" / "warmup-state" / "rendezvous").exists()


def test_pipeline_refuses_to_mix_runs(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="other files"):
        prepare_out(tmp_path / "other", micro_config())
    prepare_out(tmp_path / "run", micro_config(0))
    with pytest.raises(OutputDirError, match="another configuration"):
        prepare_out(tmp_path / "run", micro_config(1))
    prepare_out(tmp_path / "run", micro_config(1), overwrite=True)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 1


def test_cli_refuses_bad_options_and_foreign_folders(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "x"), "--bogus"])
    assert exc.value.code == 2 and "--bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([])  # --out is required
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    assert main(["--out", str(tmp_path / "taken"), "--quick", "--no-progress"]) == 2
    assert "other files" in capsys.readouterr().err
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_quick_setting_is_smaller_than_the_full_one():
    full, quick = make_config(0), make_config(0, quick=True)
    assert quick.quick and not full.quick
    assert quick.warmup.steps < full.warmup.steps
    assert sum(quick.world.per_family.values()) < sum(full.world.per_family.values())


def test_the_demo_runs_the_gated_world_at_the_base_size_shortened():
    """`make demo`'s setting is experiments/world_v2_8.yaml's base size (world, model, warm-up mix, RL
    runs, evaluation) with fewer warm-up steps and test problems, nothing else; the experiments keep their own
    base (`experiment_base`), so their hashes do not move with the demo."""
    from dataclasses import replace

    from sgpo.world.experiment import load_config

    demo, gated = make_config(0), load_config(Path(__file__).resolve().parents[1] / "experiments" / "world_v2_8.yaml").setup
    assert demo.world.families == gated.world.families == "v2.4"
    assert (demo.world.list_length, demo.world.warmup_length) == (gated.world.list_length, gated.world.warmup_length)
    assert demo.model == gated.model
    assert replace(demo.warmup, steps=gated.warmup.steps, auto_from_step=gated.warmup.auto_from_step) == gated.warmup
    assert (demo.warmup.steps, demo.warmup.auto_from_step) == (900, 700)
    assert replace(demo.train, learning_rate=gated.train.learning_rate) == gated.train and demo.train.learning_rate == 3e-5
    evaluation = ("eval_samples", "eval_temperature", "eval_guided_samples", "eval_max_new_tokens")
    assert [getattr(demo, k) for k in evaluation] == [getattr(gated, k) for k in evaluation]


def test_workers_end_with_a_killed_parent(tmp_path):
    """`kill` of `sgpo experiment` (SIGTERM to its main process only) must not leave its workers
    training on: they get SIGKILL when it ends (Linux). A real parent and worker process."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    if not sys.platform.startswith("linux"):
        pytest.skip("prctl(PR_SET_PDEATHSIG) is Linux only")
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time\n"
        "from sgpo.world.workers import run_in_workers\n"
        "def nap(path, progress=None):\n"
        "    open(path + '.tmp', 'w').write(str(os.getpid())); os.replace(path + '.tmp', path); time.sleep(120)\n"
        "if __name__ == '__main__':\n"
        "    run_in_workers([(nap, (sys.argv[1],), {})], lambda *a: None)\n"
    )
    pid_file = tmp_path / "worker.pid"
    src = str(Path(__file__).resolve().parents[1] / "src")
    # the killed parent's resource tracker reports the parent's queue semaphores it cleans up: kept
    # out of the test run's output, in a file the failure messages show
    err = (tmp_path / "parent.err").open("w")
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file)], env=dict(os.environ, PYTHONPATH=src), stderr=err)
    worker = None
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
        assert pid_file.exists(), (tmp_path / "parent.err").read_text()[-2000:]
        worker = int(pid_file.read_text())
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=30)

        def alive(pid: int) -> bool:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
            except FileNotFoundError:
                return False
            return state not in ("Z", "X")

        deadline = time.monotonic() + 15
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(worker), "the worker outlived its killed parent"
    finally:
        parent.kill()
        err.close()
        if worker is not None:
            try:
                os.kill(worker, signal.SIGKILL)
            except ProcessLookupError:
                pass
