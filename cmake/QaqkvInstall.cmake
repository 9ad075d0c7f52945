# `cmake --install` puts the client library where an application finds it:
#
#   find_package(qaqkv CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE qaqkv::client)
#
# Installed: include/qaqkv/{client.h,limits.h}, the static libraries the
# client is built from, and lib/cmake/qaqkv/. The NCCL transport
# (qaqkv/nccl_transport.h) is not installed yet: its header includes the
# CUDA kernels' own headers, which are not part of the installed API. The client's own code and what it is built from (the
# generated proto code, gRPC, the kernels) are linked, never included: the
# generated headers are not installed. tests/install builds a consumer
# against an install and runs it against a real server.
include_guard(GLOBAL)
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The client and, because they are static, the libraries it links.
set(_qaqkv_export client limits base proto kernels checksum)
if(TARGET qaqkv_kernels_cuda)
  list(APPEND _qaqkv_export kernels_cuda)
endif()
set(_qaqkv_export_targets "")
foreach(_name IN LISTS _qaqkv_export)
  set_target_properties(qaqkv_${_name} PROPERTIES EXPORT_NAME ${_name})
  list(APPEND _qaqkv_export_targets qaqkv_${_name})
endforeach()

install(TARGETS ${_qaqkv_export_targets}
        EXPORT qaqkvTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
set(_qaqkv_headers ${PROJECT_SOURCE_DIR}/client/include/qaqkv/client.h
                   ${PROJECT_SOURCE_DIR}/proto/include/qaqkv/limits.h)
install(FILES ${_qaqkv_headers} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/qaqkv)

set(_qaqkv_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/qaqkv)
install(EXPORT qaqkvTargets NAMESPACE qaqkv:: DESTINATION ${_qaqkv_cmake_dir})
set(QAQKV_INSTALL_HAS_CUDA ${QAQKV_ENABLE_CUDA})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/qaqkvConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/qaqkvConfig.cmake
                              INSTALL_DESTINATION ${_qaqkv_cmake_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/qaqkvConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION}
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/qaqkvConfig.cmake
              ${PROJECT_BINARY_DIR}/qaqkvConfigVersion.cmake
        DESTINATION ${_qaqkv_cmake_dir})
