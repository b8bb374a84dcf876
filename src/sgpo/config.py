"""`SGPOConfig`: every knob of an SGPO (or GRPO) run, as one `transformers.TrainingArguments` subclass.

Fields that mean the same thing as in TRL's `GRPOConfig` carry TRL's names and defaults
(`num_generations`, `max_completion_length`, `temperature`, `loss_type`, `epsilon`, `beta`, …), so a
TRL recipe reads the same here. One difference, on purpose: `per_device_train_batch_size` counts
*problems* per micro-step (each brings `num_generations` autonomous and `num_guided_generations`
guided completions), because a problem's two groups must stay together.

GRPO is the special case `distill_coef=0, num_guided_generations=0`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

import sgpo.process_group  # noqa: F401  (before SGPOConfig creates any process group: see that module)
from sgpo.config_fields import BATCH_SIZE_HELP
from sgpo.objectives import DISTILL_TERMS, INSTANCE_WEIGHTS, IS_MODES, LOSS_TYPE_TO_AGG_MODE
from sgpo.prompts import DEFAULT_GUIDED_PROMPT_TEMPLATE, DEFAULT_PROMPT_TEMPLATE
from sgpo.sampling import sampling_kwargs_from_generation_kwargs


@dataclass
class SGPOConfig(TrainingArguments):
    # ------------------------------------------------------------------ overridden defaults
    per_device_train_batch_size: int = field(default=8, metadata={"help": BATCH_SIZE_HELP})
    learning_rate: float = field(default=1e-6, metadata={"help": "Initial learning rate for AdamW (TRL's GRPO default)."})
    logging_steps: float = field(default=10, metadata={"help": "Log every this many optimizer steps."})
    report_to: None | str | list[str] = field(
        default="tensorboard",
        metadata={"help": "Logging integrations (tensorboard, wandb, trackio, none, all). metrics.jsonl is always written."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start a fresh run in an output_dir that holds another run (its metrics.jsonl and checkpoints are removed). Without it such a folder is refused unless the run is resumed."
        },
    )
    remove_unused_columns: bool | None = field(
        default=False, metadata={"help": "Kept False: every data set column is passed to the reward functions."}
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={
            "help": "DDP's find_unused_parameters. False: the SGPO loss reaches every trainable parameter of a causal "
            "LM (the backbone through the hidden states, the LM head directly, and an empty micro-batch through a "
            "zero-gradient anchor), so the extra graph traversal True costs is not needed. Set true only for a "
            "model with parameters outside its forward (DDP's error then names this option)."
        },
    )

    # ------------------------------------------------------------------ model
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": 'Keyword arguments for `AutoModelForCausalLM.from_pretrained` when the model is given as a path or hub id (e.g. {"dtype": "bfloat16"}).'
        },
    )
    disable_dropout: bool = field(default=False, metadata={"help": "Set every dropout probability of the policy to 0."})

    # ------------------------------------------------------------------ LoRA (PEFT): TRL's ModelConfig names and defaults
    use_peft: bool = field(
        default=False,
        metadata={
            "help": "Train a LoRA adapter (PEFT) instead of every weight; teacher and student are the same adapted model, the saved output is the adapter (merge it with `sgpo merge`)."
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (the adapter is scaled by lora_alpha / lora_r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Modules to adapt (names, or `all-linear`); None = PEFT's default for the architecture. The LM head cannot be one."
        },
    )
    lora_target_parameters: list[str] | None = field(
        default=None, metadata={"help": "Parameters to adapt directly (PEFT target_parameters, e.g. MoE experts)."}
    )
    lora_modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Modules trained in full and saved with the adapter (e.g. embed_tokens)."}
    )
    lora_task_type: str = field(default="CAUSAL_LM", metadata={"help": "PEFT task type."})
    use_rslora: bool = field(default=False, metadata={"help": "Rank-stabilised LoRA: scale by lora_alpha / sqrt(lora_r)."})
    use_dora: bool = field(default=False, metadata={"help": "Weight-decomposed LoRA (DoRA)."})

    # ------------------------------------------------------------------ data and prompts
    problem_column: str = field(default="problem", metadata={"help": "Data set column holding the problem text."})
    answer_column: str = field(default="answer", metadata={"help": "Data set column holding the gold answer."})
    strategy_column: str = field(
        default="strategy", metadata={"help": "Data set column holding the rendered strategy block (optional per row)."}
    )
    id_column: str = field(
        default="id", metadata={"help": "Data set column holding a unique problem id (the row number when absent)."}
    )
    require_strategy: bool = field(
        default=False,
        metadata={"help": "Error on rows without a usable strategy instead of training them with RL only."},
    )
    prompt_template: str = field(default=DEFAULT_PROMPT_TEMPLATE, metadata={"help": "Autonomous prompt; must contain {problem}."})
    guided_prompt_template: str = field(
        default=DEFAULT_GUIDED_PROMPT_TEMPLATE,
        metadata={"help": "Guided prompt; must contain {problem} and {strategy}."},
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "Optional system message (chat templates) or prefix (plain text)."}
    )
    use_chat_template: bool = field(
        default=True, metadata={"help": "Apply the tokenizer's chat template when it has one (plain text otherwise)."}
    )
    chat_template_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Extra keyword arguments of the chat template (TRL's field), e.g. {\"enable_thinking\": false}; saved with the model's prompt format."
        },
    )
    max_prompt_length: int | None = field(
        default=1024,
        metadata={
            "help": "Longest allowed prompt in tokens (guided prompts included). Longer prompts raise an error naming the rows: prompts are never truncated. None = no limit."
        },
    )
    shuffle_dataset: bool = field(default=True, metadata={"help": "Shuffle the training problems each epoch."})

    # ------------------------------------------------------------------ generation
    num_generations: int = field(default=8, metadata={"help": "Autonomous completions per problem (the GRPO group size)."})
    num_guided_generations: int = field(
        default=8, metadata={"help": "Guided completions per problem (strategy in the prompt). 0 for GRPO."}
    )
    max_completion_length: int = field(default=512, metadata={"help": "Maximum number of generated tokens per completion."})
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature; log-probs are computed at this temperature too."}
    )
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling probability."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling (0 = off)."})
    min_p: float | None = field(default=None, metadata={"help": "Minimum token probability relative to the most likely one."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "Repetition penalty for generation (1.0 = none)."})
    generation_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": 'Extra `GenerationConfig` arguments for sampling (e.g. {"min_new_tokens": 16}); they override the fields above (TRL\'s meaning).'
        },
    )
    generation_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Problems per generation batch over all processes (TRL's field, counted in problems as per_device_train_batch_size is): sets steps_per_generation = generation_batch_size / (per_device_train_batch_size × processes)."
        },
    )
    generation_micro_batch_size: int | None = field(
        default=None, metadata={"help": "Most sequences per `generate` call (memory bound); all at once when None."}
    )
    forward_micro_batch_size: int | None = field(
        default=None,
        metadata={"help": "Most sequences per no-grad scoring forward (old/teacher/reference passes); all at once when None."},
    )
    backward_group_size: int | None = field(
        default=None,
        metadata={
            "help": "Most sequences per forward + backward of the loss step: a micro-batch's autonomous and distilled sequences go through in groups of at most this many, each back-propagated before the next one's forward, so only one group's activations are held at a time. The update is the same (the loss is a sum over sequences with the step's global normalisers); smaller groups cost more, smaller passes. All at once when None."
        },
    )
    backward_group_tokens: int | None = field(
        default=None,
        metadata={
            "help": "A memory budget for the groups of backward_group_size, in tokens: most sequences × (longest prompt + longest completion) per group (activations grow with it); a group always holds at least one sequence. No limit when None."
        },
    )
    steps_per_generation: int | None = field(
        default=None,
        metadata={
            "help": "Micro-steps served by one generation batch (TRL's meaning); defaults to gradient_accumulation_steps. Must be a multiple of it."
        },
    )
    num_iterations: int = field(default=1, metadata={"help": "Passes over each generation batch (μ in GRPO)."})
    mask_truncated_completions: bool = field(
        default=False, metadata={"help": "Exclude completions cut at max_completion_length from the loss (DAPO)."}
    )

    # ------------------------------------------------------------------ rewards and the RL term
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy"],
        metadata={
            "help": "Reward functions by registry name (accuracy, boxed_format) or 'module:function'. Used when the trainer gets none."
        },
    )
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "Weight of each reward function (all 1 when None)."}
    )
    correct_reward_threshold: float = field(
        default=1.0,
        metadata={
            "help": "A completion counts as correct (for acc_auto / acc_guided, the instance weights and distill_on=correct) when its correctness reward (correctness_reward) is at least this."
        },
    )
    correctness_reward: str | None = field(
        default=None,
        metadata={
            "help": "The reward function that decides correctness (accuracies, the guidance gap, instance weights, distill_on=correct), by registry or function name (accuracy, accuracy_reward, my_reward). None: accuracy when it is among reward_funcs, else the only reward function, else the weighted total reward (with a warning at start)."
        },
    )
    loss_type: str = field(
        default="dapo",
        metadata={
            "help": "RL loss aggregation, TRL's meanings: grpo (per-sequence mean), bnpo (token mean of each micro-batch), dr_grpo (sum / (N·max_completion_length)), dapo (token mean of the whole optimizer step)."
        },
    )
    importance_sampling_level: str = field(
        default="token",
        metadata={
            "help": "Level of the RL term's ratio π_θ/π_old (TRL's field): token (one per token, GRPO) or sequence (GSPO: exp of the mean log-ratio of the sequence, one per sequence)."
        },
    )
    scale_rewards: str = field(
        default="group",
        metadata={"help": "Advantage scaling: group, batch or none; true = group, false = none (TRL's meanings)."},
    )
    epsilon: float = field(default=0.2, metadata={"help": "Lower clipping range of the policy ratio."})
    epsilon_high: float | None = field(default=None, metadata={"help": "Upper clipping range (defaults to epsilon)."})
    delta: float | None = field(
        default=None, metadata={"help": "Two-sided clipping: cap on the unclipped ratio (off when None)."}
    )
    beta: float = field(
        default=0.0, metadata={"help": "Coefficient of the k3 KL to a frozen reference model (0 = no reference model)."}
    )
    use_bias_correction_kl: bool = field(
        default=True,
        metadata={
            "help": "Multiply the k3 KL term by the ratio π_θ/π_old (differentiable), which makes its gradient the unbiased reverse-KL one (TRL's field and default; DeepSeek-V3.2). Only with beta > 0."
        },
    )

    # ------------------------------------------------------------------ logging (TRL's fields)
    log_completions: bool = field(
        default=False,
        metadata={
            "help": "Print a table of prompts, completions, rewards and advantages of the last rollout at every logging step."
        },
    )
    num_completions_to_print: int | None = field(
        default=None, metadata={"help": "Rows of that table (all of the last generation batch when None)."}
    )

    # ------------------------------------------------------------------ SGPO: distillation
    distill_coef: float = field(
        default=1.0, metadata={"help": "λ: weight of the strategy-distillation term. 0 turns SGPO into GRPO."}
    )
    distill_on: str = field(default="correct", metadata={"help": "Guided completions to distil on: correct or all."})
    distill_divergence: str = field(
        default="forward_kl",
        metadata={
            "help": "forward_kl (KL(teacher‖student), SGPO), reverse_kl (ablation) or imitation (NLL of the guided tokens, ablation)."
        },
    )
    distill_topk: int | None = field(
        default=None,
        metadata={"help": "Forward KL over the teacher's top-k tokens plus one tail bucket (full vocabulary when None)."},
    )
    distill_proximal: bool = field(default=True, metadata={"help": "Apply the proximal keep-mask to the distillation term."})
    distill_epsilon_low: float | None = field(
        default=None,
        metadata={"help": "Proximal constraint: drop a token the teacher wants down once ρ < 1 − this (defaults to epsilon)."},
    )
    distill_epsilon_high: float | None = field(
        default=None,
        metadata={"help": "Proximal constraint: drop a token the teacher wants up once ρ > 1 + this (defaults to epsilon_high)."},
    )
    distill_kl_cap: float | None = field(default=None, metadata={"help": "Optional cap on the per-token divergence."})
    instance_weighting: str = field(
        default="marginal",
        metadata={
            "help": "Per-problem distillation weight: marginal (clip(acc_guided − acc_auto, 0, 1)), deficit ((1 − acc_auto)·[acc_guided>0]) or constant (1)."
        },
    )
    instance_weight_ema: float = field(
        default=0.0, metadata={"help": "EMA decay of the instance weight over the times a problem is seen (0 = off)."}
    )
    # ------------------------------------------------------------------ baselines (docs/algorithm.md "Baselines")
    mix_strong_responses: bool = field(
        default=False,
        metadata={
            "help": "LUFFY mixed-policy GRPO: in each problem's autonomous group one rollout is replaced by the problem's strong response (strong_response_column), off-policy; advantages over the mixed group; its tokens get the shaped term −A·p/(p+γ) with p = π_θ(token), no clipping. LUFFY uses loss_type=dr_grpo and no guided rollouts (num_guided_generations=0, distill_coef=0)."
        },
    )
    strong_response_column: str = field(
        default="response", metadata={"help": "Data set column holding the strong model's response (for mix_strong_responses)."}
    )
    policy_shaping_gamma: float = field(
        default=0.1, metadata={"help": "γ of LUFFY's policy shaping f(p) = p/(p+γ) on the strong responses' tokens."}
    )
    head_implementation: str = field(
        default="chunked",
        metadata={
            "help": "How token log-probs and divergences are computed from the final hidden states: chunked (memory-bounded, never holds the tokens × vocabulary logits; see docs/performance.md) or plain (materialises them; the reference)."
        },
    )
    head_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Token positions per chunk of the chunked LM-head path (default: a 128 MiB float32 (chunk, vocabulary) buffer)."
        },
    )

    # ------------------------------------------------------------------ vLLM rollouts (docs/vllm.md)
    # TRL's names and defaults (`GRPOConfig`); the CPU-only and server weight-sync fields are ours.
    use_vllm: bool = field(
        default=False,
        metadata={
            "help": "Sample rollouts with vLLM instead of Hugging Face generate (needs the vllm package; see docs/vllm.md)."
        },
    )
    vllm_mode: str = field(
        default="colocate",
        metadata={
            "help": "colocate: an in-process engine beside the trainer, weights pushed in memory; server: a separately started vLLM server (vllm_server_* fields)."
        },
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.3,
        metadata={
            "help": "Fraction of the GPU's memory the colocated engine may take (weights, activations, KV cache). Ignored when vllm_kv_cache_memory_bytes is set (always the case on a CPU)."
        },
    )
    vllm_tensor_parallel_size: int = field(
        default=1, metadata={"help": "Tensor-parallel size of the colocated engine (GPUs only; 1 on a CPU)."}
    )
    vllm_max_model_length: int | None = field(
        default=None,
        metadata={
            "help": "Context window of the engine: at least the longest prompt plus max_completion_length (a longer request raises). None = the model config's."
        },
    )
    vllm_kv_cache_memory_bytes: int | None = field(
        default=None,
        metadata={
            "help": "KV-cache size of the colocated engine in bytes; overrides vllm_gpu_memory_utilization. None = 256 MiB on a CPU (a memory fraction is unreliable on a shared machine), the memory fraction on a GPU."
        },
    )
    vllm_enforce_eager: bool | None = field(
        default=None,
        metadata={
            "help": "Run the colocated engine eagerly (no torch.compile / CUDA graphs). None = True on a CPU, False on a GPU."
        },
    )
    vllm_server_base_url: str | None = field(
        default=None,
        metadata={
            "help": "Base URL of the vLLM server (e.g. http://gpu-host:8000); vllm_server_host and vllm_server_port are ignored when set."
        },
    )
    vllm_server_host: str = field(
        default="0.0.0.0", metadata={"help": "Host of the vLLM server (when vllm_server_base_url is not set)."}
    )
    vllm_server_port: int = field(
        default=8000, metadata={"help": "Port of the vLLM server (when vllm_server_base_url is not set)."}
    )
    vllm_server_timeout: float = field(
        default=240.0, metadata={"help": "Seconds to wait for the vLLM server to answer its health check before giving up."}
    )
    vllm_server_weight_sync: str = field(
        default="nccl",
        metadata={
            "help": "How server mode pushes the weights: nccl (vLLM's NCCL weight transfer through TRL's client; GPUs only, start the server with `trl vllm-serve`) or disk (safetensors written to vllm_server_weights_dir and reloaded by the server; any hardware, needs a folder both can read and a server started with VLLM_SERVER_DEV_MODE=1)."
        },
    )
    vllm_server_weights_dir: str | None = field(
        default=None, metadata={"help": "Folder for vllm_server_weight_sync=disk (default: OUTPUT_DIR/vllm_weights)."}
    )
    vllm_group_port: int = field(
        default=51216, metadata={"help": "Port of the NCCL weight-update group (vllm_server_weight_sync=nccl)."}
    )
    vllm_importance_sampling_correction: bool = field(
        default=True,
        metadata={
            "help": "Reweight the RL term by the bounded ratio π_trainer / π_sampler of the sampled tokens, correcting the mismatch between vLLM's and the trainer's log-probs (TRL's truncated importance sampling)."
        },
    )
    vllm_importance_sampling_mode: str = field(
        default="sequence_mask",
        metadata={
            "help": "token_truncate, token_mask, sequence_truncate or sequence_mask: one ratio per token or per sequence; ratios outside [clip_min, clip_max] clipped (truncate) or zeroed (mask). TRL's modes."
        },
    )
    vllm_importance_sampling_clip_max: float | None = field(
        default=3.0, metadata={"help": "Upper bound C_max of the importance ratio (None = none)."}
    )
    vllm_importance_sampling_clip_min: float | None = field(
        default=None, metadata={"help": "Lower bound C_min of the importance ratio (None = none)."}
    )
    vllm_importance_sampling_cap: float | None = field(
        default=None,
        metadata={"help": "Deprecated in TRL: the old name of vllm_importance_sampling_clip_max, which it replaces when set."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.model_init_kwargs, str):
            self.model_init_kwargs = json.loads(self.model_init_kwargs)
        if isinstance(self.generation_kwargs, str):
            self.generation_kwargs = json.loads(self.generation_kwargs)
        if isinstance(self.chat_template_kwargs, str):
            self.chat_template_kwargs = json.loads(self.chat_template_kwargs)
        # TRL's booleans: true = group, false = none (from YAML or the command line as a word)
        flag = {"true": "group", "false": "none"}.get(str(self.scale_rewards).strip().lower())
        self.scale_rewards = flag if flag is not None else self.scale_rewards
        if self.epsilon_high is None:
            self.epsilon_high = self.epsilon
        if self.distill_epsilon_low is None:
            self.distill_epsilon_low = self.epsilon
        if self.distill_epsilon_high is None:
            self.distill_epsilon_high = self.epsilon_high
        self._resolve_generation_batch()
        if isinstance(self.lora_target_modules, list) and len(self.lora_target_modules) == 1:
            self.lora_target_modules = self.lora_target_modules[0]  # ["all-linear"] -> "all-linear", as TRL's ModelConfig
        self.validate()

    def _resolve_generation_batch(self) -> None:
        """steps_per_generation from generation_batch_size (TRL's rule, in problems), else from
        gradient_accumulation_steps; both set must agree."""
        if self.generation_batch_size is None:
            if self.steps_per_generation is None:
                self.steps_per_generation = self.gradient_accumulation_steps
            return
        per_step = self.per_device_train_batch_size * self.world_size
        if self.generation_batch_size < 1 or self.generation_batch_size % per_step:
            raise ValueError(
                f"SGPOConfig.generation_batch_size: ({self.generation_batch_size}) must be a positive multiple of "
                f"per_device_train_batch_size × processes ({per_step})"
            )
        steps = self.generation_batch_size // per_step
        if self.steps_per_generation is not None and self.steps_per_generation != steps:
            raise ValueError(
                f"SGPOConfig.generation_batch_size: ({self.generation_batch_size}) and steps_per_generation "
                f"({self.steps_per_generation}) disagree; set one of them"
            )
        self.steps_per_generation = steps

    def validate(self) -> None:
        """Raise ValueError naming the field for any inconsistent setting."""

        def bad(name: str, msg: str) -> None:
            raise ValueError(f"SGPOConfig.{name}: {msg}")

        if self.num_generations < 2:
            bad(
                "num_generations",
                f"must be ≥ 2 (a group of one has no relative advantage, so the RL term would be 0), got {self.num_generations}",
            )
        if self.learning_rate < 0:
            bad("learning_rate", f"must be ≥ 0, got {self.learning_rate}")
        if self.num_guided_generations < 0:
            bad("num_guided_generations", f"must be ≥ 0, got {self.num_guided_generations}")
        if self.distill_coef < 0:
            bad("distill_coef", f"must be ≥ 0, got {self.distill_coef}")
        if self.distill_coef > 0 and self.num_guided_generations == 0:
            bad("distill_coef", "> 0 needs guided rollouts: set num_guided_generations > 0 (or distill_coef=0 for GRPO)")
        if self.loss_type not in LOSS_TYPE_TO_AGG_MODE:
            bad("loss_type", f"must be one of {', '.join(LOSS_TYPE_TO_AGG_MODE)}, got {self.loss_type!r}")
        if self.scale_rewards not in ("group", "batch", "none"):
            bad("scale_rewards", f"must be group, batch, none, true or false, got {self.scale_rewards!r}")
        if self.importance_sampling_level not in ("token", "sequence"):
            bad("importance_sampling_level", f"must be token or sequence, got {self.importance_sampling_level!r}")
        if self.num_completions_to_print is not None and self.num_completions_to_print < 1:
            bad("num_completions_to_print", f"must be ≥ 1, got {self.num_completions_to_print}")
        if self.distill_on not in ("correct", "all"):
            bad("distill_on", f"must be correct or all, got {self.distill_on!r}")
        if self.distill_divergence not in DISTILL_TERMS:
            bad("distill_divergence", f"must be one of {', '.join(DISTILL_TERMS)}, got {self.distill_divergence!r}")
        if self.distill_topk is not None and (self.distill_topk < 1 or self.distill_divergence != "forward_kl"):
            bad("distill_topk", "must be ≥ 1 and is only defined for distill_divergence=forward_kl")
        if self.instance_weighting not in INSTANCE_WEIGHTS:
            bad("instance_weighting", f"must be one of {', '.join(INSTANCE_WEIGHTS)}, got {self.instance_weighting!r}")
        if not 0.0 <= self.instance_weight_ema < 1.0:
            bad("instance_weight_ema", f"must be in [0, 1), got {self.instance_weight_ema}")
        if self.steps_per_generation % self.gradient_accumulation_steps:
            bad(
                "steps_per_generation",
                f"({self.steps_per_generation}) must be a multiple of gradient_accumulation_steps ({self.gradient_accumulation_steps})",
            )
        if self.num_iterations < 1:
            bad("num_iterations", f"must be ≥ 1, got {self.num_iterations}")
        if self.max_completion_length < 1:
            bad("max_completion_length", f"must be ≥ 1, got {self.max_completion_length}")
        if self.temperature <= 0:
            bad("temperature", "must be > 0 for training (log-probs are taken at this temperature)")
        if self.policy_shaping_gamma <= 0:
            bad("policy_shaping_gamma", f"must be > 0, got {self.policy_shaping_gamma}")
        if self.head_implementation not in ("chunked", "plain"):
            bad("head_implementation", f"must be chunked or plain, got {self.head_implementation!r}")
        for name in ("backward_group_size", "backward_group_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                bad(name, f"must be ≥ 1 (or None: no limit), got {getattr(self, name)}")
        if self.head_chunk_size is not None and self.head_chunk_size < 1:
            bad("head_chunk_size", f"must be ≥ 1, got {self.head_chunk_size}")
        if self.use_peft:
            if self.lora_r < 1:
                bad("lora_r", f"must be ≥ 1, got {self.lora_r}")
            if not 0.0 <= self.lora_dropout < 1.0:
                bad("lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
            if self.use_vllm:
                bad(
                    "use_peft",
                    "with use_vllm is not supported yet (the engine would need the merged weights at every push): train LoRA with Hugging Face generate",
                )
        _validate_vllm(self, bad)

    @property
    def is_grpo(self) -> bool:
        return self.distill_coef == 0 and self.num_guided_generations == 0


def _validate_vllm(config: SGPOConfig, bad) -> None:
    """The vLLM fields (cheap checks only: nothing is imported from vllm here)."""
    if config.vllm_importance_sampling_cap is not None:
        config.vllm_importance_sampling_clip_max = config.vllm_importance_sampling_cap
    if config.vllm_mode not in ("colocate", "server"):
        bad("vllm_mode", f"must be colocate or server, got {config.vllm_mode!r}")
    if not 0.0 < config.vllm_gpu_memory_utilization <= 1.0:
        bad("vllm_gpu_memory_utilization", f"must be in (0, 1], got {config.vllm_gpu_memory_utilization}")
    if config.vllm_tensor_parallel_size < 1:
        bad("vllm_tensor_parallel_size", f"must be ≥ 1, got {config.vllm_tensor_parallel_size}")
    if config.vllm_max_model_length is not None and config.vllm_max_model_length <= config.max_completion_length:
        bad(
            "vllm_max_model_length",
            f"({config.vllm_max_model_length}) must exceed max_completion_length ({config.max_completion_length})",
        )
    if config.vllm_kv_cache_memory_bytes is not None and config.vllm_kv_cache_memory_bytes < 2**20:
        bad("vllm_kv_cache_memory_bytes", f"must be at least 1 MiB (1048576), got {config.vllm_kv_cache_memory_bytes}")
    if not 0 < config.vllm_server_port < 65536:
        bad("vllm_server_port", f"must be a TCP port (1-65535), got {config.vllm_server_port}")
    if not 0 < config.vllm_group_port < 65536:
        bad("vllm_group_port", f"must be a TCP port (1-65535), got {config.vllm_group_port}")
    if config.vllm_server_timeout <= 0:
        bad("vllm_server_timeout", f"must be > 0, got {config.vllm_server_timeout}")
    if config.vllm_server_weight_sync not in ("nccl", "disk"):
        bad("vllm_server_weight_sync", f"must be nccl or disk, got {config.vllm_server_weight_sync!r}")
    if config.vllm_importance_sampling_mode not in IS_MODES:
        bad(
            "vllm_importance_sampling_mode",
            f"must be one of {', '.join(IS_MODES)}, got {config.vllm_importance_sampling_mode!r}",
        )
    lo, hi = config.vllm_importance_sampling_clip_min, config.vllm_importance_sampling_clip_max
    if hi is not None and hi <= 0:
        bad("vllm_importance_sampling_clip_max", f"must be > 0, got {hi}")
    if lo is not None and lo < 0:
        bad("vllm_importance_sampling_clip_min", f"must be ≥ 0, got {lo}")
    if lo is not None and hi is not None and lo >= hi:
        bad("vllm_importance_sampling_clip_min", f"({lo}) must be less than vllm_importance_sampling_clip_max ({hi})")
    if config.vllm_importance_sampling_mode.endswith("truncate") and lo is None and hi is None:
        bad("vllm_importance_sampling_clip_max", f"{config.vllm_importance_sampling_mode} needs clip_max or clip_min")
    if config.use_vllm:
        try:  # the HF generation_kwargs must have a vLLM meaning
            sampling_kwargs_from_generation_kwargs(config.generation_kwargs or {})
        except ValueError as exc:
            bad("generation_kwargs", str(exc))
