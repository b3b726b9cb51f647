#!/usr/bin/env bash
# Builds edgeopt-bench and the runtime library for armv7 into build/armv7/ (--help for options).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
eo_build armv7 "$@"
