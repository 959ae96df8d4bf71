# Sourced by the scripts: where the Python environment with the pinned torch lives, and
# how the build finds it. Safe to source more than once.
FABRIC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Outside the checkout so that fresh clones (CI) reuse it instead of installing torch again.
export FABRIC_VENV=${FABRIC_VENV:-$HOME/.cache/fabric/venv}
export FABRIC_PYTHON=${FABRIC_PYTHON:-$FABRIC_VENV/bin/python}
# ccache: relative paths so that any clone of the repo hits the same cache entries, and
# the sloppiness that lets it cache precompiled-header builds.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$FABRIC_ROOT}
export CCACHE_SLOPPINESS=${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-10G}
