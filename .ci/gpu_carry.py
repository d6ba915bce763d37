"""Fill .gpu/ (git-ignored) with what .ci/gpu-check needs on the GPU machine, which has no network.

    python .ci/gpu_carry.py          # run here, where pip reaches the package index

- llama_cpp_python-0.3.36.tar.gz: the sdist without what no build reads (its git pack, the test
  vocabularies of vendor/llama.cpp/models, docs, benches, media, the web UI): 77 MB -> 9 MB.
- whl/: cp312 (or pure) wheels of this project's runtime dependencies and the test tools
  gpu-check uses, minus what the machine's image already holds (IMAGE below) unless
  pyproject.toml pins it. Run it again after a dependency changes; gpu-check's first lines name
  any pinned dependency that is still missing there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CARRY = REPO / ".gpu"
SDIST = "llama-cpp-python==0.3.36"
SDIST_DROP = (
    ".git",
    ".github",
    "docs",
    "docker",
    "examples",
    "tests",
    "vendor/llama.cpp/.git",
    "vendor/llama.cpp/.github",
    "vendor/llama.cpp/models",
    "vendor/llama.cpp/docs",
    "vendor/llama.cpp/benches",
    "vendor/llama.cpp/media",
    "vendor/llama.cpp/tools/ui",
)
# The test tools gpu-check uses, and llama_cpp.server's (the replica tests start one).
TEST_TOOLS = ("pytest", "pytest-asyncio", "pytest-lsp", "gguf", "hypothesis")
TEST_TOOLS += ("fastapi", "uvicorn", "sse-starlette", "starlette-context", "pydantic-settings")
# llama-cpp-python's own dependency that the image lacks (it is installed with --no-deps).
EXTRA = ("diskcache",)
# The image's own: numpy (large; any 2.x serves) and the sdist, built there.
NOT_CARRIED = {"numpy", "llama-cpp-python"}
# Image versions unknown, and carried dependencies need recent ones (cattrs: attrs>=25.4,
# typing-extensions>=4.14; sqlite-utils: click>=8.3.1; pytest 9: pluggy>=1.5).
ALSO = {"attrs", "typing-extensions", "click", "pluggy"}
# Python packages of the device's 'cuda' image (the device tool's KINDS.md, read 2026-11-17).
_IMAGE_NAMES = """
    absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
    botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
    coverage cycler cython diffrax einops equinox etils execnet filelock flatbuffers flax
    fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
    humanize hypothesis idna imageio iniconfig jax jaxlib jaxtyping jinja2 joblib kiwisolver
    lazy-loader lightning llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl
    meson ml-dtypes mpi4py mpmath msgpack multidict mypy-extensions nanobind narwhals networkx
    ninja numba numpy onnx onnxruntime opencv-python-headless optax orbax-checkpoint packaging
    pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
    protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pytest
    pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pyyaml
    regex requests rich safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
    sentencepiece setuptools shellingham simplejson six sortedcontainers statsmodels sympy
    tabulate threadpoolctl tifffile tiktoken timm tokenizers toolz torch tqdm transformers
    treescope triton typer typing-extensions typing-inspect urllib3 uvloop wheel wrapt xarray
    xxhash yarl zipp
"""
IMAGE = set(_IMAGE_NAMES.split())
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64")
PLATFORMS += ("manylinux2014_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64")


def _name(requirement: str) -> str:
    """The normalized distribution name of a requirement or a wheel file name."""
    return re.split(r"[=<>!~\[; ]|-\d", requirement, maxsplit=1)[0].lower().replace("_", "-")


def requirements() -> tuple[list[str], set[str]]:
    """What to download (pinned as in pyproject.toml) and the names pyproject pins itself."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dev = project["optional-dependencies"]["dev"]
    wanted = [r for r in project["dependencies"] if _name(r) not in NOT_CARRIED]
    wanted += [r for r in dev if _name(r) in TEST_TOOLS]
    wanted += EXTRA
    return wanted, {_name(r) for r in wanted}


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def wheels(folder: Path) -> None:
    wanted, pinned = requirements()
    with tempfile.TemporaryDirectory() as tmp:
        platforms = [a for p in PLATFORMS for a in ("--platform", p)]
        pip("download", "-q", "--only-binary=:all:", "--python-version", "3.12",
            "--implementation", "cp", *platforms, "-d", tmp, *wanted)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for wheel in sorted(Path(tmp).glob("*.whl")):
            name = _name(wheel.name)
            if name not in NOT_CARRIED and (name in pinned | ALSO or name not in IMAGE):
                shutil.copy(wheel, folder)


def sdist(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pip("download", "-q", "--no-deps", "--no-binary=:all:", "-d", tmp, SDIST)
        (archive,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        root = next(p for p in Path(tmp).iterdir() if p.is_dir())
        for drop in SDIST_DROP:
            target = root / drop
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()  # vendor/llama.cpp/.git is a file (a submodule's gitdir link)
        with tarfile.open(out, "w:gz") as tar:
            tar.add(root, arcname=root.name)


def main() -> int:
    CARRY.mkdir(exist_ok=True)
    exclude = Path(
        subprocess.run(
            ["git", "rev-parse", "--git-common-dir"], cwd=REPO, text=True, capture_output=True
        ).stdout.strip()
    )
    exclude = (exclude if exclude.is_absolute() else REPO / exclude) / "info" / "exclude"
    if "/.gpu/" not in exclude.read_text():
        with exclude.open("a") as f:
            f.write("/.gpu/\n")
    out = CARRY / f"{SDIST.replace('-', '_').replace('==', '-')}.tar.gz"
    if not out.exists():
        sdist(out)
    wheels(CARRY / "whl")
    size = sum(p.stat().st_size for p in CARRY.rglob("*") if p.is_file())
    print(f"{CARRY}: {len(list(CARRY.glob('whl/*.whl')))} wheels, {size / 2**20:.1f} MiB in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
