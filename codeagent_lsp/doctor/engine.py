"""Engine and model checks: the llama.cpp build (version, GPU offload, devices and their
memory), the CPU features the build uses against those this machine runs, one short decode in
a supervised worker process (a build that cannot run here is reported, not crashed on), and
the model: present, its sha256 against the registry and the policy, its template family, and
whether it fits the device's memory at the configured context size."""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import llama_cpp.llama_cpp as C

from codeagent_lsp.context.templates import TemplateError, detect_template
from codeagent_lsp.doctor.check import Check, Options, Status
from codeagent_lsp.engine import models, parking
from codeagent_lsp.engine.engine import GenerationJob
from codeagent_lsp.engine.llama import EngineError, VocabularyOnly, vocabulary_read_in_a_child
from codeagent_lsp.engine.supervisor import Supervisor, WorkerConfig
from codeagent_lsp.security.policy import CacheRules
from codeagent_lsp.settings import EngineSettings

GIB = 1 << 30
MIB = 1 << 20
LOAD_TIMEOUT_S = 300.0
"""A real model on a busy CPU takes seconds to load; a hung worker must not hang the doctor."""
DECODE_PROMPT = "def add(a, b):\n    return"
PORTABLE_BUILD = (
    "CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install --no-cache-dir --force-reinstall "
    f"llama-cpp-python=={llama_cpp.__version__} (README: Which llama.cpp build)"
)

# llama_print_system_info's names for CPU features -> the flag /proc/cpuinfo shows for them.
# The kernel clears a flag whose register state it does not enable (XCR0), so a flag present
# there means the CPU has the feature and the OS lets programs use it.
CPUINFO_FLAGS = {
    "SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "F16C": "f16c",
    "FMA": "fma", "BMI2": "bmi2", "AVX_VNNI": "avx_vnni", "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi", "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8", "NEON": "asimd", "ARM_FMA": "asimd", "FP16_VA": "asimdhp",
    "DOTPROD": "asimddp", "MATMUL_INT8": "i8mm", "SVE": "sve", "SME": "sme",
}  # fmt: skip
_DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}


# --- the llama.cpp build ------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    kind: str
    """cpu, gpu, igpu, accel (ggml_backend_dev_type)."""
    free: int
    total: int
    """Bytes (ggml_backend_dev_memory)."""

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "type": self.kind,
            "freeBytes": self.free,
            "totalBytes": self.total,
        }

    def __str__(self) -> str:
        free, total = self.free / GIB, self.total / GIB
        return f"{self.name} {self.description}: {free:.1f} of {total:.1f} GiB free"


def devices() -> list[Device] | None:
    """llama.cpp's devices with their free and total memory, from ggml's backend device API;
    None when this llama-cpp-python does not expose it. llama_cpp.llama_cpp binds none of
    these functions, so they are bound here from the ggml library it loads (a stable C API)."""
    try:
        from llama_cpp._ggml import libggml as lib

        count, get = lib.ggml_backend_dev_count, lib.ggml_backend_dev_get
        name, describe = lib.ggml_backend_dev_name, lib.ggml_backend_dev_description
        kind, memory = lib.ggml_backend_dev_type, lib.ggml_backend_dev_memory
    except (ImportError, OSError, AttributeError):
        return None
    count.restype, get.restype, get.argtypes = ctypes.c_size_t, ctypes.c_void_p, [ctypes.c_size_t]
    for text in (name, describe):
        text.restype, text.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    kind.restype, kind.argtypes = ctypes.c_int, [ctypes.c_void_p]
    sizes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
    memory.restype, memory.argtypes = None, sizes
    found = []
    for i in range(count()):
        device = get(i)
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        memory(device, ctypes.byref(free), ctypes.byref(total))
        found.append(
            Device(
                (name(device) or b"?").decode(errors="replace"),
                (describe(device) or b"").decode(errors="replace"),
                _DEVICE_TYPES.get(kind(device), "other"),
                free.value,
                total.value,
            )
        )
    return found


def _ggml_version() -> str:
    with contextlib.suppress(ImportError, OSError, AttributeError):
        from llama_cpp._ggml import libggml as lib

        lib.ggml_version.restype = lib.ggml_commit.restype = ctypes.c_char_p
        return f"ggml {lib.ggml_version().decode()} ({lib.ggml_commit().decode()})"
    return "ggml version unknown"


