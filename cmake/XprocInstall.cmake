# Installs headers, the static and shared libraries, a CMake package (xproc::xproc) and xproc.pc.
include(CMakePackageConfigHelpers)
install(DIRECTORY include/xproc DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")
install(TARGETS xproc_shared xproc_static EXPORT xprocTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT xprocTargets NAMESPACE xproc:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/xproc)
configure_package_config_file(cmake/xprocConfig.cmake.in ${PROJECT_BINARY_DIR}/xprocConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/xproc)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/xprocConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/xprocConfig.cmake ${PROJECT_BINARY_DIR}/xprocConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/xproc)
# The .pc file finds its prefix relative to itself, so an installed tree can be moved.
file(RELATIVE_PATH xproc_pc_to_prefix /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
string(REGEX REPLACE "/$" "" xproc_pc_to_prefix "${xproc_pc_to_prefix}")
configure_file(cmake/xproc.pc.in ${PROJECT_BINARY_DIR}/xproc.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/xproc.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
