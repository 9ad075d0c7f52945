# The one helper pair every folder uses (after absl_cc_library / absl_cc_test).
#
#   qaqkv_cc_library(NAME foo SRCS a.cc HDRS a.h
#                    DEPS <what a.h includes> PRIVATE_DEPS <what only a.cc includes>)
#     -> static library `qaqkv_foo` with alias `qaqkv::foo` (an INTERFACE
#        library when there are no SRCS). DEPS are PUBLIC: a user of the
#        library compiles against their headers. PRIVATE_DEPS are not.
#   qaqkv_cc_test(NAME foo_test SRCS foo_test.cc DEPS qaqkv::foo [LABELS gpu]
#                 [NEEDS_SERVER])
#     -> GoogleTest executable registered with gtest_discover_tests.
#        NEEDS_SERVER: the test execs this tree's qaqkv-server. Tests labelled
#        `grpc` are not built at all when QAQKV_BUILD_GRPC_TESTS is OFF (the
#        tsan preset: Debian's gRPC is not TSan-instrumented, so they would
#        be built only to be left out). Tests labelled `single_thread` start
#        no thread, so ThreadSanitizer has nothing to find in them; the
#        TSan build leaves them out rather than run them 20x slower.
#
# Every library and binary is recorded (QAQKV_TARGETS) so that
# qaqkv_write_target_manifest() can list sources and links for the layering
# check (scripts/check_layering.py).
include_guard(GLOBAL)
include(CMakeParseArguments)

function(qaqkv_record_target target)
  set_property(GLOBAL APPEND PROPERTY QAQKV_TARGETS ${target})
endfunction()

function(qaqkv_cc_library)
  cmake_parse_arguments(QL "" "NAME" "SRCS;HDRS;DEPS;PRIVATE_DEPS;COPTS;DEFINES" ${ARGN})
  set(_target qaqkv_${QL_NAME})
  if(QL_SRCS)
    add_library(${_target} STATIC ${QL_SRCS} ${QL_HDRS})
    target_include_directories(${_target} PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>)
    target_link_libraries(${_target} PUBLIC ${QL_DEPS} PRIVATE ${QL_PRIVATE_DEPS})
    target_compile_options(${_target} PRIVATE ${QAQKV_WARNINGS} ${QL_COPTS})
    target_compile_definitions(${_target} PUBLIC ${QL_DEFINES})
  else()
    add_library(${_target} INTERFACE ${QL_HDRS})
    target_include_directories(${_target} INTERFACE $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>)
    target_link_libraries(${_target} INTERFACE ${QL_DEPS})
  endif()
  add_library(qaqkv::${QL_NAME} ALIAS ${_target})
  qaqkv_record_target(${_target})
endfunction()

function(qaqkv_cc_test)
  if(NOT QAQKV_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(QT "NEEDS_SERVER" "NAME" "SRCS;DEPS;LABELS;COPTS" ${ARGN})
  if("grpc" IN_LIST QT_LABELS AND NOT QAQKV_BUILD_GRPC_TESTS)
    return()
  endif()
  if("single_thread" IN_LIST QT_LABELS AND QAQKV_SANITIZE STREQUAL "thread")
    return()
  endif()
  add_executable(${QT_NAME} ${QT_SRCS})
  target_link_libraries(${QT_NAME} PRIVATE ${QT_DEPS} GTest::gmock GTest::gtest_main)
  target_compile_options(${QT_NAME} PRIVATE ${QAQKV_WARNINGS} ${QT_COPTS})
  target_compile_definitions(${QT_NAME} PRIVATE
    QAQKV_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    QAQKV_BINARY_DIR="${PROJECT_BINARY_DIR}")
  set(_props "")
  if(QT_LABELS)
    set(_props PROPERTIES LABELS "${QT_LABELS}")
  endif()
  gtest_discover_tests(${QT_NAME} DISCOVERY_TIMEOUT 60 ${_props})
  if(QT_NEEDS_SERVER)
    add_dependencies(${QT_NAME} qaqkv-server)
  endif()
endfunction()

# Writes ${PROJECT_BINARY_DIR}/qaqkv_targets.json: for every recorded target,
# its folder, sources and direct links (what the layering check compares
# with what the sources include). Call once, after every target exists.
function(qaqkv_write_target_manifest)
  get_property(_targets GLOBAL PROPERTY QAQKV_TARGETS)
  set(_json "{\n")
  set(_first TRUE)
  foreach(_t IN LISTS _targets)
    get_target_property(_type ${_t} TYPE)
    get_target_property(_dir ${_t} SOURCE_DIR)
    get_target_property(_srcs ${_t} SOURCES)
    if(_type STREQUAL "INTERFACE_LIBRARY")
      get_target_property(_links ${_t} INTERFACE_LINK_LIBRARIES)
    else()
      get_target_property(_links ${_t} LINK_LIBRARIES)
    endif()
    foreach(_v _srcs _links)
      if(NOT ${_v})
        set(${_v} "")
      endif()
    endforeach()
    set(_src_json "")
    foreach(_s IN LISTS _srcs)
      if(_s MATCHES "^\\$<")
        continue()  # generator expressions (object libraries)
      endif()
      if(NOT IS_ABSOLUTE "${_s}")
        set(_s "${_dir}/${_s}")
      endif()
      list(APPEND _src_json "\"${_s}\"")
    endforeach()
    set(_link_json "")
    foreach(_l IN LISTS _links)
      string(REPLACE "\"" "\\\"" _l "${_l}")
      list(APPEND _link_json "\"${_l}\"")
    endforeach()
    list(JOIN _src_json ", " _src_json)
    list(JOIN _link_json ", " _link_json)
    if(NOT _first)
      string(APPEND _json ",\n")
    endif()
    set(_first FALSE)
    string(APPEND _json "  \"${_t}\": {\"type\": \"${_type}\", \"dir\": \"${_dir}\", "
                        "\"sources\": [${_src_json}], \"links\": [${_link_json}]}")
  endforeach()
  string(APPEND _json "\n}\n")
  file(WRITE ${PROJECT_BINARY_DIR}/qaqkv_targets.json "${_json}")
endfunction()
