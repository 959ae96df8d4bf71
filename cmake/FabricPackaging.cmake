# Debian packages through CPack (cpack -G DEB in the build folder, or scripts/package):
#   fabricd        the daemon; its shared-library dependencies come from dpkg-shlibdeps
#   libfabric-dev  headers, static libraries and the CMake package; it depends on the -dev
#                  packages whose CMake packages FabricConfig.cmake finds again. LibTorch is
#                  not a Debian package here: the user's torch wheel provides it.
set(CPACK_PACKAGE_NAME fabric)
set(CPACK_PACKAGE_VENDOR "Fabric for C++")
set(CPACK_PACKAGE_VERSION "${fabric_VERSION}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Lightning Fabric for LibTorch, and the fabricd launcher daemon")
set(CPACK_PACKAGE_CONTACT "Fabric for C++ developers <fabric@localhost>")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_DIRECTORY "${PROJECT_BINARY_DIR}/packages")

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # NAME_VERSION_ARCH.deb
set(CPACK_DEBIAN_PACKAGE_SECTION devel)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://lightning.ai/docs/fabric")

set(CPACK_DEBIAN_FABRICD_PACKAGE_NAME fabricd)
set(CPACK_DEBIAN_FABRICD_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_FABRICD_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_FABRICD_PACKAGE_CONTROL_EXTRA "${PROJECT_SOURCE_DIR}/deploy/debian/postinst")
set(CPACK_DEBIAN_FABRICD_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_COMPONENT_FABRICD_DESCRIPTION
    "fabricd spawns and supervises the rank processes of distributed training jobs\n"
    "One binary: `fabricd run` on one machine; `fabricd serve` (the coordinator) and\n"
    "`fabricd agent` (one per node) across machines, with job submission over gRPC.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libfabric-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
    "libgrpc++-dev, libprotobuf-dev, libspdlog-dev, libfmt-dev, zlib1g-dev")
set(CPACK_DEBIAN_DEV_PACKAGE_RECOMMENDS fabricd)
set(CPACK_COMPONENT_DEV_DESCRIPTION
    "libfabric: Lightning Fabric for LibTorch (headers, static libraries, CMake package)\n"
    "find_package(Fabric CONFIG REQUIRED) gives fabric::fabric. LibTorch itself comes from\n"
    "the torch wheel the library was built against (see /usr/share/doc/libfabric-dev).")

if(FABRIC_LAUNCHER_ONLY)
  set(CPACK_COMPONENTS_ALL fabricd)
else()
  set(CPACK_COMPONENTS_ALL fabricd dev)
endif()
include(CPack)
