#!/usr/bin/env bash
# Installs the peer libraries metalearn cross-checks and benchmarks against into the
# *currently active* Python environment (the first `python` on PATH, or $PYTHON):
#
#   higher==0.2.1  torchopt==0.7.3  avalanche-lib==0.6.0 (+ quadprog)  learn2learn==0.2.0
#
# The installed torch/torchvision are never changed: every pip call runs with a
# constraints file that pins them to the versions found in the environment (plus the
# repo's constraints.txt for everything else, when it exists).
#
# learn2learn 0.2.0 ships only an sdist whose Cython-generated C files (Cython 0.29.2x)
# do not compile on Python 3.11 (`longintrepr.h: No such file`). Its setup.py only runs
# Cython for `build_ext`/`develop`, so deleting the .c files alone is not enough: this
# script regenerates them with Cython 3 (`cython -3`), then builds the unpacked sdist
# with --no-build-isolation. Cython goes to a throw-away folder, not into the env.
#
# learn2learn is installed with --no-deps plus the runtime deps it needs to import
# (gym, scipy, requests, tqdm). Its other declared deps are left out on purpose:
#   gsutil - only a CLI for downloading QuickDraw; pulls ~30 packages (boto, google-auth,
#            oauth2client, aiohttp, cryptography, ...).
#   qpth   - optional (MetaOptNet's QP layer, imported lazily); needs numpy<2 and cvxpy.
#
# Idempotent: a peer already importable at the pinned version is skipped.
# Usage: scripts/install_peers.sh          (PYTHON=/path/to/python to pick another one)
set -euo pipefail

PY="${PYTHON:-python}"
HIGHER_VERSION=0.2.1
TORCHOPT_VERSION=0.7.3
AVALANCHE_VERSION=0.6.0
L2L_VERSION=0.2.0
CYTHON_SPEC='Cython>=3,<4'
QUADPROG_SPEC='quadprog==0.1.14'
# learn2learn's runtime deps that `import learn2learn` needs (numpy/torch/torchvision
# are already there as metalearn's own deps).
L2L_RUNTIME_DEPS=('gym>=0.14.0' 'scipy' 'requests' 'tqdm')

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
START=$SECONDS

log() { printf '[install_peers] %s\n' "$*"; }
die() { printf '[install_peers] ERROR: %s\n' "$*" >&2; exit 1; }
pip_() { "$PY" -m pip "$@"; }

command -v "$PY" >/dev/null 2>&1 || die "no '$PY' on PATH (activate the env or set PYTHON)"
"$PY" -m pip --version >/dev/null 2>&1 || die "'$PY -m pip' does not work"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/install_peers.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# dist_version DIST -> the installed version, or nothing.
dist_version() {
  "$PY" - "$1" <<'EOF' 2>/dev/null || true
import sys, importlib.metadata as md
try:
    print(md.version(sys.argv[1]))
except md.PackageNotFoundError:
    pass
EOF
}

# have DIST VERSION CODE -> success when DIST is installed at VERSION and CODE runs.
have() {
  "$PY" - "$@" >/dev/null 2>&1 <<'EOF'
import sys, importlib.metadata as md
dist, want, code = sys.argv[1:4]
if md.version(dist) != want:
    sys.exit(1)
exec(code)
EOF
}

log "python: $(command -v "$PY") ($("$PY" -c 'import sys; print(sys.version.split()[0], sys.prefix)'))"
if [ "$("$PY" -c 'import sys; print(sys.prefix != sys.base_prefix)')" != True ]; then
  log "note: this python is not inside a virtualenv; installing into it anyway"
fi

# --- constraints: keep torch/torchvision exactly as they are -----------------------------
TORCH_BEFORE="$(dist_version torch)"
TV_BEFORE="$(dist_version torchvision)"
CONSTRAINTS="$WORK/constraints.txt"
if [ -f "$REPO_ROOT/constraints.txt" ]; then
  log "constraints: $REPO_ROOT/constraints.txt (torch/torchvision pinned to what is installed)"
  grep -viE '^[[:space:]]*(torch|torchvision)[[:space:]]*([=<>!~;[]|$)' \
    "$REPO_ROOT/constraints.txt" > "$CONSTRAINTS" || true
else
  log "constraints: no constraints.txt at the repo root; using a temporary one"
  : > "$CONSTRAINTS"
fi
echo "torch==${TORCH_BEFORE:-2.14.1}" >> "$CONSTRAINTS"
echo "torchvision==${TV_BEFORE:-0.29.1}" >> "$CONSTRAINTS"
log "torch ${TORCH_BEFORE:-<not installed>}, torchvision ${TV_BEFORE:-<not installed>}"

pip_ list --format=freeze 2>/dev/null | sort > "$WORK/before.txt"

pip_install() { pip_ install --disable-pip-version-check -c "$CONSTRAINTS" "$@"; }

# --- higher --------------------------------------------------------------------------
if have higher "$HIGHER_VERSION" 'import higher'; then
  log "higher $HIGHER_VERSION: already installed, skipping"
else
  log "higher $HIGHER_VERSION: installing"
  pip_install "higher==$HIGHER_VERSION"
fi

# --- torchopt ------------------------------------------------------------------------
# 0.7.3 is the newest release; its compiled _C (built for an older torch) may not load
# with this torch, in which case torchopt falls back to its pure-PyTorch ops by itself.
if have torchopt "$TORCHOPT_VERSION" 'import torchopt'; then
  log "torchopt $TORCHOPT_VERSION: already installed, skipping"
else
  log "torchopt $TORCHOPT_VERSION: installing"
  pip_install "torchopt==$TORCHOPT_VERSION"
