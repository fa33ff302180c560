# reports/: figures (gnuplot), tables (md/tex/csv), report.html; the `rala report` subcommand.
add_library(rala_reports STATIC
  reports/report.cpp)
target_link_libraries(rala_reports PUBLIC rala_analysis)
rala_target(rala_reports)
target_sources(rala_experiments PRIVATE experiments/report.cpp)
target_link_libraries(rala_experiments PUBLIC rala_reports)
