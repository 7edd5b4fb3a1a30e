# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
#
# Install rules and the Debian package (CPack).
#
# `cmake --install build` puts:
#   <prefix>/${PRESENCE_PLUGIN_DIR}/mosquitto_presence.so   the plugin, where Debian's mosquitto
#       packages keep the broker's plugins (lib/<multiarch>: Debian 12's
#       /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so). PRESENCE_PLUGIN_DIR is
#       relative to the prefix given at INSTALL time, so `cmake --install build --prefix /usr`
#       works on a build configured for /usr/local. Built against Mosquitto 2.1 the default is
#       lib/<multiarch>/mosquitto, where Debian's 2.1 packages keep their plugins.
#   ${PRESENCE_CONF_DIR}/00-presence.conf   the configuration snippet for Debian's conf.d,
#       installed DISABLED (every setting commented out, see packaging/00-presence.conf.in),
#       and never over a copy that is already there (the operator's edits survive).
#   <prefix>/${CMAKE_INSTALL_DOCDIR}/   README.md, LICENSE, examples/00-presence.conf, and
#       what Debian asks of every package: copyright (machine-readable, DEP-5, from
#       packaging/copyright.in with the licence texts of LICENSE) and changelog.Debian.gz
#       (packaging/changelog.Debian, gzip -9n).
#
# `cpack` (from the build directory) builds mosquitto-presence_<version>_<arch>.deb with the
# same files under /usr and /etc, Depends on the broker and on Debian's cJSON (nothing is
# vendored), and the snippet as a conffile.

# Debian's mosquitto 2.0 packages keep plugins in /usr/lib/<multiarch>/, its 2.1 packages (sid)
# in /usr/lib/<multiarch>/mosquitto/; PRESENCE_MOSQUITTO_GENERATION comes from
# cmake/mosquitto.cmake.
if(CMAKE_LIBRARY_ARCHITECTURE)
  set(presence_default_plugin_dir "lib/${CMAKE_LIBRARY_ARCHITECTURE}")
else()
  set(presence_default_plugin_dir "${CMAKE_INSTALL_LIBDIR}")
endif()
if(PRESENCE_MOSQUITTO_GENERATION EQUAL 21)
  string(APPEND presence_default_plugin_dir "/mosquitto")
  set(presence_default_depends "mosquitto (>= 2.1), libcjson1 (>= 1.7.15)")
else()
  set(presence_default_depends "mosquitto (>= 2.0.11), mosquitto (<< 2.1), libcjson1 (>= 1.7.15)")
endif()
set(PRESENCE_PLUGIN_DIR "${presence_default_plugin_dir}" CACHE STRING
  "Where to install mosquitto_presence.so; a relative path is relative to the install prefix")
set(PRESENCE_CONF_DIR "/etc/mosquitto/conf.d" CACHE STRING
  "Where to install the (disabled) 00-presence.conf snippet; empty: nowhere")
set(PRESENCE_DEB_DEPENDS "${presence_default_depends}" CACHE STRING
  "The Depends of the Debian package")

install(TARGETS mosquitto_presence LIBRARY DESTINATION ${PRESENCE_PLUGIN_DIR})
install(FILES README.md LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR})

# The copyright file: packaging/copyright.in with the two licence texts of LICENSE as its
# License paragraphs (each line indented by one space, an empty line as " ."), so that the
# texts are kept in one place.
file(READ "${PROJECT_SOURCE_DIR}/LICENSE" presence_license)
set(presence_rule "===============================================================================================\n")
function(presence_license_text title out)
  string(FIND "${presence_license}" "${presence_rule}${title}\n${presence_rule}" start)
  if(start EQUAL -1)
    message(FATAL_ERROR "LICENSE has no section \"${title}\"")
  endif()
  string(LENGTH "${presence_rule}${title}\n${presence_rule}" skip)
  math(EXPR start "${start} + ${skip}")
  string(SUBSTRING "${presence_license}" ${start} -1 text)
  string(FIND "${text}" "${presence_rule}" end)
  if(NOT end EQUAL -1)
    string(SUBSTRING "${text}" 0 ${end} text)
  endif()
  string(STRIP "${text}" text)
  string(REGEX REPLACE "[ \t]+\n" "\n" text "${text}")
  string(REPLACE "\n" "\n " text " ${text}")
  string(REGEX REPLACE "\n (\n|$)" "\n .\\1" text "${text}")
  string(REGEX REPLACE "\n (\n|$)" "\n .\\1" text "${text}")
  set(${out} "${text}" PARENT_SCOPE)
