# CMake toolchain: 32-bit ARM Linux, hard float (Raspberry Pi OS 32-bit on Pi 2/3/4, other
# Cortex-A7/A9/A53 boards) with Debian/Ubuntu's cross GCC
# (apt install g++-arm-linux-gnueabihf qemu-user).
#   cmake -S . -B build/armv7 -G Ninja -DCMAKE_TOOLCHAIN_FILE=targets/armv7/toolchain.cmake
# The baseline is ARMv7-A with VFPv3-D16 (Debian armhf); NEON is optional on ARMv7, so only the
# *_neon.cc files get -mfpu=neon (from CMakeLists.txt) and the NEON path is chosen at run time
# from the HWCAP_NEON bit. GCC 12 refuses -mfloat-abi=hard with a bare -march=armv7-a ("lacks an
# FPU"), hence +fp.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7)

set(EDGEOPT_CROSS_PREFIX "arm-linux-gnueabihf-"
    CACHE STRING "Prefix of the cross compiler binaries")
set(EDGEOPT_SYSROOT "/usr/arm-linux-gnueabihf"
    CACHE PATH "Target libraries (libc6-dev-armhf-cross)")
set(CMAKE_C_COMPILER ${EDGEOPT_CROSS_PREFIX}gcc)
set(CMAKE_CXX_COMPILER ${EDGEOPT_CROSS_PREFIX}g++)
set(CMAKE_C_FLAGS_INIT "-march=armv7-a+fp -mfloat-abi=hard")
set(CMAKE_CXX_FLAGS_INIT "-march=armv7-a+fp -mfloat-abi=hard")

set(CMAKE_FIND_ROOT_PATH ${EDGEOPT_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# ctest runs target binaries through qemu-user when it is installed; Cortex-A7 (NEON + VFPv4) is
# the smallest core the NEON kernels target.
set(EDGEOPT_QEMU_CPU "cortex-a7" CACHE STRING "qemu-arm -cpu value for running tests")
find_program(EDGEOPT_QEMU_ARM qemu-arm)
if(EDGEOPT_QEMU_ARM)
  set(CMAKE_CROSSCOMPILING_EMULATOR
      ${EDGEOPT_QEMU_ARM} -cpu ${EDGEOPT_QEMU_CPU} -L ${EDGEOPT_SYSROOT})
endif()
