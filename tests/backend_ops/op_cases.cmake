# tandem_op_cases: the gtest-free half of the backend_ops harness (op cases, the case runner, the case builders,
# the perf case list and the support matrix), linked by test_backend_ops and by tandem-bench (whose `ops`
# subcommand times the same cases). Included from bench/ and tests/backend_ops/, whichever comes first, so that
# tandem-bench builds with TANDEM_BUILD_TESTS=OFF too.
if(NOT TARGET tandem_op_cases)
  set(_dir ${PROJECT_SOURCE_DIR}/tests/backend_ops)
  add_library(tandem_op_cases STATIC ${_dir}/op_case.cpp ${_dir}/case_builders.cpp ${_dir}/perf_cases.cpp
                                     ${_dir}/support.cpp)
  target_include_directories(tandem_op_cases PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(tandem_op_cases PUBLIC tandem)
endif()
