"""Measurements for .ci/gpu-check (run with the repository root on PYTHONPATH).

    gpu_measure.py model-f16 OUT.gguf [--rehearsal]  Qwen2.5-Coder-0.5B's sizes, F16 (JSON out)
    gpu_measure.py quantize OUT.gguf MODEL.json      that file to Q4_K_M, recorded in the JSON
    gpu_measure.py throughput MODEL --gpu-layers N --threads T [--prompts 1536,3072] [--gen 64]
    gpu_measure.py table WORKDIR --info K=V...       the summary table of the JSON files there
    gpu_measure.py deps                              pinned dependencies: missing, other versions

`model-f16` writes noise weights with the real model's sizes (tests/tiny_gguf.py), then
`quantize` lets llama.cpp make Q4_K_M of them like the registry's file: the same compute per
token as the real model, which cannot travel to the GPU machine (the carry limit is 64 MiB).

`throughput` times llama.cpp alone through its C API: a cold prompt of each length (the KV cache
cleared before each run, batches of the engine's default 512 tokens, median of 3), then greedy
generation one token at a time after the first prompt. model-f16 and throughput print JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.metadata
import json
import re
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

REHEARSAL_SHAPE = {"n_layer": 2, "n_embd": 128, "n_head": 2, "n_head_kv": 1, "n_ff": 256}
"""A small model with the real vocabulary size, for rehearsing the script on a CPU."""

_LOG_KEEP = re.compile(r"offloaded|using device|buffer size|flash_attn +=|n_ctx +=")


def write_f16(out: Path, rehearsal: bool) -> dict[str, object]:
    """The F16 file beside `out` (numpy and gguf only: it can run while llama.cpp builds)."""
    from tests.tiny_gguf import QWEN25_CODER_0_5B, Shape, write_tiny_gguf

    shape = Shape(**REHEARSAL_SHAPE, n_vocab=QWEN25_CODER_0_5B.n_vocab) if rehearsal else None
    start = time.perf_counter()
    f16 = write_tiny_gguf(out.with_suffix(".f16.gguf"), shape=shape or QWEN25_CODER_0_5B, f16=True)
    return {
        "path": str(out),
        "shape": "rehearsal" if rehearsal else "qwen2.5-coder-0.5b",
        "f16_bytes": f16.stat().st_size,
        "write_s": round(time.perf_counter() - start, 1),
    }


def quantize(out: Path, record: Path) -> None:
    """Q4_K_M from the F16 file, by llama.cpp; adds its size and time to the JSON `record`."""
    import llama_cpp.llama_cpp as C

    f16 = out.with_suffix(".f16.gguf")
    start = time.perf_counter()
    params = C.llama_model_quantize_default_params()
    params.ftype = C.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 0  # all cores
    partial = out.with_suffix(".partial")  # a rerun must not take a cut-off file for the model
    if C.llama_model_quantize(str(f16).encode(), str(partial).encode(), ctypes.byref(params)):
        raise SystemExit(f"llama.cpp could not quantize {f16}")
    partial.rename(out)
    f16.unlink()
    info = json.loads(record.read_text())
    info |= {"quant": "Q4_K_M", "bytes": out.stat().st_size}
    info["quantize_s"] = round(time.perf_counter() - start, 1)
    record.write_text(json.dumps(info))


class _Llama:
    """One model and one single-sequence context, with llama.cpp's log kept for the report."""

    def __init__(self, path: str, gpu_layers: int, threads: int, n_ctx: int, batch: int) -> None:
        import llama_cpp.llama_cpp as C

        self.C = C
        self.log: list[str] = []
        # Kept on self: ctypes would free a callback that nothing references.
        self._callback = C.llama_log_callback(self._on_log)
        C.llama_log_set(self._callback, ctypes.c_void_p())
        C.llama_backend_init()
        mparams = C.llama_model_default_params()
        mparams.n_gpu_layers = gpu_layers
        self.model = C.llama_model_load_from_file(path.encode(), mparams)
        if not self.model:
            raise SystemExit(f"llama.cpp could not load {path}")
        cparams = C.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = n_ctx, batch, batch
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.flash_attn_type = -1  # auto, as the engine's default
        self.ctx = C.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise SystemExit("llama.cpp could not create a context")
        self.batch_size = batch
        self.batch = C.llama_batch_init(batch, 0, 1)
        self.n_vocab = C.llama_vocab_n_tokens(C.llama_model_get_vocab(self.model))

    def _on_log(self, _level: int, text: bytes, _data: ctypes.c_void_p) -> None:
        line = text.decode(errors="replace")
        sys.stderr.write(line)
        if _LOG_KEEP.search(line):
            self.log.append(line.strip())

    def clear(self) -> None:
        self.C.llama_memory_clear(self.C.llama_get_memory(self.ctx), True)

    def decode(self, tokens: list[int], pos0: int) -> None:
        """Evaluate `tokens` at positions pos0..., in batches; logits for the last one only."""
        for start in range(0, len(tokens), self.batch_size):
            chunk = tokens[start : start + self.batch_size]
            for i, token in enumerate(chunk):
                self.batch.token[i] = token
                self.batch.pos[i] = pos0 + start + i
                self.batch.n_seq_id[i] = 1
                self.batch.seq_id[i][0] = 0
                self.batch.logits[i] = start + i == len(tokens) - 1
            self.batch.n_tokens = len(chunk)
            if self.C.llama_decode(self.ctx, self.batch) != 0:
                raise SystemExit("llama_decode failed")
        self.C.llama_synchronize(self.ctx)

    def argmax(self) -> int:
        logits = self.C.llama_get_logits_ith(self.ctx, -1)
        return int(np.ctypeslib.as_array(logits, shape=(self.n_vocab,)).argmax())

    def close(self) -> None:
        self.C.llama_batch_free(self.batch)
        self.C.llama_free(self.ctx)
        self.C.llama_model_free(self.model)


