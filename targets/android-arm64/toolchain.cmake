# CMake toolchain: Android arm64-v8a phones and tablets, through the Android NDK's own toolchain.
#   export ANDROID_NDK=$HOME/Android/Sdk/ndk/26.3.11579264   (or ANDROID_NDK_HOME)
#   cmake -S . -B build/android-arm64 -G Ninja \
#         -DCMAKE_TOOLCHAIN_FILE=targets/android-arm64/toolchain.cmake
# Defaults: ANDROID_ABI=arm64-v8a, ANDROID_PLATFORM=android-24 (Android 7.0, the oldest release
# whose NDK headers have everything the runtime uses); override either with -D.
if(DEFINED ANDROID_NDK AND NOT ANDROID_NDK STREQUAL "")
  set(_edgeopt_ndk "${ANDROID_NDK}")
elseif(DEFINED ENV{ANDROID_NDK} AND NOT "$ENV{ANDROID_NDK}" STREQUAL "")
  set(_edgeopt_ndk "$ENV{ANDROID_NDK}")
elseif(DEFINED ENV{ANDROID_NDK_HOME} AND NOT "$ENV{ANDROID_NDK_HOME}" STREQUAL "")
  set(_edgeopt_ndk "$ENV{ANDROID_NDK_HOME}")
else()
  message(FATAL_ERROR
          "targets/android-arm64/toolchain.cmake: the Android NDK was not found; set the "
          "ANDROID_NDK (or ANDROID_NDK_HOME) environment variable to the NDK directory, e.g. "
          "export ANDROID_NDK=$HOME/Android/Sdk/ndk/<version>")
endif()
set(_edgeopt_ndk_toolchain "${_edgeopt_ndk}/build/cmake/android.toolchain.cmake")
if(NOT EXISTS "${_edgeopt_ndk_toolchain}")
  message(FATAL_ERROR
          "targets/android-arm64/toolchain.cmake: ANDROID_NDK=${_edgeopt_ndk} is not an NDK "
          "(no build/cmake/android.toolchain.cmake there); point ANDROID_NDK or ANDROID_NDK_HOME "
          "at the NDK directory itself")
endif()

# The try_compile projects CMake runs re-read this file; pass the NDK location on to them.
set(ANDROID_NDK "${_edgeopt_ndk}" CACHE PATH "Android NDK directory")
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES ANDROID_NDK)

if(NOT DEFINED ANDROID_ABI)
  set(ANDROID_ABI arm64-v8a)
endif()
if(NOT DEFINED ANDROID_PLATFORM)
  set(ANDROID_PLATFORM android-24)
endif()
if(NOT DEFINED ANDROID_STL)
  set(ANDROID_STL c++_static)  # one self-contained binary to adb push
endif()

include("${_edgeopt_ndk_toolchain}")
