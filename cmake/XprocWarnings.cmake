# Compiler flags every xproc target gets: warnings, sanitizers.
add_library(xproc_build_flags INTERFACE)
target_compile_options(xproc_build_flags INTERFACE
  -Wall -Wextra -Wpedantic -Wconversion -Wsign-conversion -Wshadow -Wnon-virtual-dtor
  -Wold-style-cast -Wcast-align -Wnull-dereference -Wdouble-promotion -Wformat=2)
if(XPROC_WERROR)
  target_compile_options(xproc_build_flags INTERFACE -Werror)
endif()
if(XPROC_SANITIZE)
  target_compile_options(xproc_build_flags INTERFACE -fsanitize=${XPROC_SANITIZE} -fno-omit-frame-pointer
                                                     -fno-sanitize-recover=all)
  target_link_options(xproc_build_flags INTERFACE -fsanitize=${XPROC_SANITIZE})
  if(XPROC_SANITIZE MATCHES "thread")
    target_compile_definitions(xproc_build_flags INTERFACE XPROC_TSAN=1)
  endif()
endif()
