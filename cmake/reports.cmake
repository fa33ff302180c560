# reports/: figures (gnuplot), tables (md/tex/csv), report.html; the `rala report` subcommand.
add_library(rala_reports STATIC
  reports/report_inputs.cpp
  reports/tables.cpp
  reports/gnuplot.cpp
  reports/figures.cpp
  reports/report.cpp)
target_link_libraries(rala_reports PUBLIC rala_analysis)
rala_target(rala_reports)
target_sources(rala_experiments PRIVATE experiments/report.cpp)
target_link_libraries(rala_experiments PUBLIC rala_reports)

if(RALA_BUILD_TESTS)
  rala_add_tests(rala_tests_reports
    tests/reports/report_test.cpp)
  # Writes the table fixtures of tests/data/report (see make_fixtures.sh); built on demand only.
  add_executable(rala_make_report_fixtures EXCLUDE_FROM_ALL tests/reports/make_table_fixtures.cpp)
  target_link_libraries(rala_make_report_fixtures PRIVATE rala_experiments)
  rala_target(rala_make_report_fixtures)
endif()
