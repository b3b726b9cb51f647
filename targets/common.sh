# shellcheck shell=bash
# Shared logic of targets/<name>/build.sh and targets/<name>/deploy.sh (sourced, not run).
#
#   eo_build  <target> [options]   cross-build edgeopt-bench and the runtime library
#   eo_deploy <target> [options]   copy binary + model to a device, benchmark there, fetch the JSON
#
# <target> is a folder of targets/: aarch64, armv7, android-arm64 or x86_64. Each script's --help
# lists its options. The device tools are overridable for testing without a device:
# EDGEOPT_SSH, EDGEOPT_SCP and EDGEOPT_ADB hold the command (words split on spaces, so
# EDGEOPT_SSH="ssh -p 2222" works); --dry-run prints the commands and runs none.
# Exit codes: 2 for a usage error (bad option or value), 1 for a missing tool or file, otherwise
# the exit code of the command that failed.

EO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EO_PROG="targets/unknown"

eo_die() {
  # eo_die CODE MESSAGE...
  local code=$1
  shift
  printf '%s: error: %s\n' "$EO_PROG" "$*" >&2
  exit "$code"
}

eo_need_value() {
  # eo_need_value OPTION ARGC: the option takes a value.
  [ "$2" -ge 2 ] || eo_die 2 "$1 needs a value (see --help)"
}

eo_check_int() {
  # eo_check_int OPTION VALUE LO HI
  local opt=$1 v=$2 lo=$3 hi=$4
  if ! [[ $v =~ ^[0-9]+$ ]] || [ "${#v}" -gt 9 ] || [ "$v" -lt "$lo" ] || [ "$v" -gt "$hi" ]; then
    eo_die 2 "$opt must be an integer in [$lo, $hi], got '$v'"
  fi
}

eo_find_tool() {
  # eo_find_tool NAME: prints the path of NAME from the repository's .venv (as make and the tests
  # use), else from PATH.
  if [ -x "$EO_ROOT/.venv/bin/$1" ]; then
    printf '%s\n' "$EO_ROOT/.venv/bin/$1"
  elif command -v "$1" >/dev/null 2>&1; then
    command -v "$1"
  else
    return 1
  fi
}

eo_show() {
  # eo_show CMD...: prints the command, shell-quoted, as one line.
  # Words of safe characters stay bare, others are single-quoted (eval reads them back).
  local out="" w safe='^[A-Za-z0-9._/@:=+,%-]+$' q="'\\''"
  for w in "$@"; do
    if [[ $w =~ $safe ]]; then
      out+="$w "
    else
      out+="'${w//\'/$q}' "
    fi
  done
  printf '%s\n' "${out% }"
}

# ------------------------------------------------------------------------------------- build

eo_build_usage() {
  local target=$1 static=$2
  cat <<EOF
usage: targets/$target/build.sh [options] [-DVAR=VALUE ...]

Builds edgeopt-bench (the on-device benchmark) and the runtime library (libedgeopt_runtime.a and
libedgeopt_kernels.a) for $target with CMake into build/$target/ (or --build-dir).

options:
  -B, --build-dir DIR   build folder (default: build/$target in the repository)
  -j, --jobs N          parallel compile jobs (default: nproc)
  --build-type TYPE     Release (default), RelWithDebInfo, Debug or MinSizeRel
  --static              link edgeopt-bench statically$([ "$static" = ON ] && printf ' (default)')
  --no-static           link it dynamically$([ "$static" = OFF ] && printf ' (default)')
  --native              build with this machine's compiler, no toolchain file (on the device)
  -DVAR=VALUE           passed to CMake as is (e.g. -DEDGEOPT_QEMU_CPU=cortex-a72)
  -h, --help            this text
EOF
  case $target in
    aarch64) printf '\nneeds: cmake, g++-aarch64-linux-gnu, libflatbuffers-dev (apt).\n' ;;
    armv7) printf '\nneeds: cmake, g++-arm-linux-gnueabihf, libflatbuffers-dev (apt).\n' ;;
    android-arm64)
      printf '\nneeds: cmake, libflatbuffers-dev (apt) and the Android NDK: set ANDROID_NDK (or\n'
      printf 'ANDROID_NDK_HOME) to its folder. ABI arm64-v8a, platform android-24.\n'
      ;;
    x86_64) printf '\nneeds: cmake, g++, libflatbuffers-dev (apt); builds on an x86_64 machine.\n' ;;
  esac
}