def _nvidia_gpu_present() -> bool:
    """A GPU the NVIDIA driver knows, whether or not this build can use it."""
    return Path("/proc/driver/nvidia/gpus").is_dir() or Path("/dev/nvidia0").exists()


def build_check(settings: EngineSettings, found: list[Device] | None) -> Check:
    offload = bool(C.llama_supports_gpu_offload())
    version = f"llama-cpp-python {llama_cpp.__version__}, {_ggml_version()}"
    data: dict[str, object] = {
        "version": llama_cpp.__version__,
        "gpuOffload": offload,
        "systemInfo": C.llama_print_system_info().decode(errors="replace").strip(),
    }
    gpus = [d for d in found or [] if d.kind in ("gpu", "igpu")]
    if not offload and _nvidia_gpu_present():
        return Check(
            "engine", "llama.cpp build", "warn",
            f"{version} has no GPU offload, yet this machine has an NVIDIA GPU: the model "
            "runs on the CPU",
            "CMAKE_ARGS='-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=<arch>' pip install "
            f"--no-cache-dir --force-reinstall llama-cpp-python=={llama_cpp.__version__}",
            data,
        )  # fmt: skip
    if not offload:
        return Check("engine", "llama.cpp build", "ok", f"{version}, CPU only", data=data)
    if found is not None and not gpus:
        return Check(
            "engine", "llama.cpp build", "warn",
            f"{version} offloads to a GPU, but llama.cpp sees no GPU device: the model runs "
            "on the CPU",
            "check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES",
            data,
        )  # fmt: skip
    if settings.nGpuLayers == 0:
        return Check(
            "engine", "llama.cpp build", "warn",
            f"{version} offloads to a GPU, but codeagent.engine.nGpuLayers is 0",
            "set codeagent.engine.nGpuLayers to -1 (all layers)", data,
        )  # fmt: skip
    return Check("engine", "llama.cpp build", "ok", f"{version}, GPU offload on", data=data)


def devices_check(found: list[Device] | None) -> Check:
    if found is None:
        return Check(
            "engine", "devices", "warn",
            "unknown: this llama-cpp-python does not expose ggml's device API, so devices and "
            "their free memory cannot be listed",
            "on an NVIDIA node, nvidia-smi shows them",
        )  # fmt: skip
    listed = "; ".join(str(d) for d in found) or "none"
    return Check("engine", "devices", "ok", listed, data={"devices": [d.to_json() for d in found]})


# --- CPU features ------------------------------------------------------------------------------


def build_cpu_features() -> tuple[list[str], list[str]]:
    """(CPU features, build options) the llama.cpp build uses, from llama_print_system_info
    ("CPU : SSE3 = 1 | AVX = 1 | ... | OPENMP = 1 | REPACK = 1 |")."""
    info = C.llama_print_system_info().decode(errors="replace")
    used = [name for name, on in re.findall(r"(\w+) = (\d+)", info) if on != "0"]
    return [n for n in used if n in CPUINFO_FLAGS], [n for n in used if n not in CPUINFO_FLAGS]


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The flags of the first processor (x86 "flags", ARM "Features"); None when unknown."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", text, re.M)
    return set(match.group(1).split()) if match else None


def cpu_check(settings: EngineSettings, flags: set[str] | None) -> Check:
    used, options = build_cpu_features()
    data: dict[str, object] = {"buildUses": used, "buildOptions": options}
    if flags is None:
        return Check(
            "engine", "CPU features", "warn",
            f"the build uses {', '.join(used) or 'no special features'}; what this CPU runs is "
            "unknown (no /proc/cpuinfo)",
            "the decode check below shows whether the build runs here",
            data,
        )  # fmt: skip
    missing = [f for f in used if CPUINFO_FLAGS[f] not in flags]
    unused = [f for f, flag in CPUINFO_FLAGS.items() if flag in flags and f not in used]
    data |= {"missing": missing, "unusedByBuild": unused, "virtualMachine": "hypervisor" in flags}
    if missing:
        return Check(
            "engine", "CPU features", "fail",
            f"the build uses {', '.join(missing)}, which this CPU or its OS does not offer: "
            "llama.cpp would stop with an illegal instruction (SIGILL)",
            f"rebuild llama.cpp for this machine or portably: {PORTABLE_BUILD}", data,
        )  # fmt: skip
    tail = f" (the CPU also offers {', '.join(unused)}, unused by this build)" if unused else ""
    if "AMX_INT8" in used and "hypervisor" in flags and settings.repack:
        return Check(
            "engine", "CPU features", "warn",
            "the build uses AMX in a virtual machine: some VMs report AMX yet trap on its "
            "instructions in weight repacking (DESIGN.md: AMX on VMs); the decode check shows "
            "whether this one does",
            "if the decode check stepped down, set codeagent.engine.repack = false", data,
        )  # fmt: skip
    return Check(
        "engine", "CPU features", "ok",
        f"this CPU runs every feature the build uses ({', '.join(used) or 'none'}){tail}",
        data=data,
    )  # fmt: skip