endfunction()
presence_license_text("BSD 3-Clause License (the Eclipse Distribution License - v 1.0)"
  PRESENCE_LICENSE_BSD)
presence_license_text("Eclipse Public License - v 2.0" PRESENCE_LICENSE_EPL)
configure_file(packaging/copyright.in copyright @ONLY)
# The Debian changelog, compressed the way Debian's tools do (-n: no name, no time stamp, so
# the same text gives the same bytes).
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
  "${PROJECT_SOURCE_DIR}/LICENSE" "${PROJECT_SOURCE_DIR}/packaging/changelog.Debian")
execute_process(COMMAND gzip -9n -c "${PROJECT_SOURCE_DIR}/packaging/changelog.Debian"
  OUTPUT_FILE "${CMAKE_CURRENT_BINARY_DIR}/changelog.Debian.gz" RESULT_VARIABLE presence_gzip)
if(NOT presence_gzip EQUAL 0)
  message(FATAL_ERROR "gzip -9n packaging/changelog.Debian failed: ${presence_gzip}")
endif()
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/copyright" "${CMAKE_CURRENT_BINARY_DIR}/changelog.Debian.gz"
  DESTINATION ${CMAKE_INSTALL_DOCDIR})

# The snippet names the plugin's installed path, known only at install time (--prefix). The
# code below runs then, with CMAKE_INSTALL_PREFIX the prefix in effect.
set(presence_snippet_template "${PROJECT_SOURCE_DIR}/packaging/00-presence.conf.in")
install(CODE "
  set(plugin_dir [[${PRESENCE_PLUGIN_DIR}]])
  if(NOT IS_ABSOLUTE \"\${plugin_dir}\")
    set(plugin_dir \"\${CMAKE_INSTALL_PREFIX}/\${plugin_dir}\")
  endif()
  file(READ [[${presence_snippet_template}]] snippet)
  string(REPLACE @PRESENCE_PLUGIN_PATH@ \"\${plugin_dir}/mosquitto_presence.so\" snippet \"\${snippet}\")
  file(WRITE [[${CMAKE_CURRENT_BINARY_DIR}/00-presence.conf]] \"\${snippet}\")
  file(INSTALL [[${CMAKE_CURRENT_BINARY_DIR}/00-presence.conf]]
    DESTINATION \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_DOCDIR}/examples\")
  set(conf_dir [[${PRESENCE_CONF_DIR}]])
  if(conf_dir)
    if(EXISTS \"\$ENV{DESTDIR}\${conf_dir}/00-presence.conf\")
      message(STATUS \"Kept (not replaced): \$ENV{DESTDIR}\${conf_dir}/00-presence.conf\")
    else()
      file(INSTALL [[${CMAKE_CURRENT_BINARY_DIR}/00-presence.conf]] DESTINATION \"\${conf_dir}\")
    endif()
  endif()
")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME mosquitto-presence)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
# The project, not a person: Debian's Maintainer field names who answers for the package.
set(CPACK_PACKAGE_CONTACT
  "mosquitto-presence developers <mosquitto-presence@users.noreply.github.com>")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CPACK_PACKAGE_CONTACT}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Mosquitto plugin that tells every client who is online")
# Debian's extended description: lines of at most 80 characters.
set(CPACK_PACKAGE_DESCRIPTION "Keeps one retained JSON presence document per user on
presence/<user>: available while any of the user's sessions is connected,
with a small shared state. Load it with /etc/mosquitto/conf.d/00-presence.conf
(installed disabled).")
set(CPACK_RESOURCE_FILE_LICENSE "${PROJECT_SOURCE_DIR}/LICENSE")
# Absolute destinations (/etc) and the install code above need DESTDIR-style staging.
set(CPACK_SET_DESTDIR ON)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "${PRESENCE_DEB_DEPENDS}")
# Cluster mode (plugin_opt_cluster_url) loads the hiredis the plugin was built against, and
# needs a Redis 7 or a Valkey somewhere: suggested, not required (a single broker needs neither).
if(PRESENCE_HIREDIS_PACKAGE)
  set(CPACK_DEBIAN_PACKAGE_SUGGESTS "${PRESENCE_HIREDIS_PACKAGE}, redis-server | valkey-server")
endif()
if(PRESENCE_CONF_DIR)
  file(WRITE "${CMAKE_CURRENT_BINARY_DIR}/conffiles" "${PRESENCE_CONF_DIR}/00-presence.conf\n")
  set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA "${CMAKE_CURRENT_BINARY_DIR}/conffiles")
endif()
include(CPack)
