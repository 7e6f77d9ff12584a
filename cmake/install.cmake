# `cmake --install` puts headers, the library and a CMake package in the
# prefix, so an outside project does find_package(remat CONFIG REQUIRED) and
# links remat::remat.
#
# remat is a static library by default, so its PRIVATE link dependencies
# (OpenMP, BLAS, and oneDNN and CUDA when built) travel in the exported link interface as
# $<LINK_ONLY:...>; rematConfig.cmake finds them again before loading the
# targets. The warnings target remat_warnings is linked only as
# $<BUILD_INTERFACE:...>, so it is not installed: a consumer never sees it and
# never inherits remat's warning flags.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(REMAT_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/remat)

# A sanitized static remat references the ASan/UBSan runtimes, so whatever
# links the installed library must link them too.
if(REMAT_SANITIZE)
  target_link_options(remat INTERFACE $<INSTALL_INTERFACE:-fsanitize=address,undefined>)
endif()

install(TARGETS remat EXPORT rematTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/remat DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT rematTargets NAMESPACE remat:: DESTINATION ${REMAT_INSTALL_CMAKEDIR})

# Values the package config needs to find remat's dependencies the same way.
get_target_property(REMAT_LIBRARY_TYPE remat TYPE)
configure_package_config_file(cmake/rematConfig.cmake.in
  ${PROJECT_BINARY_DIR}/rematConfig.cmake INSTALL_DESTINATION ${REMAT_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/rematConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/rematConfig.cmake ${PROJECT_BINARY_DIR}/rematConfigVersion.cmake
        DESTINATION ${REMAT_INSTALL_CMAKEDIR})
