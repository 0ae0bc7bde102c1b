#!/usr/bin/env bash
# Build (once, cached) an emulated arm64 CPython 3.11 with the device-side wheels, without binfmt or root chroot:
#   qemu-user-static + Debian bookworm arm64 .debs unpacked with dpkg -x + manylinux aarch64 wheels unzipped.
# Usage: tools/aarch64/setup_env.sh [CACHE_DIR]     (default: <repo>/.cache/aarch64, git-ignored)
# Needs root for apt-get (qemu-user-static, the arm64 architecture); network only to Debian and PyPI.
# Prints the cache dir on success. Re-running is a no-op once "$CACHE/.ready" exists.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="$(realpath -m "${1:-$REPO/.cache/aarch64}")"
ORT_SPEC="${EDGECLIP_AARCH64_ORT:-onnxruntime<1.28}"   # 1.28+ segfaults at import under qemu 7.2
WITH_TOKENIZERS="${EDGECLIP_AARCH64_TOKENIZERS:-1}"

if [[ -f "$CACHE/.ready" ]]; then echo "$CACHE"; exit 0; fi
mkdir -p "$CACHE"/{debs,root,wheels,site}

if ! command -v qemu-aarch64-static >/dev/null; then
  apt-get install -y -q qemu-user-static >&2 || { apt-get update -q >&2 && apt-get install -y -q qemu-user-static >&2; }
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
fi
if ! apt-cache show libc6:arm64 >/dev/null 2>&1; then
  apt-get update -q >&2
fi

# CPython 3.11 (bookworm's) and the shared libraries its interpreter and extension modules load.
DEBS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libstdc++6 libgcc-s1 zlib1g
      libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5 libsqlite3-0 libuuid1 libcrypt1 libdb5.3 libnsl2 libtirpc3
      libncursesw6 libtinfo6 libreadline8 libzstd1 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0
      libcom-err2 libkeyutils1)
( cd "$CACHE/debs" && apt-get download -q $(printf '%s:arm64 ' "${DEBS[@]}") >&2 )
for deb in "$CACHE"/debs/*.deb; do dpkg -x "$deb" "$CACHE/root"; done

PLAT=(--platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64)
PIP=(python3 -m pip download -q --only-binary=:all: "${PLAT[@]}" --python-version 3.11 --implementation cp -d "$CACHE/wheels")
"${PIP[@]}" numpy pillow "$ORT_SPEC" ftfy tqdm >&2
if [[ "$WITH_TOKENIZERS" == 1 ]]; then
  "${PIP[@]}" --no-deps tokenizers >&2   # edgeclip only calls Tokenizer.from_file; huggingface_hub is not needed
fi
for whl in "$CACHE"/wheels/*.whl; do python3 -m zipfile -e "$whl" "$CACHE/site"; done

# smoke test: the emulated interpreter imports numpy and onnxruntime
PYTHONHOME="$CACHE/root/usr" PYTHONPATH="$CACHE/site" \
  qemu-aarch64-static -L "$CACHE/root" "$CACHE/root/usr/bin/python3.11" -c \
  "import platform, numpy, onnxruntime; print(platform.machine(), numpy.__version__, onnxruntime.__version__)" >&2
touch "$CACHE/.ready"
echo "$CACHE"