eo_build() {
  local target=$1
  shift
  EO_PROG="targets/$target/build.sh"
  local static=ON
  [ "$target" = android-arm64 ] && static=OFF
  local build_dir="" jobs="" build_type=Release native=0
  local -a defs=()
  while [ $# -gt 0 ]; do
    case $1 in
      -h | --help)
        eo_build_usage "$target" "$static"
        exit 0
        ;;
      -B | --build-dir)
        eo_need_value "$1" $#
        build_dir=$2
        shift
        ;;
      -j | --jobs)
        eo_need_value "$1" $#
        jobs=$2
        shift
        ;;
      -j*) jobs=${1#-j} ;;
      --build-type)
        eo_need_value "$1" $#
        build_type=$2
        shift
        ;;
      --static) static=ON ;;
      --no-static) static=OFF ;;
      --native) native=1 ;;
      -D?*) defs+=("$1") ;;
      *) eo_die 2 "unknown option '$1' (see --help)" ;;
    esac
    shift
  done
  case $build_type in
    Release | RelWithDebInfo | Debug | MinSizeRel) ;;
    *) eo_die 2 "--build-type must be Release, RelWithDebInfo, Debug or MinSizeRel, got '$build_type'" ;;
  esac
  [ -n "$jobs" ] || jobs=$(nproc 2>/dev/null || echo 2)
  eo_check_int --jobs "$jobs" 1 1024
  [ -n "$build_dir" ] || build_dir="$EO_ROOT/build/$target"

  local cmake
  cmake=$(eo_find_tool cmake) || eo_die 1 "cmake not found: install it (apt install cmake, or pip install cmake)"

  local -a cfg=(-S "$EO_ROOT" -B "$build_dir" "-DCMAKE_BUILD_TYPE=$build_type"
    "-DEDGEOPT_STATIC_EXE=$static" -DEDGEOPT_BUILD_PYTHON=OFF -DEDGEOPT_BUILD_RUNTIME=ON
    -DEDGEOPT_BUILD_BENCH=ON)
  local host_arch
  host_arch=$(uname -m)
  if [ "$native" = 1 ]; then
    # What the compiler emits decides (a 32-bit Raspberry Pi OS often runs a 64-bit kernel, so
    # uname says aarch64 while c++ builds armhf).
    local cxx=${CXX:-c++} emits
    emits=$("$cxx" -dumpmachine 2>/dev/null) || eo_die 1 "--native: no C++ compiler ($cxx) found: install g++ (apt install g++)"
    local ok=0
    case $target:$emits in
      aarch64:aarch64-* | armv7:arm*-*eabihf | x86_64:x86_64-*) ok=1 ;;
      android-arm64:*) eo_die 2 "--native does not apply to android-arm64 (Android binaries need the NDK)" ;;
    esac
    [ "$ok" = 1 ] || eo_die 2 "--native: this machine's compiler ($cxx) builds for $emits, not for $target: run it on the device, or drop --native to cross-build"
  else
    case $target in
      aarch64 | armv7)
        local prefix=aarch64-linux-gnu- pkg=g++-aarch64-linux-gnu
        if [ "$target" = armv7 ]; then
          prefix=arm-linux-gnueabihf-
          pkg=g++-arm-linux-gnueabihf
        fi
        local d
        for d in "${defs[@]}"; do
          case $d in -DEDGEOPT_CROSS_PREFIX=* | -DEDGEOPT_CROSS_PREFIX:*=*) prefix=${d#*=} ;; esac
        done
        if ! command -v "${prefix}g++" >/dev/null 2>&1; then
          eo_die 1 "${prefix}g++ not found: install the cross compiler (apt install $pkg), or pass --native to build on the device itself"
        fi
        cfg+=("-DCMAKE_TOOLCHAIN_FILE=$EO_ROOT/targets/$target/toolchain.cmake")
        ;;
      android-arm64)
        local ndk=${ANDROID_NDK:-${ANDROID_NDK_HOME:-}}
        if [ -z "$ndk" ]; then
          eo_die 1 "ANDROID_NDK is not set: export ANDROID_NDK=/path/to/android-ndk (e.g. \$HOME/Android/Sdk/ndk/<version>; ANDROID_NDK_HOME works too)"
        fi
        if [ ! -f "$ndk/build/cmake/android.toolchain.cmake" ]; then
          eo_die 1 "ANDROID_NDK=$ndk is not an Android NDK: $ndk/build/cmake/android.toolchain.cmake is missing"
        fi
        cfg+=("-DCMAKE_TOOLCHAIN_FILE=$EO_ROOT/targets/android-arm64/toolchain.cmake"
          "-DANDROID_NDK=$ndk" -DANDROID_ABI=arm64-v8a -DANDROID_PLATFORM=android-24)
        ;;
      x86_64)
        case $host_arch in
          x86_64 | amd64) ;;
          *) eo_die 1 "the x86_64 target builds natively on an x86_64 machine; this one is $host_arch" ;;
        esac
        ;;
      *) eo_die 2 "unknown target '$target'" ;;
    esac
  fi
  # An existing build folder keeps its generator (CMake refuses to switch); a new one gets Ninja
  # when it is installed, else CMake's default (Unix Makefiles).
  if [ ! -f "$build_dir/CMakeCache.txt" ]; then
    local ninja
    if ninja=$(eo_find_tool ninja); then
      cfg+=(-G Ninja "-DCMAKE_MAKE_PROGRAM=$ninja")
    fi
  fi
  cfg+=("${defs[@]}")

  printf '%s: configuring %s (%s) in %s\n' "$EO_PROG" "$target" "$build_type" "$build_dir"
  "$cmake" "${cfg[@]}" || eo_die 1 "CMake configure failed (output above); command: $(eo_show "$cmake" "${cfg[@]}")"
  "$cmake" --build "$build_dir" --target edgeopt-bench edgeopt_runtime -j "$jobs" ||
    eo_die 1 "the build failed (output above)"
  printf '%s: built %s\n' "$EO_PROG" "$build_dir/edgeopt-bench"
  printf '%s: runtime library %s (links %s)\n' "$EO_PROG" "$build_dir/libedgeopt_runtime.a" \
    "$build_dir/libedgeopt_kernels.a"
}

