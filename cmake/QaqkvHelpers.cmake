# The one helper pair every folder uses (after absl_cc_library / absl_cc_test).
#
#   qaqkv_cc_library(NAME foo SRCS a.cc HDRS a.h DEPS absl::status [PUBLIC])
#     -> static library `qaqkv_foo` with alias `qaqkv::foo`.
#   qaqkv_cc_test(NAME foo_test SRCS foo_test.cc DEPS qaqkv::foo [LABELS gpu])
#     -> GoogleTest executable registered with gtest_discover_tests.
include_guard(GLOBAL)
include(CMakeParseArguments)

function(qaqkv_cc_library)
  cmake_parse_arguments(QL "" "NAME" "SRCS;HDRS;DEPS;COPTS;DEFINES" ${ARGN})
  set(_target qaqkv_${QL_NAME})
  if(QL_SRCS)
    add_library(${_target} STATIC ${QL_SRCS} ${QL_HDRS})
    target_include_directories(${_target} PUBLIC ${PROJECT_SOURCE_DIR})
    target_link_libraries(${_target} PUBLIC ${QL_DEPS})
    target_compile_options(${_target} PRIVATE ${QAQKV_WARNINGS} ${QL_COPTS})
    target_compile_definitions(${_target} PUBLIC ${QL_DEFINES})
  else()
    add_library(${_target} INTERFACE)
    target_include_directories(${_target} INTERFACE ${PROJECT_SOURCE_DIR})
    target_link_libraries(${_target} INTERFACE ${QL_DEPS})
  endif()
  add_library(qaqkv::${QL_NAME} ALIAS ${_target})
endfunction()

function(qaqkv_cc_test)
  if(NOT QAQKV_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(QT "" "NAME" "SRCS;DEPS;LABELS;COPTS" ${ARGN})
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
endfunction()
