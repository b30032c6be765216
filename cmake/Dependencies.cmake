# Every dependency comes from a Debian 12 package; see README.md ("Dependencies").
find_package(PkgConfig REQUIRED)
pkg_check_modules(LIBUV REQUIRED IMPORTED_TARGET libuv)
find_package(yaml-cpp REQUIRED)
find_package(prometheus-cpp REQUIRED COMPONENTS core)
find_package(CLI11 REQUIRED)
find_package(spdlog REQUIRED)

# Debian ships BoringSSL for Android's tools in its own folders, beside (not instead
# of) OpenSSL; the include path must come first and the library folder goes into the
# rpath so the loader never picks OpenSSL's libssl by accident.
set(BORINGSSL_INCLUDE_DIR /usr/include/android CACHE PATH "BoringSSL headers")
set(BORINGSSL_LIB_DIR /usr/lib/x86_64-linux-gnu/android CACHE PATH "BoringSSL libraries")
find_library(BORINGSSL_SSL NAMES ssl PATHS ${BORINGSSL_LIB_DIR} NO_DEFAULT_PATH REQUIRED)
find_library(BORINGSSL_CRYPTO NAMES crypto PATHS ${BORINGSSL_LIB_DIR} NO_DEFAULT_PATH REQUIRED)
add_library(boringssl INTERFACE)
target_include_directories(boringssl SYSTEM BEFORE INTERFACE ${BORINGSSL_INCLUDE_DIR})
target_link_libraries(boringssl INTERFACE ${BORINGSSL_SSL} ${BORINGSSL_CRYPTO})
target_link_options(boringssl INTERFACE "-Wl,-rpath,${BORINGSSL_LIB_DIR}")
