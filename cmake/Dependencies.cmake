# SPDX-License-Identifier: Apache-2.0
# Every dependency comes from a Debian 12 package; see README.md ("Dependencies").
find_package(PkgConfig REQUIRED)
pkg_check_modules(LIBUV REQUIRED IMPORTED_TARGET libuv)
find_package(yaml-cpp REQUIRED)
find_package(prometheus-cpp REQUIRED COMPONENTS core)
find_package(CLI11 REQUIRED)
find_package(spdlog REQUIRED)

# The TLS library: BoringSSL by default (the design's choice), or the distribution's
# OpenSSL 3 (-DPOPBRIDGE_TLS=openssl), which Debian supports with security updates; see
# README.md ("TLS library"). Everything links the one target popbridge_tls.
set(POPBRIDGE_TLS boringssl CACHE STRING "TLS library: boringssl or openssl")
set_property(CACHE POPBRIDGE_TLS PROPERTY STRINGS boringssl openssl)
add_library(popbridge_tls INTERFACE)
if(POPBRIDGE_TLS STREQUAL "openssl")
  find_package(OpenSSL 3.0 REQUIRED)
  target_link_libraries(popbridge_tls INTERFACE OpenSSL::SSL OpenSSL::Crypto)
  # Deprecated OpenSSL interfaces fail the build (-Werror), so the code stays on the
  # API the two libraries share.
  target_compile_definitions(popbridge_tls INTERFACE OPENSSL_API_COMPAT=30000
                                                     OPENSSL_NO_DEPRECATED)
elseif(POPBRIDGE_TLS STREQUAL "boringssl")
  # Debian ships BoringSSL for Android's tools in its own folders, beside (not instead
  # of) OpenSSL; the include path must come first and the library folder goes into the
  # rpath so the loader never picks OpenSSL's libssl by accident.
  set(BORINGSSL_INCLUDE_DIR /usr/include/android CACHE PATH "BoringSSL headers")
  find_library(BORINGSSL_SSL NAMES ssl PATH_SUFFIXES android NO_CMAKE_SYSTEM_PATH
               PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE} /usr/lib REQUIRED)
  find_library(BORINGSSL_CRYPTO NAMES crypto PATH_SUFFIXES android NO_CMAKE_SYSTEM_PATH
               PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE} /usr/lib REQUIRED)
  get_filename_component(BORINGSSL_LIB_DIR ${BORINGSSL_SSL} DIRECTORY)
  if(NOT BORINGSSL_LIB_DIR MATCHES "/android$")
    message(FATAL_ERROR "BoringSSL not found (Debian: android-libboringssl-dev); found "
                        "${BORINGSSL_SSL}. Or build with -DPOPBRIDGE_TLS=openssl.")
  endif()
  target_include_directories(popbridge_tls SYSTEM BEFORE INTERFACE ${BORINGSSL_INCLUDE_DIR})
  target_link_libraries(popbridge_tls INTERFACE ${BORINGSSL_SSL} ${BORINGSSL_CRYPTO})
  target_link_options(popbridge_tls INTERFACE "-Wl,-rpath,${BORINGSSL_LIB_DIR}")
else()
  message(FATAL_ERROR "POPBRIDGE_TLS must be boringssl or openssl, not '${POPBRIDGE_TLS}'")
endif()
message(STATUS "popbridge TLS library: ${POPBRIDGE_TLS}")
