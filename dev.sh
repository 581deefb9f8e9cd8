#!/usr/bin/env bash
# nnport's set-up and run script: `bash dev.sh demo` (the main job) or `bash dev.sh test`.
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
  setup)
    setup
    ;;
  *)
    echo "usage: bash dev.sh demo|test|setup [pytest args]" >&2
    exit 2
    ;;
esac
