# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# Finds the Mosquitto broker headers and decides which broker generation the plugin is built
# for, from the version the headers declare:
#   PRESENCE_MOSQUITTO_VERSION      e.g. 2.0.11 (2.1's headers say 2.1.0 for every 2.1.x)
#   PRESENCE_MOSQUITTO_GENERATION   20 (Mosquitto 2.0.x) or 21 (2.1.x and later 2.x)
#   MOSQUITTO_INCLUDE_DIR           the directory holding mosquitto.h
# 2.1 moved the headers to <mosquitto/*.h>; its <mosquitto_broker.h> is a shim that warns.

find_path(MOSQUITTO_INCLUDE_DIR mosquitto.h REQUIRED)

set(_presence_version_header "${MOSQUITTO_INCLUDE_DIR}/mosquitto/libmosquitto.h")
if(NOT EXISTS "${_presence_version_header}")
  set(_presence_version_header "${MOSQUITTO_INCLUDE_DIR}/mosquitto.h")
endif()
file(STRINGS "${_presence_version_header}" _presence_version_lines
  REGEX "^#define LIBMOSQUITTO_(MAJOR|MINOR|REVISION) [0-9]+")
foreach(part MAJOR MINOR REVISION)
  string(REGEX MATCH "LIBMOSQUITTO_${part} ([0-9]+)" _match "${_presence_version_lines}")
  if(NOT _match)
    message(FATAL_ERROR "Cannot read LIBMOSQUITTO_${part} from ${_presence_version_header}")
  endif()
  set(_presence_${part} ${CMAKE_MATCH_1})
endforeach()
set(PRESENCE_MOSQUITTO_VERSION "${_presence_MAJOR}.${_presence_MINOR}.${_presence_REVISION}")

if(_presence_MAJOR EQUAL 2 AND _presence_MINOR EQUAL 0)
  set(PRESENCE_MOSQUITTO_GENERATION 20)
elseif(_presence_MAJOR EQUAL 2 AND _presence_MINOR GREATER_EQUAL 1)
  set(PRESENCE_MOSQUITTO_GENERATION 21)
else()
  message(FATAL_ERROR "Mosquitto ${PRESENCE_MOSQUITTO_VERSION} (headers in "
    "${MOSQUITTO_INCLUDE_DIR}) is not supported: the plugin needs Mosquitto 2.0 or 2.1")
endif()
math(EXPR _presence_generation_minor "${PRESENCE_MOSQUITTO_GENERATION} % 10")
message(STATUS "mosquitto-presence: building for Mosquitto 2.${_presence_generation_minor} "
  "(headers of ${PRESENCE_MOSQUITTO_VERSION} in ${MOSQUITTO_INCLUDE_DIR})")