# ------------------------------------------------------------------------------------ deploy

eo_deploy_usage() {
  local target=$1
  if [ "$target" = android-arm64 ]; then
    cat <<EOF
usage: targets/$target/deploy.sh --model MODEL.eom [--serial SERIAL] [options]

Pushes edgeopt-bench and MODEL.eom to an Android device with adb, runs the benchmark there and
pulls its JSON report back.

options:
  --model FILE        the .eom model to benchmark (required)
  --serial SERIAL     adb device serial (default: the only device adb sees)
  --dir DIR           folder on the device (default: /data/local/tmp)
EOF
  else
    cat <<EOF
usage: targets/$target/deploy.sh --model MODEL.eom --host USER@HOST [options]

Copies edgeopt-bench and MODEL.eom to the device with scp, runs the benchmark there over ssh and
copies its JSON report back.

options:
  --model FILE        the .eom model to benchmark (required)
  --host USER@HOST    the device, as ssh takes it (required)
  --dir DIR           folder on the device (default: /tmp/edgeopt)
EOF
  fi
  cat <<EOF
  --binary FILE       edgeopt-bench to copy (default: build/$target/edgeopt-bench from build.sh)
  --threads N         benchmark threads (default 1)
  --runs N            timed runs (default 50)
  --warmup N          untimed runs first (default 5)
  --json FILE         where the JSON report lands here (default: edgeopt-bench-$target.json)
  --dry-run           print the commands, run nothing
  -h, --help          this text

environment: EDGEOPT_SSH, EDGEOPT_SCP, EDGEOPT_ADB replace ssh, scp and adb (e.g.
EDGEOPT_SSH="ssh -p 2222").
EOF
}

