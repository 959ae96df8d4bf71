# Install rules, the CMake package (find_package(Fabric CONFIG)) and the Debian packages.
#
#   cmake --install build/release --prefix P   headers, static libraries, fabricd, the package
#   cpack --config build/release/CPackConfig.cmake   fabricd_*.deb and libfabric-dev_*.deb
#
# libfabric is installed as the static libraries it is built from; a consumer links
# fabric::fabric and gets the rest through its link interface. Their dependencies are found
# again in the consumer's build by FabricConfig.cmake (Torch, gRPC, protobuf, spdlog, zlib).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(FABRIC_CMAKE_INSTALL_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/Fabric")

install(TARGETS fabricd RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT fabricd)
# The systemd units and their user (deploy/systemd). The environment files they read are
# examples to copy to /etc/fabricd and fill in: a unit refuses to start without its own.
install(FILES "${PROJECT_SOURCE_DIR}/deploy/systemd/fabricd-coordinator.service"
              "${PROJECT_SOURCE_DIR}/deploy/systemd/fabricd-agent.service"
        DESTINATION lib/systemd/system COMPONENT fabricd)
install(FILES "${PROJECT_SOURCE_DIR}/deploy/systemd/fabricd.sysusers"
        DESTINATION lib/sysusers.d RENAME fabricd.conf COMPONENT fabricd)
install(FILES "${PROJECT_SOURCE_DIR}/deploy/systemd/coordinator.env" "${PROJECT_SOURCE_DIR}/deploy/systemd/agent.env"
              "${PROJECT_SOURCE_DIR}/deploy/systemd/fabricd-agent.service.d/gpu.conf"
              "${PROJECT_SOURCE_DIR}/deploy/systemd/fabricd-coordinator.service.d/etcd.conf"
        DESTINATION "${CMAKE_INSTALL_DATAROOTDIR}/doc/fabricd/examples" COMPONENT fabricd)
install(FILES "${PROJECT_SOURCE_DIR}/README.md" "${PROJECT_SOURCE_DIR}/CHANGELOG.md"
        DESTINATION "${CMAKE_INSTALL_DATAROOTDIR}/doc/fabricd" COMPONENT fabricd)
install(FILES "${PROJECT_SOURCE_DIR}/deploy/README.md" RENAME DEPLOY.md
        DESTINATION "${CMAKE_INSTALL_DATAROOTDIR}/doc/fabricd" COMPONENT fabricd)

if(NOT FABRIC_LAUNCHER_ONLY)
  # Exported names: fabric::fabric, fabric::loggers (torch-free), and the pieces they link.
  set_target_properties(fabric_log PROPERTIES EXPORT_NAME log)
  set_target_properties(fabric_loggers PROPERTIES EXPORT_NAME loggers)
  set_target_properties(fabric_shm PROPERTIES EXPORT_NAME shm)
  set_target_properties(fabric_worker PROPERTIES EXPORT_NAME worker)
  set_target_properties(fabric_worker_client PROPERTIES EXPORT_NAME worker_client)
  set_target_properties(fabric_proto PROPERTIES EXPORT_NAME proto)
  install(TARGETS fabric fabric_loggers fabric_log fabric_shm fabric_worker fabric_worker_client fabric_proto
          EXPORT FabricTargets
          ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT dev
          INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
  # Links LibTorch, so it comes with the library rather than with fabricd.
  install(TARGETS fabric-consolidate RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT dev)
  install(DIRECTORY "${PROJECT_SOURCE_DIR}/libfabric/include/fabric"
          DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}" COMPONENT dev)
  install(EXPORT FabricTargets NAMESPACE fabric:: DESTINATION "${FABRIC_CMAKE_INSTALL_DIR}" COMPONENT dev)

  set(FABRIC_BUILT_WITH_TORCH_VERSION "${Torch_VERSION}")
  configure_package_config_file("${CMAKE_CURRENT_LIST_DIR}/FabricConfig.cmake.in"
    "${PROJECT_BINARY_DIR}/FabricConfig.cmake" INSTALL_DESTINATION "${FABRIC_CMAKE_INSTALL_DIR}")
  # 0.x: a minor release may change the API, so only the same minor version is compatible.
  write_basic_package_version_file("${PROJECT_BINARY_DIR}/FabricConfigVersion.cmake"
    VERSION "${fabric_VERSION}" COMPATIBILITY SameMinorVersion)
  install(FILES "${PROJECT_BINARY_DIR}/FabricConfig.cmake" "${PROJECT_BINARY_DIR}/FabricConfigVersion.cmake"
                "${CMAKE_CURRENT_LIST_DIR}/FabricTorchWheel.cmake"
          DESTINATION "${FABRIC_CMAKE_INSTALL_DIR}" COMPONENT dev)
endif()

include(FabricPackaging)