def throughput(
    path: str, gpu_layers: int, threads: int, prompts: list[int], gen: int
) -> dict[str, object]:
    import llama_cpp.llama_cpp as C

    n_ctx = (max(prompts) + gen + 256) // 256 * 256
    llm = _Llama(path, gpu_layers, threads, n_ctx, batch=512)
    rng = np.random.default_rng(0)
    # Any valid ids: the cost of a token does not depend on which one it is.
    tokens = [int(t) for t in rng.integers(0, 512, max(prompts))]
    llm.decode(tokens[:256], 0)  # warm-up: CUDA kernels load and graphs are built on first use
    llm.clear()
    result: dict[str, object] = {
        "gpu_offload_supported": bool(C.llama_supports_gpu_offload()),
        "gpu_layers": gpu_layers,
        "threads": threads,
        "n_ctx": n_ctx,
        "batch": llm.batch_size,
        "system_info": C.llama_print_system_info().decode(errors="replace"),
    }
    for length in prompts:
        times = []
        for _ in range(3):
            llm.clear()
            start = time.perf_counter()
            llm.decode(tokens[:length], 0)
            times.append(time.perf_counter() - start)
        result[f"prompt_{length}_ms"] = round(statistics.median(times) * 1000, 2)
        result[f"prompt_{length}_tok_s"] = round(length / statistics.median(times), 1)
    llm.clear()
    llm.decode(tokens[: prompts[0]], 0)
    token, steps = llm.argmax(), []
    for i in range(gen):
        start = time.perf_counter()
        llm.decode([token], prompts[0] + i)
        token = llm.argmax()
        steps.append(time.perf_counter() - start)
    result["gen_tokens"] = gen
    result["gen_after_prompt"] = prompts[0]
    result["gen_ms_per_token_p50"] = round(statistics.median(steps) * 1000, 3)
    result["gen_ms_per_token_mean"] = round(statistics.fmean(steps) * 1000, 3)
    result["gen_tok_s"] = round(gen / sum(steps), 1)
    result["llama_log"] = llm.log[:40]
    llm.close()
    return result


def _load(work: Path, name: str) -> dict:
    try:
        return json.loads((work / name).read_text())
    except (OSError, ValueError):
        return {}


def _tests(work: Path) -> str:
    """pytest's counts from its JUnit file (written also when the run was interrupted)."""
    try:
        root = ET.parse(work / "junit.xml").getroot()
    except (OSError, ET.ParseError):
        return "-"
    suite = root if root.tag == "testsuite" else root[0]
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    return f"{passed} passed, {n['failures']} failed, {n['errors']} errors, {n['skipped']} skipped"


def _gpu_use(work: Path) -> str:
    """Peak GPU memory (MiB) and distinct processes on the GPU, sampled while the tests ran."""
    peak, pids = 0, set()
    with contextlib.suppress(OSError):
        for line in (work / "smi.csv").read_text().splitlines():
            fields = [f.strip() for f in line.split(",")]
            if len(fields) == 3 and fields[1].isdigit():
                peak = max(peak, int(fields[1]))
    with contextlib.suppress(OSError):
        pids = {line.split(",")[0] for line in (work / "apps.csv").read_text().splitlines()}
        pids = {p for p in pids if p.strip().isdigit()}
    return f"peak {peak} MiB used, {len(pids)} processes seen on the GPU" if peak else "-"


def _doctor(work: Path) -> list[str]:
    """What `doctor` says of the engine (build, devices, a decode in a worker) and memory."""
    checks = _load(work, "doctor.json").get("checks", [])
    return [
        f"doctor {c.get('name')}: {c.get('status')}, {c.get('message')}"
        for c in checks
        if c.get("group") == "engine" or c.get("name") == "memory"
    ]


def _cell(value: object) -> str:
    return "-" if value in (None, "") else str(value)


def _speedup(cpu: object, gpu: object) -> str:
    """How many times less time the GPU takes."""
    if isinstance(cpu, int | float) and isinstance(gpu, int | float) and gpu:
        return f"{cpu / gpu:.1f}x"
    return ""


