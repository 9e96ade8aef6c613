"""vLLM in its own process: `grpolab vllm-serve`, and the backend that trains against it.

    grpolab vllm-serve -c PRESET [key=value ...] [--host 0.0.0.0] [--port 8000]   # where generation runs
    grpolab train -c PRESET generation.backend=vllm_server generation.vllm_server_url=http://HOST:8000

For when generation gets its own devices: the server holds the engine, the trainer the policy. The
server starts from the model's config with dummy weights; the trainer sends its weights when it
connects and after every optimizer step, so the engine never serves anything but the policy.

- Requests are JSON over HTTP (stdlib server; one engine call at a time): token ids in, sampled ids
  and their log-probs out, exactly what the colocated `VLLMGenerator` returns. The trainer sends its
  stop ids and a seed drawn from its own RNG with every request, so `train.seed` decides the rollouts.
- Weights never travel as JSON: the trainer hosts a TCP store and both sides build a two-member
  process group outside any torch.distributed world (gloo on CPU, NCCL when the policy is on a GPU);
  POST /sync_weights carries names, shapes and dtypes, and the tensors follow by broadcast.
- Under torchrun every rank sends its own prompts to the one server (served one request at a time),
  rank 0 alone sends the weights, and every rank waits at a barrier until it has: before the first
  rollout and after every sync, so no rank samples from the old weights.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

import torch
import torch.distributed as dist

from grpolab.rollout.backend import GenerationOutput, SamplingParams
from grpolab.rollout.seeds import draw_seed
from grpolab.rollout.weight_sync import engine_weights

SYNC_TIMEOUT = timedelta(minutes=10)


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


def _weight_group(host: str, port: int, rank: int, backend: str) -> Any:
    """A two-member process group (trainer rank 0, server rank 1) outside the default world."""
    store = dist.TCPStore(host, port, 2, is_master=rank == 0, timeout=SYNC_TIMEOUT, wait_for_workers=False)
    if backend == "nccl":  # not exercised on these CPU machines
        return dist.ProcessGroupNCCL(store, rank, 2, dist.ProcessGroupNCCL.Options())
    return dist.ProcessGroupGloo(store, rank, 2, SYNC_TIMEOUT)


def _broadcast(group: Any, tensor: torch.Tensor) -> None:
    options = dist.BroadcastOptions()
    options.rootRank = 0
    group.broadcast([tensor], options).wait()


# -- the server ---------------------------------------------------------------------------------
class EngineServer:
    """The engine's side: generate, and receive weights from the one trainer connected to it."""

    def __init__(self, engine: Any, device: torch.device) -> None:
        self.engine = engine
        self.device = device
        self.lock = threading.Lock()  # one engine call at a time
        self.group: Any = None
        self.backend = "gloo"

    def generate(self, body: dict[str, Any]) -> dict[str, Any]:
        params = SamplingParams(**body["params"])
        with self.lock:
            self.engine.stop_ids = [int(i) for i in body["stop_ids"]]
            out = self.engine.generate(body["prompts"], params, seed=int(body["seed"]))
        return asdict(out)

    def init_weight_sync(self, body: dict[str, Any]) -> dict[str, Any]:
        self.backend = body["backend"]
        self.group = _weight_group(body["host"], int(body["port"]), 1, self.backend)
        return {"ok": True}

    def sync_weights(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.group is None:
            raise RuntimeError("POST /init_weight_sync first")
        on = self.device if self.backend == "nccl" else torch.device("cpu")
        weights = []
        with self.lock:
            for name, shape, dtype in zip(body["names"], body["shapes"], body["dtypes"]):
                tensor = torch.empty(shape, dtype=_dtype(dtype), device=on)
                _broadcast(self.group, tensor)
                weights.append((name, tensor))
            seconds = self.engine.load_weights(weights)
        return {"load_seconds": seconds}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self
        routes = {
            "/generate": self.generate,
            "/init_weight_sync": self.init_weight_sync,
            "/sync_weights": self.sync_weights,
        }

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/health":
                    self._reply(200, {"ok": True, "device": server.device.type, "synced": server.group is not None})
                else:
                    self._reply(404, {"error": f"no route {self.path}"})

            def do_POST(self) -> None:
                route = routes.get(self.path)
                if route is None:
                    self._reply(404, {"error": f"no route {self.path}"})
                    return
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                    self._reply(200, route(body))
                except Exception as err:  # the trainer sees the server's error, not a dropped connection
                    self._reply(500, {"error": f"{type(err).__name__}: {err}"})

            def log_message(self, format: str, *args: Any) -> None:
                return  # one line per request would drown the engine's own log

        return Handler


def serve(engine: Any, device: torch.device, host: str, port: int) -> None:
    """Serve until interrupted."""
    httpd = ThreadingHTTPServer((host, port), EngineServer(engine, device).handler())
    print(f"grpolab vllm-serve: ready on http://{host}:{port}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


# -- the trainer's side -------------------------------------------------------------------------
class VLLMServerClient:
    """generation.backend=vllm_server: the Generator protocol over HTTP, weights by broadcast."""

    def __init__(
        self,
        url: str,
        model: Any,
        stop_ids: list[int],
        *,
        sends_weights: bool = True,
        barrier: Callable[[], None] | None = None,
        timeout_s: float = 600.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.sends_weights = sends_weights  # rank 0 under torchrun; the others only generate
        self.barrier = barrier or (lambda: None)
        self.stop_ids = list(stop_ids)
        self.timeout_s = timeout_s
        self.group: Any = None
        self.backend = "gloo"
        try:
            self.server_device = str(self._call("GET", "/health", None, timeout=10)["device"])
        except OSError as err:
            raise ConnectionError(
                f"generation.vllm_server_url={url}: no grpolab vllm-serve answers there ({err}). Start one "
                f"with `grpolab vllm-serve -c PRESET --port {urlparse(self.url).port or 8000}` (same model)"
            ) from None
        self.sync_weights(model)

    def _call(self, method: str, path: str, body: dict[str, Any] | None, timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            detail = json.loads(err.read() or b"{}").get("error", err.reason)
            raise RuntimeError(f"vllm-serve {path}: {detail}") from None

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> GenerationOutput:
        seed = draw_seed()  # from the trainer's RNG (or the prefetch's stream), as colocated
        body = {"prompts": prompts, "params": asdict(params), "stop_ids": self.stop_ids, "seed": seed}
        return GenerationOutput(**self._call("POST", "/generate", body))

    def _concurrently(self, request: Any, work: Any) -> Any:
        """Run the HTTP request in a thread while this thread does its half of the collective."""
        answer: dict[str, Any] = {}

        def call() -> None:
            try:
                answer["value"] = request()
            except BaseException as err:
                answer["error"] = err

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        work()
        thread.join()
        if "error" in answer:
            raise answer["error"]
        return answer["value"]

    def sync_weights(self, model: Any) -> float:
        """Send the policy's weights (LoRA merged) to the server, then wait at the barrier for every
        rank; returns the seconds it took (on every rank: the wait is the sync's cost there too)."""
        started = time.perf_counter()
        if self.sends_weights:
            self._send(model)
        self.barrier()
        return time.perf_counter() - started

    def _send(self, model: Any) -> None:
        weights = [(name, tensor.detach()) for name, tensor in engine_weights(model)]
        if self.group is None:  # NCCL between two GPUs; gloo as soon as either side is a CPU
            self._join("nccl" if weights[0][1].is_cuda and self.server_device == "cuda" else "gloo")
        body = {
            "names": [name for name, _ in weights],
            "shapes": [list(t.shape) for _, t in weights],
            "dtypes": [str(t.dtype).removeprefix("torch.") for _, t in weights],
        }

        def send() -> None:
            for _, tensor in weights:
                _broadcast(self.group, tensor.contiguous() if self.backend == "nccl" else tensor.cpu().contiguous())

        self._concurrently(lambda: self._call("POST", "/sync_weights", body), send)

    def _join(self, backend: str) -> None:
        """Host the store on the address the server reaches us by; both sides join the group at once."""
        server = urlparse(self.url)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # no packet is sent
            probe.connect((server.hostname or "127.0.0.1", server.port or 80))
            host = probe.getsockname()[0]
        with socket.socket() as free:
            free.bind(("", 0))
            port = int(free.getsockname()[1])
        body = {"host": host, "port": port, "backend": backend}
        groups: list[Any] = []
        self._concurrently(
            lambda: self._call("POST", "/init_weight_sync", body),
            lambda: groups.append(_weight_group(host, port, 0, backend)),
        )
        self.group = groups[0]
        self.backend = backend

    def close(self) -> None:
        self.group = None
