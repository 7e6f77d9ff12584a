# ctest `install_and_find_package`: installs the built remat into a scratch
# prefix, then configures, builds and runs an outside project (consumer/) that
# does find_package(remat CONFIG REQUIRED) against that prefix only.
#
#   cmake -DSOURCE_DIR=<remat source> -DBUILD_DIR=<remat build> -DWORK_DIR=<scratch>
#         -DGENERATOR=<generator> -P run_install_test.cmake
#
# Optional: -DCONFIG=<Debug|Release|...> for multi-config build trees.
cmake_minimum_required(VERSION 3.25)

foreach(var SOURCE_DIR BUILD_DIR WORK_DIR GENERATOR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run_install_test.cmake: -D${var}=... is required")
  endif()
endforeach()

set(prefix ${WORK_DIR}/prefix)
set(consumer_src ${SOURCE_DIR}/tests/install/consumer)
set(consumer_build ${WORK_DIR}/consumer-build)

# A fresh prefix and consumer build each time, so nothing stale is found.
file(REMOVE_RECURSE ${prefix} ${consumer_build})
file(MAKE_DIRECTORY ${WORK_DIR})

# Runs one step; on a non-zero exit stops the test, printing the step's output.
function(run_step name)
  execute_process(COMMAND ${ARGN}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(JOIN " " cmdline ${ARGN})
    message(FATAL_ERROR "install test: step '${name}' failed (exit ${rc})\n"
                        "command: ${cmdline}\n--- stdout ---\n${out}\n--- stderr ---\n${err}")
  endif()
  message(STATUS "install test: ${name}: ok")
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

# Build the consumer like remat was built: same C++ compiler, same build type.
# (A sanitized remat exports the sanitizer link flags itself.)
set(cache_file ${BUILD_DIR}/CMakeCache.txt)
if(NOT EXISTS ${cache_file})
  message(FATAL_ERROR "install test: ${cache_file} not found: is BUILD_DIR a configured build tree?")
endif()
file(STRINGS ${cache_file} cache_lines REGEX "^(CMAKE_CXX_COMPILER|CMAKE_BUILD_TYPE):")
foreach(line IN LISTS cache_lines)
  if(line MATCHES "^CMAKE_CXX_COMPILER:[A-Z]+=(.+)$")
    set(remat_cxx_compiler "${CMAKE_MATCH_1}")
  elseif(line MATCHES "^CMAKE_BUILD_TYPE:[A-Z]+=(.+)$")
    set(remat_build_type "${CMAKE_MATCH_1}")
  endif()
endforeach()
if(NOT DEFINED CONFIG AND DEFINED remat_build_type)
  set(CONFIG ${remat_build_type})
endif()

set(config_args)
if(DEFINED CONFIG AND NOT CONFIG STREQUAL "")
  set(config_args --config ${CONFIG})
endif()

run_step(install ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix} ${config_args})

# The consumer gets only the prefix: no path into remat's source or build tree.
set(configure_args -S ${consumer_src} -B ${consumer_build} -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix})
if(DEFINED remat_cxx_compiler)
  list(APPEND configure_args -DCMAKE_CXX_COMPILER=${remat_cxx_compiler})
endif()
if(DEFINED CONFIG AND NOT CONFIG STREQUAL "")
  list(APPEND configure_args -DCMAKE_BUILD_TYPE=${CONFIG})
endif()
run_step(configure ${CMAKE_COMMAND} ${configure_args})
run_step(build ${CMAKE_COMMAND} --build ${consumer_build} ${config_args})

# Single-config generators put the binary at the top of the build tree;
# multi-config ones under a per-config folder.
set(app ${consumer_build}/remat_consumer)
if(NOT EXISTS ${app})
  file(GLOB_RECURSE candidates ${consumer_build}/*/remat_consumer ${consumer_build}/*/remat_consumer.exe)
  list(LENGTH candidates n)
  if(n EQUAL 0)
    message(FATAL_ERROR "install test: the consumer binary was not found under ${consumer_build}")
  endif()
  list(GET candidates 0 app)
endif()
run_step(run ${app})
message(STATUS "install test: consumer said:\n${step_output}")
