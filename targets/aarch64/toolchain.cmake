# CMake toolchain: 64-bit ARM Linux (Raspberry Pi 4/5 on a 64-bit OS, other Cortex-A boards)
# with Debian/Ubuntu's cross GCC (apt install g++-aarch64-linux-gnu qemu-user).
#   cmake -S . -B build/aarch64 -G Ninja -DCMAKE_TOOLCHAIN_FILE=targets/aarch64/toolchain.cmake
# No global -march: NEON is baseline on AArch64 and the SDOT kernels get +dotprod on their own
# files, so one binary runs on a Pi 4 (Cortex-A72, NEON) and uses SDOT on a Pi 5 (Cortex-A76).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(EDGEOPT_CROSS_PREFIX "aarch64-linux-gnu-" CACHE STRING "Prefix of the cross compiler binaries")
set(EDGEOPT_SYSROOT "/usr/aarch64-linux-gnu" CACHE PATH "Target libraries (libc6-dev-arm64-cross)")
set(CMAKE_C_COMPILER ${EDGEOPT_CROSS_PREFIX}gcc)
set(CMAKE_CXX_COMPILER ${EDGEOPT_CROSS_PREFIX}g++)

# Look for libraries and headers of the target only, for programs of the host only.
set(CMAKE_FIND_ROOT_PATH ${EDGEOPT_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# ctest and add_custom_command run target binaries through qemu-user when it is installed.
# "max" enables every feature qemu knows (SDOT included), so all paths are exercised; force the
# NEON path with EDGEOPT_PATHS=neon or choose a CPU with -DEDGEOPT_QEMU_CPU=cortex-a72.
set(EDGEOPT_QEMU_CPU "max" CACHE STRING "qemu-aarch64 -cpu value for running tests")
find_program(EDGEOPT_QEMU_AARCH64 qemu-aarch64)
if(EDGEOPT_QEMU_AARCH64)
  # -L lets dynamically linked binaries find the target's loader and libc.
  set(CMAKE_CROSSCOMPILING_EMULATOR
      ${EDGEOPT_QEMU_AARCH64} -cpu ${EDGEOPT_QEMU_CPU} -L ${EDGEOPT_SYSROOT})
endif()
