# SPDX-License-Identifier: Apache-2.0
# Finds sidetap's dependencies, all Debian packages; a missing one names the package to install.
find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
	message(FATAL_ERROR "pkg-config not found: apt-get install pkg-config (or run cmake/deps.sh)")
endif()

# pkg_search_module takes the first of <pkgnames> that exists and makes PkgConfig::<var>.
macro(sidetap_require_pkg var pkgnames debpkg)
	pkg_search_module(${var} IMPORTED_TARGET ${pkgnames})
	if(NOT ${var}_FOUND)
		message(FATAL_ERROR "${pkgnames} not found: apt-get install ${debpkg} (or run cmake/deps.sh)")
	endif()
endmacro()

sidetap_require_pkg(URING "liburing" liburing-dev)
sidetap_require_pkg(MSGPACK "msgpack;msgpack-c" libmsgpack-dev)
sidetap_require_pkg(SSL "openssl" libssl-dev)
# sidetap-uploader's remote sinks: the collector (libcurl, with gzip and zstd bodies) and Kafka.
sidetap_require_pkg(CURL "libcurl" libcurl4-openssl-dev)
sidetap_require_pkg(RDKAFKA "rdkafka" librdkafka-dev)
sidetap_require_pkg(ZSTD "libzstd" libzstd-dev)
sidetap_require_pkg(ZLIB "zlib" zlib1g-dev)
sidetap_require_pkg(JANSSON "jansson" libjansson-dev)
sidetap_require_pkg(YAML "yaml-0.1" libyaml-dev)
if(SIDETAP_TESTS)
	sidetap_require_pkg(CRITERION "criterion" libcriterion-dev)
endif()

# llhttp: Debian's node-llhttp ships the generated C sources; compile them as our own target.
set(LLHTTP_SRC_DIR /usr/share/llhttp CACHE PATH "llhttp C sources (Debian node-llhttp)")
set(LLHTTP_INCLUDE_DIR /usr/share/include/llhttp CACHE PATH "llhttp header (Debian node-llhttp)")
foreach(_f api.c http.c llhttp.c)
	if(NOT EXISTS ${LLHTTP_SRC_DIR}/${_f})
		message(FATAL_ERROR "${LLHTTP_SRC_DIR}/${_f} not found: apt-get install node-llhttp (or run cmake/deps.sh)")
	endif()
endforeach()
if(NOT EXISTS ${LLHTTP_INCLUDE_DIR}/llhttp.h)
	message(FATAL_ERROR "${LLHTTP_INCLUDE_DIR}/llhttp.h not found: apt-get install node-llhttp (or run cmake/deps.sh)")
endif()
add_library(llhttp STATIC ${LLHTTP_SRC_DIR}/api.c ${LLHTTP_SRC_DIR}/http.c ${LLHTTP_SRC_DIR}/llhttp.c)
target_include_directories(llhttp SYSTEM PUBLIC ${LLHTTP_INCLUDE_DIR})
set_target_properties(llhttp PROPERTIES POSITION_INDEPENDENT_CODE ON)
target_compile_options(llhttp PRIVATE -w)
# Strict mode: a CR not followed by LF (after headers, chunk sizes, chunk data) and data after
# "Connection: close" are errors instead of being skipped over, so capture never frames a
# smuggling-shaped message differently from a strict server (TESTPLAN P4).
target_compile_definitions(llhttp PUBLIC LLHTTP_STRICT_MODE=1)

find_package(Threads REQUIRED)
