#!/usr/bin/env bash
# Installs everything protattn needs on a fresh Debian machine (run as root or with sudo):
# Debian packages with apt-get, Python packages with pip, then the real structures used by
# the tests and benchmarks (scripts/fetch-data.sh). Safe to run again: it skips what is there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"

debs=(build-essential cmake ninja-build ccache pkg-config zlib1g-dev
      gemmi-dev libcli11-dev nlohmann-json3-dev libfmt-dev libspdlog-dev
      libgtest-dev libgmock-dev libbenchmark-dev
      libcpp-httplib-dev libssl-dev libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
      python3-pip curl)
missing=()
for p in "${debs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

py=${PYTHON:-python3}
pyreq=(nvidia-cutlass==4.2.0.0 numpy pytest)
if ! $py -c 'import cutlass_library, numpy, pytest' 2>/dev/null; then
  echo "setup: installing Python packages: ${pyreq[*]}"
  $py -m pip install -q --disable-pip-version-check "${pyreq[@]}" 2>/dev/null \
    || $py -m pip install -q --disable-pip-version-check --break-system-packages "${pyreq[@]}"
fi

bash "$here/setup-server.sh"
bash "$here/fetch-data.sh"
echo "setup: done"
