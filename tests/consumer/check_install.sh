#!/usr/bin/env bash
# Installs the build into a fresh prefix, then uses it the two ways a newcomer would: the consumer
# project through find_package(kasmina CONFIG REQUIRED) + kasmina::kasmina, and a plain compile with
# `pkg-config --cflags --libs kasmina`; runs both programs, and checks the Python package was installed.
# Usage: check_install.sh BUILD_DIR   (the prefix lives in BUILD_DIR/install-check, so ccache hits on reruns)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build_dir=$(cd "$1" && pwd)
work=$build_dir/install-check
prefix=$work/prefix
rm -rf "$work"
mkdir -p "$work"

cmake --install "$build_dir" --prefix "$prefix" >"$work/install.log"
test -f "$prefix/include/kasmina/kasmina.h"
ls "$prefix"/lib*/cmake/kasmina/kasminaConfig.cmake "$prefix"/lib*/cmake/kasmina/kasminaConfigVersion.cmake >/dev/null

echo "== find_package(kasmina) =="
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$here" -B "$work/consumer-build" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" "${launcher[@]}" >"$work/configure.log" \
  || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/consumer-build" >"$work/build.log" || { cat "$work/build.log"; exit 1; }
"$work/consumer-build/kasmina-consumer"

echo "== pkg-config kasmina =="
if ! command -v pkg-config >/dev/null; then
  echo "pkg-config is not installed (tools/setup installs it): the pkg-config check is skipped"
else
  export PKG_CONFIG_PATH=$(echo "$prefix"/lib*/pkgconfig)
  cflags=$(pkg-config --cflags kasmina)
  libs=$(pkg-config --libs kasmina)
  echo "cflags: $cflags"
  echo "libs: $libs"
  [[ "$(realpath "$(pkg-config --variable=includedir kasmina)")" == "$prefix/include" ]] \
    || { echo "pkg-config's includedir does not point into $prefix"; exit 1; }
  # shellcheck disable=SC2086  # the flags are words
  ${CCACHE:-$(command -v ccache || true)} c++ -std=c++20 $cflags "$here/main.cpp" -o "$work/consumer-pkg-config" $libs
  "$work/consumer-pkg-config"
fi

if [ "${2:-}" = "--python" ]; then
  echo "== installed Python package =="
  site=$(dirname "$(echo "$prefix"/lib*/python3*/*-packages/kasmina/__init__.py)")
  (cd "$work" && PYTHONPATH=$(dirname "$site") "${PYTHON:-python3}" -c \
    "import kasmina; assert kasmina.__file__.startswith('$prefix'), kasmina.__file__; print('import kasmina from', kasmina.__file__)")
fi