fi

# --- avalanche-lib -------------------------------------------------------------------
# avalanche-lib asks for qpsolvers[open_source_solvers], but current qpsolvers has no such
# extra, so no QP solver comes with it and its GEM plugin (solver="quadprog") would fail.
# quadprog is one small wheel.
if have avalanche-lib "$AVALANCHE_VERSION" 'import avalanche, quadprog'; then
  log "avalanche-lib $AVALANCHE_VERSION: already installed, skipping"
else
  log "avalanche-lib $AVALANCHE_VERSION: installing (with its dependencies, plus $QUADPROG_SPEC for GEM)"
  pip_install "avalanche-lib==$AVALANCHE_VERSION" "$QUADPROG_SPEC"
fi

# --- learn2learn ---------------------------------------------------------------------
L2L_CHECK='import learn2learn
from learn2learn.data import TaskDataset, MetaDataset
from learn2learn.data.transforms import NWays, KShots, LoadData, RemapLabels'
if have learn2learn "$L2L_VERSION" "$L2L_CHECK"; then
  log "learn2learn $L2L_VERSION: already installed, skipping"
else
  log "learn2learn $L2L_VERSION: runtime deps ${L2L_RUNTIME_DEPS[*]} (not gsutil, qpth)"
  pip_install "${L2L_RUNTIME_DEPS[@]}"

  log "learn2learn $L2L_VERSION: downloading the sdist"
  pip_ download --disable-pip-version-check --quiet --no-deps --no-binary :all: \
    -d "$WORK/dl" "learn2learn==$L2L_VERSION"
  mkdir -p "$WORK/src"
  tar -xzf "$WORK/dl/learn2learn-$L2L_VERSION.tar.gz" -C "$WORK/src"
  SRC="$WORK/src/learn2learn-$L2L_VERSION"
  [ -f "$SRC/setup.py" ] || die "unexpected sdist layout in $WORK/src"
  # The sdist also carries stale .eggs/ (old Cython eggs) and a build/ from its author.
  rm -rf "$SRC/.eggs" "$SRC/build"

  # Cython 3 goes to a throw-away folder; build tools the env lacks go there too.
  TOOLS=("$CYTHON_SPEC")
  if ! "$PY" -c 'import setuptools.command.bdist_wheel' >/dev/null 2>&1 \
     && ! "$PY" -c 'import setuptools, wheel' >/dev/null 2>&1; then
    TOOLS+=('setuptools>=70.1')
  fi
  log "learn2learn $L2L_VERSION: fetching ${TOOLS[*]} into a temporary folder"
  pip_ install --disable-pip-version-check --quiet --target "$WORK/buildtools" "${TOOLS[@]}"
  BUILD_PYTHONPATH="$WORK/buildtools${PYTHONPATH:+:$PYTHONPATH}"

  mapfile -t PYX < <(cd "$SRC" && find learn2learn -name '*.pyx' | sort)
  [ "${#PYX[@]}" -gt 0 ] || die "no .pyx files in the learn2learn sdist"
  log "learn2learn $L2L_VERSION: regenerating C for ${PYX[*]} with $(PYTHONPATH="$BUILD_PYTHONPATH" "$PY" -m cython --version 2>&1)"
  for f in "${PYX[@]}"; do rm -f "$SRC/${f%.pyx}.c"; done
  (cd "$SRC" && PYTHONPATH="$BUILD_PYTHONPATH" "$PY" -m cython -3 \
      --directive embedsignature=True "${PYX[@]}")
  for f in "${PYX[@]}"; do
    head -n1 "$SRC/${f%.pyx}.c" | grep -q 'Generated by Cython 3' \
      || die "cython did not regenerate ${f%.pyx}.c"
  done

  log "learn2learn $L2L_VERSION: building and installing (--no-build-isolation --no-deps)"
  PYTHONPATH="$BUILD_PYTHONPATH" pip_install --no-build-isolation --no-deps "$SRC"
  have learn2learn "$L2L_VERSION" "$L2L_CHECK" \
    || die "learn2learn $L2L_VERSION installed but does not import"
fi

# --- report --------------------------------------------------------------------------
TORCH_AFTER="$(dist_version torch)"
TV_AFTER="$(dist_version torchvision)"
if [ -n "$TORCH_BEFORE" ] && [ "$TORCH_AFTER" != "$TORCH_BEFORE" ]; then
  die "torch changed: $TORCH_BEFORE -> $TORCH_AFTER"
fi
if [ -n "$TV_BEFORE" ] && [ "$TV_AFTER" != "$TV_BEFORE" ]; then
  die "torchvision changed: $TV_BEFORE -> $TV_AFTER"
fi

pip_ list --format=freeze 2>/dev/null | sort > "$WORK/after.txt"
ADDED="$(comm -13 "$WORK/before.txt" "$WORK/after.txt" | tr '\n' ' ')"
REMOVED="$(comm -23 "$WORK/before.txt" "$WORK/after.txt" | tr '\n' ' ')"
log "installed or changed: ${ADDED:-nothing}"
[ -z "$REMOVED" ] || log "replaced or removed: $REMOVED"
"$PY" - <<'EOF' 2>/dev/null | sed 's/^/[install_peers] /'
import importlib.metadata as md
for d in ("torch", "torchvision", "higher", "torchopt", "avalanche-lib", "quadprog", "learn2learn"):
    print(f"{d}=={md.version(d)}")
EOF
log "done in $((SECONDS - START))s (torch ${TORCH_AFTER:-<none>}, torchvision ${TV_AFTER:-<none>})"