# --- a short decode in a worker ------------------------------------------------------------------

_FIXES = {
    "repack": "set codeagent.engine.repack = false (llama-server: --no-repack)",
    "threads": "set codeagent.engine.threads = 1",
    "gpu_layers": "set codeagent.engine.nGpuLayers = 0",
}


def decode_check(model: Path, settings: EngineSettings) -> Check:
    """Load `model` in a supervised worker and generate a few tokens. A worker that crashes is
    restarted by the supervisor in safer configurations: the check says which one worked."""
    told: list[str] = []
    try:
        supervisor = Supervisor(model, settings, told.append)
    except EngineError as exc:
        return Check("engine", "decode", "fail", str(exc), PORTABLE_BUILD)
    try:
        record, config, problem = _decode(supervisor)
        info = supervisor.stats()["worker"]
    finally:
        supervisor.close()
    data: dict[str, object] = {"worker": info, "told": told}
    if problem is not None:
        return Check("engine", "decode", "fail", problem, PORTABLE_BUILD, data)
    assert record is not None
    data["record"] = record
    asked = WorkerConfig(settings.repack, settings.threads, settings.nGpuLayers)
    done = f"{record['generatedTokens']} tokens decoded in a worker process"
    if config == asked:
        return Check("engine", "decode", "ok", f"{done} with the configured settings", data=data)
    changed = [k for k in _FIXES if getattr(config, k) != getattr(asked, k)]
    cause = told[0].split(". ")[0] if told else "the worker crashed"
    return Check(
        "engine", "decode", "warn",
        f"{cause}; it ran with {', '.join(changed)} changed ({config.to_json()})",
        "; ".join(_FIXES[k] for k in changed) + f", or {PORTABLE_BUILD}", data,
    )  # fmt: skip