def _rows(gpu: dict, cpu: dict, lat: dict, lat_cpu: dict, lat16: dict) -> list[tuple]:
    rows: list[tuple] = [("figure", "GPU", "CPU", "CPU/GPU time")]
    for length in (k.split("_")[1] for k in gpu if re.fullmatch(r"prompt_\d+_ms", k)):
        ms = f"prompt_{length}_ms"
        rows.append(
            (
                f"prompt {length} tok/s",
                gpu.get(f"prompt_{length}_tok_s"),
                cpu.get(f"prompt_{length}_tok_s"),
                "",
            )
        )
        rows.append(
            (
                f"prompt {length} ms (cold)",
                gpu.get(ms),
                cpu.get(ms),
                _speedup(cpu.get(ms), gpu.get(ms)),
            )
        )
    key = "gen_ms_per_token_p50"
    rows.append(
        (
            "generation ms/token p50",
            gpu.get(key),
            cpu.get(key),
            _speedup(cpu.get(key), gpu.get(key)),
        )
    )
    for key, label in (
        ("p50_ms", "latency p50 ms"),
        ("p95_ms", "latency p95 ms"),
        ("ttft_p50_ms", "first token p50 ms"),
        ("baseline_p50_ms", "no-reuse p50 ms"),
        ("baseline_ttft_p50_ms", "no-reuse first token p50"),
        ("ratio_p50", "reuse/no-reuse p50"),
        ("prompt_tokens_p50", "prompt tokens p50"),
    ):
        speedup = _speedup(lat_cpu.get(key), lat.get(key)) if key.endswith("_ms") else ""
        rows.append((label, lat.get(key), lat_cpu.get(key), speedup))
    rows.append(
        (
            "maxTokens 16: p50 / p95 ms",
            f"{_cell(lat16.get('p50_ms'))}/{_cell(lat16.get('p95_ms'))}",
            "",
            "",
        )
    )
    return rows


def table(work: Path, info: dict[str, str]) -> tuple[str, dict]:
    """The summary table (the last lines of the device run) and everything it was made from."""
    names = (
        "model",
        "throughput-gpu",
        "throughput-cpu",
        "latency-gpu",
        "latency-cpu",
        "latency-gpu16",
    )
    parts = {n: _load(work, f"{n}.json") for n in names}
    parts |= {"info": info, "tests": _tests(work), "gpu_use_during_tests": _gpu_use(work)}
    model, gpu = parts["model"], parts["throughput-gpu"]
    offload = next((x for x in gpu.get("llama_log", []) if "offloaded" in x), "no offload line")
    rows = _rows(
        gpu,
        parts["throughput-cpu"],
        parts["latency-gpu"],
        parts["latency-cpu"],
        parts["latency-gpu16"],
    )
    lines = [
        f"gpu-check on {info.get('device')}: build {info.get('build_min')} min "
        f"({' '.join(info.get('build', '').split())}); total {info.get('total_s')} s",
        f"steps: {info.get('status')}",
        f"tests, offload on: {parts['tests']}; {parts['gpu_use_during_tests']}",
        *_doctor(work),
        f"model: {model.get('shape')} shape, {model.get('quant')}, "
        f"{int(model.get('bytes', 0)) // 2**20} MiB, noise weights; {offload}",
        *(f"{a:<28} {_cell(b):>11} {_cell(c):>11} {_cell(d):>12}" for a, b, c, d in rows),
    ]
    return "\n".join(lines), parts


def dependencies() -> str:
    """The pinned dependencies as this Python sees them: missing ones, other versions."""
    from gpu_carry import requirements  # beside this file

    missing, other = [], []
    for requirement in requirements()[0]:
        name, _, pin = requirement.partition("==")
        if name == "llama-cpp-python":
            continue
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        if pin and version != pin:
            other.append(f"{name} {version} (pinned {pin})")
    return f"dependencies missing: {missing or 'none'}; other versions: {other or 'none'}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    model = commands.add_parser("model-f16")
    model.add_argument("out", type=Path)
    model.add_argument("--rehearsal", action="store_true", help="a small model, same vocabulary")
    quant = commands.add_parser("quantize")
    quant.add_argument("out", type=Path)
    quant.add_argument("record", type=Path)
    tp = commands.add_parser("throughput")
    tp.add_argument("model")
    tp.add_argument("--gpu-layers", type=int, required=True)
    tp.add_argument("--threads", type=int, required=True)
    tp.add_argument("--prompts", default="1536,3072", help="prompt lengths in tokens")
    tp.add_argument("--gen", type=int, default=64, help="tokens generated one at a time")
    commands.add_parser("deps")
    summary = commands.add_parser("table")
    summary.add_argument("work", type=Path)
    summary.add_argument("--info", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.command == "model-f16":
        print(json.dumps(write_f16(args.out, args.rehearsal)))
    elif args.command == "deps":
        print(dependencies())
    elif args.command == "quantize":
        quantize(args.out, args.record)
    elif args.command == "throughput":
        lengths = [int(n) for n in args.prompts.split(",")]
        print(json.dumps(throughput(args.model, args.gpu_layers, args.threads, lengths, args.gen)))
    else:
        text, parts = table(args.work, dict(i.partition("=")[::2] for i in args.info))
        (args.work / "summary.json").write_text(json.dumps(parts, indent=1))
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