eo_deploy() {
  local target=$1
  shift
  EO_PROG="targets/$target/deploy.sh"
  local adb_mode=0
  [ "$target" = android-arm64 ] && adb_mode=1
  local model="" host="" serial="" dir="" binary="" json="" dry=0
  local threads=1 runs=50 warmup=5
  while [ $# -gt 0 ]; do
    case $1 in
      -h | --help)
        eo_deploy_usage "$target"
        exit 0
        ;;
      --model | --host | --serial | --dir | --binary | --json | --threads | --runs | --warmup)
        eo_need_value "$1" $#
        case $1 in
          --model) model=$2 ;;
          --host) host=$2 ;;
          --serial) serial=$2 ;;
          --dir) dir=$2 ;;
          --binary) binary=$2 ;;
          --json) json=$2 ;;
          --threads) threads=$2 ;;
          --runs) runs=$2 ;;
          --warmup) warmup=$2 ;;
        esac
        shift
        ;;
      --dry-run) dry=1 ;;
      *) eo_die 2 "unknown option '$1' (see --help)" ;;
    esac
    shift
  done
  eo_check_int --threads "$threads" 1 256
  eo_check_int --runs "$runs" 1 1000000
  eo_check_int --warmup "$warmup" 0 1000000
  [ -n "$model" ] || eo_die 2 "--model is required (see --help)"
  if [ "$adb_mode" = 1 ]; then
    [ -z "$host" ] || eo_die 2 "--host is for ssh targets; Android devices are chosen with --serial"
    [ -n "$dir" ] || dir=/data/local/tmp
  else
    [ -z "$serial" ] || eo_die 2 "--serial is for android-arm64; ssh targets take --host USER@HOST"
    [ -n "$host" ] || eo_die 2 "--host USER@HOST is required (see --help)"
    local host_re='^[]A-Za-z0-9._@:%[+-]+$'
    if ! [[ $host =~ $host_re ]] || [[ $host == -* ]]; then
      eo_die 2 "--host must look like user@host, got '$host'"
    fi
    [ -n "$dir" ] || dir=/tmp/edgeopt
  fi
  # Remote paths go through the device's shell: keep them to characters that need no quoting.
  if ! [[ $dir =~ ^[A-Za-z0-9._/~+-]+$ ]] || [[ $dir == -* ]]; then
    eo_die 2 "--dir may hold only letters, digits and . _ / ~ + -, got '$dir'"
  fi
  [ -n "$binary" ] || binary="$EO_ROOT/build/$target/edgeopt-bench"
  [ -n "$json" ] || json="edgeopt-bench-$target.json"
  if [ "$dry" = 0 ]; then
    [ -f "$model" ] || eo_die 1 "model file '$model' not found"
    [ -f "$binary" ] || eo_die 1 "binary '$binary' not found: run targets/$target/build.sh first (or pass --binary)"
    local json_dir
    json_dir=$(dirname "$json")
    [ -d "$json_dir" ] || eo_die 1 "--json: folder '$json_dir' does not exist"
  fi
  local mname
  mname=$(basename "$model")
  if ! [[ $mname =~ ^[A-Za-z0-9._+-]+$ ]] || [[ $mname == -* ]]; then
    mname=model.eom
  fi

  local bench="cd $dir && rm -f bench.json && chmod 755 edgeopt-bench && ./edgeopt-bench"
  bench+=" --model $mname --threads $threads --warmup $warmup --runs $runs --json bench.json"
  local part="$json.part"
  local -a steps=()
  local -a tool
  if [ "$adb_mode" = 1 ]; then
    read -r -a tool <<<"${EDGEOPT_ADB:-adb}"
    [ -z "$serial" ] || tool+=(-s "$serial")
    eo_deploy_step "${tool[@]}" shell "mkdir -p $dir"
    eo_deploy_step "${tool[@]}" push "$binary" "$dir/edgeopt-bench"
    eo_deploy_step "${tool[@]}" push "$model" "$dir/$mname"
    eo_deploy_step "${tool[@]}" shell "$bench"
    eo_deploy_step "${tool[@]}" pull "$dir/bench.json" "$part"
  else
    local -a ssh scp
    read -r -a ssh <<<"${EDGEOPT_SSH:-ssh}"
    read -r -a scp <<<"${EDGEOPT_SCP:-scp}"
    eo_deploy_step "${ssh[@]}" "$host" "mkdir -p $dir"
    eo_deploy_step "${scp[@]}" "$binary" "$host:$dir/edgeopt-bench"
    eo_deploy_step "${scp[@]}" "$model" "$host:$dir/$mname"
    eo_deploy_step "${ssh[@]}" "$host" "$bench"
    eo_deploy_step "${scp[@]}" "$host:$dir/bench.json" "$part"
  fi
  eo_deploy_step mv -f "$part" "$json"
  if [ "$dry" = 1 ]; then
    printf '%s\n' "${steps[@]}"
    return 0
  fi
  EO_PART=$part
  trap 'rm -f "${EO_PART:-}"' EXIT
  local i=0 rc
  while [ $i -lt ${#steps[@]} ]; do
    printf '%s: %s\n' "$EO_PROG" "${steps[$i]}" >&2
    rc=0
    eval "${steps[$i]}" || rc=$?
    if [ "$rc" -ne 0 ]; then
      printf '%s: error: this command failed with exit code %d: %s\n' "$EO_PROG" "$rc" \
        "${steps[$i]}" >&2
      exit "$rc"
    fi
    i=$((i + 1))
  done
  trap - EXIT
  [ -s "$json" ] || eo_die 1 "the device wrote no JSON report ($json is empty)"
  printf '%s: report %s\n' "$EO_PROG" "$json"
}

eo_deploy_step() {
  # Appends one shell-quoted command to the caller's `steps` array (bash's dynamic scoping).
  steps+=("$(eo_show "$@")")
}
