#!/usr/bin/env bash
# One-command environment setup for mmseg_escnet (CPU machine, Python 3.11, x86_64).
#
#   bash tools/setup_env.sh
#
# Installs pinned, known-good versions into the *active* Python environment:
#   torch 2.14.1 / torchvision 0.29.1, mmengine 0.10.7, mmcv 2.1.0 (full, with compiled
#   ops, built from source against the installed torch), mmsegmentation 1.2.2,
#   mmpretrain 1.2.0, open_clip_torch, segment-anything, then this package (editable).
#   As root on Debian/Ubuntu it also installs the fonts the overlay legends draw class names in
#   any script with (fonts-dejavu-core, fonts-noto-core, fonts-noto-cjk; SKIP_FONTS=1 skips them).
#
# The mmcv wheel is built once (~7 min on 2 cores) and cached outside the repository in
#   ${MMSEG_ESCNET_CACHE:-~/.cache/mmseg_escnet}/wheels/<python>-torch<version>/
# so a second run takes seconds. Re-running is harmless: every step checks first.
#
# Environment variables:
#   PYTHON               interpreter to install into (default: python)
#   MMSEG_ESCNET_CACHE   cache folder for the built mmcv wheel
#   SKIP_TORCH=1         keep whatever torch is installed (GPU users: install your own
#                        torch/CUDA build first, then run this with SKIP_TORCH=1)
#   SKIP_FONTS=1         do not install the legend fonts with apt-get
set -euo pipefail

PY=${PYTHON:-python}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MMSEG_ESCNET_CACHE:-$HOME/.cache/mmseg_escnet}
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0

log() { printf '[setup_env] %s\n' "$*"; }
pip_install() { "$PY" -m pip install --disable-pip-version-check "$@"; }
installed_version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true; }
# Install a requirements file unless every pin in it is already satisfied (keeps re-runs fast).
install_requirements() {
  if "$PY" "$ROOT/tools/misc/requirements_satisfied.py" "$1" 2>/dev/null; then
    log "$(basename "$1"): already satisfied"
  else
    pip_install -q -c "$ROOT/requirements/constraints.txt" -r "$1"
  fi
}

# 1. torch -------------------------------------------------------------------------------
if [ "${SKIP_TORCH:-0}" = 1 ]; then
  log "SKIP_TORCH=1: keeping torch $(installed_version torch)"
elif [ "$(installed_version torch)" != "$TORCH_VERSION" ] || \
     [ "$(installed_version torchvision)" != "$TORCHVISION_VERSION" ]; then
  log "installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
  pip_install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
else
  log "torch $TORCH_VERSION already installed"
fi

# 2. build tools and pinned pure-Python dependencies ---------------------------------------
# setuptools<81: mmcv's setup.py imports pkg_resources, and mmengine's is_installed needs it.
install_requirements "$ROOT/requirements/build.txt"
install_requirements "$ROOT/requirements/runtime.txt"

# 3. mmcv with compiled ops ------------------------------------------------------------------
mmcv_ok() { "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" >/dev/null 2>&1; }
if mmcv_ok; then
  log "mmcv $MMCV_VERSION (with ops) already installed"
else
  TAG=$("$PY" -c "import sys, torch; print(f'py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__}')" | tr '+' '_')
  WHEELDIR="$CACHE/wheels/$TAG"
  WHEEL=$(ls "$WHEELDIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$WHEEL" ]; then
    log "building mmcv $MMCV_VERSION with ops against torch ($TAG); this takes ~7 minutes once"
    BUILD=$(mktemp -d)
    trap 'rm -rf "$BUILD"' EXIT
    "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
      -d "$BUILD" "mmcv==$MMCV_VERSION"
    tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    # torch >= 2.10 headers require C++20.
    sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
    (cd "$SRC" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} FORCE_CUDA=${FORCE_CUDA:-0} \
      "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$BUILD/dist" .)
    mkdir -p "$WHEELDIR"
    cp "$BUILD"/dist/mmcv-*.whl "$WHEELDIR/"
    WHEEL=$(ls "$WHEELDIR"/mmcv-"$MMCV_VERSION"-*.whl | head -n 1)
  else
    log "using cached mmcv wheel $WHEEL"
  fi
  pip_install -q --no-deps --force-reinstall "$WHEEL"
  # mmcv's own runtime dependencies (opencv is pinned in runtime.txt).
  pip_install -q addict packaging "pyyaml" yapf
  mmcv_ok || { echo "mmcv $MMCV_VERSION with ops failed to import" >&2; exit 1; }
fi

# 3b. fonts for legends in any script (mmseg_escnet/visualization/legend_text.py) --------------
FONTS="fonts-dejavu-core fonts-noto-core fonts-noto-cjk"
if [ "${SKIP_FONTS:-0}" = 1 ]; then
  log "SKIP_FONTS=1: legend fonts not installed"
elif dpkg -s $FONTS >/dev/null 2>&1; then
  log "legend fonts already installed"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  log "installing legend fonts: $FONTS"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends $FONTS >/dev/null
else
  log "legend fonts not installed (needs root and apt-get): class names outside Latin, Greek" \
      "and Cyrillic are drawn as squares; install $FONTS or set MMSEG_ESCNET_FONT"
fi

# 4. OpenMMLab libraries, CLIP, SAM, and this package -----------------------------------------
install_requirements "$ROOT/requirements/openmmlab.txt"
install_requirements "$ROOT/requirements/datasets.txt"
install_requirements "$ROOT/requirements/tests.txt"
install_requirements "$ROOT/requirements/deployment.txt"
install_requirements "$ROOT/requirements/demo.txt"
if (cd / && "$PY" -c "import mmseg_escnet, os, sys; sys.exit(os.path.dirname(os.path.dirname(mmseg_escnet.__file__)) != sys.argv[1])" "$ROOT") 2>/dev/null; then
  log "mmseg_escnet already installed (editable) from $ROOT"
else
  pip_install -q --no-deps --no-build-isolation -e "$ROOT"
fi

"$PY" - <<'EOF'
import torch, mmcv, mmengine, mmseg, mmpretrain, open_clip, segment_anything  # noqa: F401
import mmseg.models  # noqa: F401  (needs mmcv's compiled ops)
import mmseg_escnet
print(f'[setup_env] ok: torch {torch.__version__}, mmcv {mmcv.__version__}, '
      f'mmengine {mmengine.__version__}, mmseg {mmseg.__version__}, '
      f'mmpretrain {mmpretrain.__version__}, open_clip {open_clip.__version__}, '
      f'mmseg_escnet {mmseg_escnet.__version__}')
EOF
