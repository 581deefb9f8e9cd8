#!/usr/bin/env bash
# nnport's set-up and run script: `bash dev.sh demo` (the main job), `bash dev.sh test`, `bash dev.sh lint`.
# Creates .venv, installs nnport non-editable with every runtime installable here,
# pnnx without its torch dependency, and Mesa's lavapipe Vulkan driver when apt is usable.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${NNPORT_VENV:-.venv}"
PY="${PYTHON:-python3}"

setup() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! ldconfig -p | grep -q libvulkan.so.1; then
    echo "== installing Vulkan loader + lavapipe (mesa-vulkan-drivers)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libvulkan1 mesa-vulkan-drivers >/dev/null) \
      || echo "   (could not install lavapipe: ncnn Vulkan devices will be listed as unavailable)"
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip
  echo "== installing nnport[all,dev] (non-editable) and pnnx (--no-deps)"
  "$VENV/bin/python" -m pip install -q ".[all,dev]"
  "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps .
  "$VENV/bin/python" -m pip install -q --no-deps pnnx
}

# onnx2tf (ONNX -> .tflite for the litert plugin) pins TensorFlow 2.19, numpy 1.26 and onnx 1.19: it gets an
# environment of its own (~2.6 GB, ~3 min), outside the repo, where the plugin looks for it (or $NNPORT_ONNX2TF).
# Not part of `test`/`demo`: without it the ONNX-on-LiteRT tests skip and say so.
setup_litert() {
  local env="${NNPORT_ONNX2TF:-${NNPORT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nnport}/onnx2tf}"
  if [ ! -x "$env/bin/onnx2tf" ]; then
    echo "== building the onnx2tf environment in $env (TensorFlow 2.19, ~2.6 GB)"
    "$PY" -m venv "$env"
    "$env/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$env/bin/python" -m pip install -q --disable-pip-version-check "onnx2tf==1.29.24"
  fi
  echo "== onnx2tf: $env/bin/onnx2tf ($(du -sh "$env" | cut -f1)); nnport finds it there (or set NNPORT_ONNX2TF=$env)"
}

# ruff (lint + format check) and mypy (strict on core/), configured in pyproject.toml; .ci/run runs it before the tests.
lint() {
  echo "== ruff check, ruff format --check"
  "$VENV/bin/ruff" check .
  "$VENV/bin/ruff" format --check .
  # mypy knows no package-dir mapping: it checks the package laid out as installed (nnport = core/, with
  # nnport.plugins = plugins/ and nnport.conformance = conformance/), built from symlinks to the sources.
  echo "== mypy"
  local tree
  tree="$(mktemp -d)"
  mkdir "$tree/nnport"
  for f in core/*.py; do ln -s "$PWD/$f" "$tree/nnport/"; done
  ln -s "$PWD/plugins" "$tree/nnport/plugins"
  ln -s "$PWD/conformance" "$tree/nnport/conformance"
  set +e
  MYPYPATH="$tree" "$VENV/bin/mypy" -p nnport
  local rc=$?
  set -e
  rm -rf "$tree"
  return "$rc"
}

case "${1:-}" in
  demo)
    setup
    "$VENV/bin/nnport" demo
    ;;
  test)
    setup
    shift
    set +e
    "$VENV/bin/python" -m pytest "$@"
    rc=$?
    set -e
    if [ "$rc" = 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi
    exit "$rc"
    ;;
  lint)
    if [ "${2:-}" != --no-setup ]; then setup; fi
    lint
    ;;
  setup)
    setup
    if [ "${2:-}" = litert ]; then setup_litert; fi
    ;;
  *)
    echo "usage: bash dev.sh demo | test [pytest args] | lint [--no-setup] | setup [litert]" >&2
    exit 2
    ;;
esac
