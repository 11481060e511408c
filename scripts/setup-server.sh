#!/usr/bin/env bash
# Installs what the server's black-box tests (tests/server) need: the Python clients
# (tritonclient http+grpc, requests, numpy, pytest) and NVIDIA's perf_analyzer. Safe to run again.
#
# perf_analyzer: the PyPI perf-analyzer wheels are built for glibc >= 2.38 (manylinux_2_38) and
# Debian 12 has 2.36, so pip falls back to a placeholder without the program. The tritonclient
# 2.39.0 wheel still carries a perf_analyzer binary built for older glibc: it is taken from that
# wheel (pinned by sha256) into $PERF_ANALYZER_DIR with a wrapper that finds its two shared
# libraries: libb64 (Debian libb64-0d) and libcudart.so.12 (PyPI nvidia-cuda-runtime-cu12; loaded
# at start, no GPU needed for the HTTP and gRPC protocols).
set -euo pipefail
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
py=${PYTHON:-python3}
pa_dir=${PERF_ANALYZER_DIR:-$HOME/.cache/protattn/perf_analyzer}
wheel=tritonclient-2.39.0-py3-none-manylinux1_x86_64.whl
wheel_sha256=9bbbf5731e62da943ab16929960f57189bfe59700c20a865fdb287abfb1baf33

pip_install() {
  $py -m pip install -q --disable-pip-version-check "$@" 2>/dev/null \
    || $py -m pip install -q --disable-pip-version-check --break-system-packages "$@"
}

if ! $py -c 'import tritonclient.http, tritonclient.grpc, requests, numpy, pytest' 2>/dev/null; then
  echo "setup-server: installing Python clients"
  pip_install 'tritonclient[http,grpc]' requests numpy pytest
fi

if ! dpkg-query -W -f='${Status}' libb64-0d 2>/dev/null | grep -q "ok installed"; then
  echo "setup-server: installing libb64-0d (for perf_analyzer)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends libb64-0d >/dev/null
fi
if ! $py -c 'import nvidia.cuda_runtime' 2>/dev/null; then
  echo "setup-server: installing nvidia-cuda-runtime-cu12 (libcudart.so.12 for perf_analyzer)"
  pip_install nvidia-cuda-runtime-cu12
fi

if [ ! -x "$pa_dir/perf_analyzer" ]; then
  echo "setup-server: perf_analyzer from $wheel"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  $py -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" tritonclient==2.39.0
  echo "$wheel_sha256  $tmp/$wheel" | sha256sum -c --quiet -
  mkdir -p "$pa_dir"
  $py - "$tmp/$wheel" "$pa_dir/perf_analyzer.bin" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    data = z.read("tritonclient-2.39.0.data/data/bin/perf_analyzer")
open(sys.argv[2], "wb").write(data)
PY
  chmod +x "$pa_dir/perf_analyzer.bin"
  cudart=$($py -c 'import nvidia.cuda_runtime as m, os; print(os.path.join(list(m.__path__)[0], "lib"))')
  cat > "$pa_dir/perf_analyzer" <<SH
#!/bin/sh
# perf_analyzer with the libcudart.so.12 of PyPI's nvidia-cuda-runtime-cu12 (scripts/setup-server.sh).
LD_LIBRARY_PATH="$cudart\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$pa_dir/perf_analyzer.bin" "\$@"
SH
  chmod +x "$pa_dir/perf_analyzer"
fi
"$pa_dir/perf_analyzer" --version >/dev/null 2>&1 || "$pa_dir/perf_analyzer" -h 2>&1 | grep -q "perf_analyzer" \
  || { echo "setup-server: perf_analyzer at $pa_dir does not start" >&2; exit 1; }
echo "setup-server: done (perf_analyzer: $pa_dir/perf_analyzer)"