def _decode(supervisor: Supervisor) -> tuple[dict[str, object] | None, WorkerConfig, str | None]:
    """(the request record, the configuration that decoded, None) or (None, the last
    configuration, why no configuration could)."""
    try:
        supervisor.wait_loaded(LOAD_TIMEOUT_S)
    except (EngineError, concurrent.futures.TimeoutError) as exc:
        return None, supervisor.config, str(exc) or "the model worker did not load in time"
    tokens = supervisor.tokenize(DECODE_PROMPT)
    last = ""
    for attempt in range(len(_FIXES) + 2):  # one try per safer configuration, and the first
        job = GenerationJob(key=f"doctor{attempt}", tokens=tokens, max_tokens=4)
        try:
            generation = supervisor.submit(job).result(LOAD_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            return None, supervisor.config, "the model worker did not answer in time"
        except EngineError as exc:
            if supervisor.problem is not None:
                return None, supervisor.config, supervisor.problem
            last = str(exc)
            continue  # the supervisor restarts the worker; the job waits for it
        return generation.record.to_json(), supervisor.config, None
    return None, supervisor.config, last


# --- the model -----------------------------------------------------------------------------------


def engine_checks(options: Options) -> Iterator[Check]:
    settings = options.settings.engine
    found = devices()
    yield build_check(settings, found)
    yield devices_check(found)
    yield cpu_check(settings, cpu_flags())
    yield park_check(settings, options.policy.cache)
    resolved = _resolve(options)
    remote = settings.backend == "remote"
    if isinstance(resolved, models.ModelError):
        status: Status = "ok" if remote else "fail"
        why = "the replicas serve (engine.backend remote)" if remote else "no usable model"
        yield Check("engine", "decode", status, f"not run: {why}", "see the model checks")
    elif not _policy_allows(options, resolved.path):
        yield Check(
            "engine", "decode", "fail", "not run: the policy does not allow the model",
            "see the policy and sha256 checks",
        )  # fmt: skip
    else:
        yield decode_check(resolved.path, settings)


def _policy_allows(options: Options, path: Path) -> bool:
    """The doctor loads no model the server would refuse (the path is checked before the
    file is read)."""
    policy = options.policy
    return (
        policy.model_path_allowed(path).allowed
        and policy.model_allowed(models.model_sha256(path)).allowed
    )


def _resolve(options: Options) -> models.ResolvedModel | models.ModelError:
    settings = options.settings
    try:
        directory = models.models_dir(settings.models_dir_setting())
        return models.resolve(settings.model_name(), directory)
    except models.ModelError as exc:
        return exc


def park_check(settings: EngineSettings, cache: CacheRules) -> Check:
    """Parked KV slots hold source code: the folder must be private, writable and capped."""
    if not (settings.parkSlots and cache.park_kv_slots):
        who = "the policy ([cache] park_kv_slots)" if settings.parkSlots else "engine.parkSlots"
        return Check("engine", "parked KV slots", "ok", f"off, by {who}: nothing written")
    folder = Path(settings.parkDir) if settings.parkDir else parking.default_folder()
    files = list(folder.glob("*/*.kv")) if folder.is_dir() else []
    used = sum(f.stat().st_size for f in files)
    data = {"folder": str(folder), "files": len(files), "bytes": used}
    ages = [a for a in (settings.parkMaxAgeHours, cache.park_max_age_hours) if a > 0]
    said = (
        f"{folder}: {len(files)} files, {used / MIB:.0f} of {settings.parkMaxMB} MiB, "
        f"age cap {f'{min(ages):g} h' if ages else 'none'}"
    )
    if folder.exists() and stat.S_IMODE(folder.stat().st_mode) & 0o077:
        return Check(
            "engine", "parked KV slots", "fail", f"{said}; readable by other users",
            f"chmod 700 {folder}", data,
        )  # fmt: skip
    parent = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    if not os.access(parent, os.W_OK):
        return Check(
            "engine", "parked KV slots", "warn", f"{said}; not writable: slots are not parked",
            "set codeagent.engine.parkDir to a folder this user owns", data,
        )  # fmt: skip
    return Check("engine", "parked KV slots", "ok", said, data=data)


def model_checks(options: Options) -> Iterator[Check]:
    resolved = _resolve(options)
    if isinstance(resolved, models.ModelError):
        if options.settings.engine.backend == "remote":  # the file would only count tokens
            yield Check(
                "model", "model file", "warn",
                f"{resolved}; the replicas serve, and prompt budgets count 1 token per byte",
                "set codeagent.remote.tokenizer to the served model's GGUF",
            )  # fmt: skip
            return
        fix = "" if "codeagent-lsp model" in str(resolved) else "codeagent-lsp model list"
        yield Check("model", "model file", "fail", str(resolved), fix)
        return
    size = resolved.path.stat().st_size
    yield Check(
        "model", "model file", "ok",
        f"{resolved.name}: {resolved.path} ({size / MIB:.0f} MiB)",
        data={"name": resolved.name, "path": str(resolved.path), "bytes": size},
    )  # fmt: skip
    yield sha256_check(resolved, options)
    try:
        vocabulary = vocabulary_read_in_a_child(resolved.path)
    except EngineError as exc:
        yield Check("model", "template", "fail", str(exc), "codeagent-lsp model pull (again)")
        return
    try:
        yield template_check(resolved, vocabulary, options.settings.completion.template)
        yield memory_check(resolved, vocabulary, options.settings.engine, devices())
    finally:
        vocabulary.close()


def sha256_check(resolved: models.ResolvedModel, options: Options) -> Check:
    policy = options.policy
    where = policy.model_path_allowed(resolved.path)
    if not where.allowed:
        return Check("model", "sha256", "fail", where.reason, "[models] paths of the policy")
    digest = models.model_sha256(resolved.path)
    data: dict[str, object] = {"sha256": digest, "registry": resolved.sha256}
    if resolved.sha256 is not None and digest != resolved.sha256:
        return Check(
            "model", "sha256", "fail",
            f"{resolved.path} has sha256 {digest}, the registry pins {resolved.sha256}: the "
            "file is damaged or another model",
            f"codeagent-lsp model pull {resolved.name} (or model add for your own file)", data,
        )  # fmt: skip
    decision = policy.model_allowed(digest)
    if not decision.allowed:
        return Check(
            "model", "sha256", "fail", decision.reason,
            f"add {digest} to [models] sha256 of the policy, or use a model it lists", data,
        )  # fmt: skip
    if resolved.sha256 is None:
        return Check(
            "model", "sha256", "warn",
            f"{digest}: no registry entry pins this file, so a changed file would go unnoticed",
            f"codeagent-lsp model add {resolved.path}", data,
        )  # fmt: skip
    pinned = " and the policy" if policy.model_sha256 else ""
    return Check("model", "sha256", "ok", f"{digest} matches the registry{pinned}", data=data)


def template_check(
    resolved: models.ResolvedModel, vocabulary: VocabularyOnly, setting: str
) -> Check:
    def has_token(text: str) -> bool:
        return vocabulary.token_id(text) is not None

    try:
        template = detect_template(setting, has_token, resolved.family)
    except TemplateError as exc:
        return Check("model", "template", "fail", str(exc), "set codeagent.completion.template")
    missing = [t for t in template.control_tokens() if not has_token(t)]
    if missing:
        return Check(
            "model", "template", "fail",
            f"the model's vocabulary lacks the {template.family} tokens {missing}",
            "set codeagent.completion.template to the model's family",
        )  # fmt: skip
    return Check(
        "model", "template", "ok",
        f"{template.family}: its fill-in-the-middle tokens are in the vocabulary",
        data={"family": template.family},
    )  # fmt: skip


def memory_check(
    resolved: models.ResolvedModel,
    vocabulary: VocabularyOnly,
    settings: EngineSettings,
    found: list[Device] | None,
) -> Check:
    """Weights (the file's size) plus the KV cache (f16 keys and values for every layer at
    contextSize) against the memory of the device that will hold them."""
    weights = resolved.path.stat().st_size
    kv = _kv_bytes(vocabulary, settings.contextSize)
    need = weights + (kv or 0)
    where, free = _target_memory(settings, found)
    data = {"weightsBytes": weights, "kvBytes": kv, "device": where, "freeBytes": free}
    figures = f"{weights / MIB:.0f} MiB of weights + {(kv or 0) / MIB:.0f} MiB of KV cache"
    figures += f" at contextSize {settings.contextSize}"
    cap = settings.memoryLimitMB * MIB
    if cap and kv is not None and kv > cap:
        return Check(
            "model", "memory", "fail",
            f"{figures}: the KV cache alone is over codeagent.engine.memoryLimitMB",
            "raise memoryLimitMB or lower codeagent.engine.contextSize", data,
        )  # fmt: skip
    if free is None:
        return Check("model", "memory", "warn", f"{figures}; free memory on {where} unknown",
                     data=data)  # fmt: skip
    if need > free:
        return Check(
            "model", "memory", "fail",
            f"{figures} do not fit the {free / MIB:.0f} MiB free on {where}",
            "lower codeagent.engine.contextSize or slots, or use a smaller model", data,
        )  # fmt: skip
    status: Status = "warn" if need > 0.9 * free else "ok"
    return Check(
        "model", "memory", status, f"{figures} fit the {free / MIB:.0f} MiB free on {where}",
        "lower codeagent.engine.contextSize" if status == "warn" else "", data,
    )  # fmt: skip


def _kv_bytes(vocabulary: VocabularyOnly, context: int) -> int | None:
    def number(key: str) -> int | None:
        buf = ctypes.create_string_buffer(64)
        n = C.llama_model_meta_val_str(vocabulary.model, key.encode(), buf, len(buf))
        return int(buf.value) if n >= 0 and buf.value.isdigit() else None

    buf = ctypes.create_string_buffer(64)
    C.llama_model_meta_val_str(vocabulary.model, b"general.architecture", buf, len(buf))
    arch = buf.value.decode(errors="replace")
    layers, width = number(f"{arch}.block_count"), number(f"{arch}.embedding_length")
    heads = number(f"{arch}.attention.head_count")
    kv_heads = number(f"{arch}.attention.head_count_kv") or heads
    if not (layers and width and heads and kv_heads):
        return None
    head_dim = number(f"{arch}.attention.key_length") or width // heads
    return 2 * layers * context * kv_heads * head_dim * 2  # keys and values, 2 bytes each


def _target_memory(settings: EngineSettings, found: list[Device] | None) -> tuple[str, int | None]:
    """The device the weights go to and its free bytes: the first GPU when the build offloads
    and nGpuLayers is not 0, else the machine's available memory."""
    gpus = [d for d in found or [] if d.kind == "gpu"]
    if gpus and C.llama_supports_gpu_offload() and settings.nGpuLayers != 0:
        return f"{gpus[0].name} ({gpus[0].description})", gpus[0].free
    return "this machine (RAM)", _available_memory()


def _available_memory() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None
