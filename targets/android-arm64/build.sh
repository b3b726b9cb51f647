#!/usr/bin/env bash
# Builds edgeopt-bench and the runtime library for android-arm64 into build/android-arm64/ (--help for options).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
eo_build android-arm64 "$@"
