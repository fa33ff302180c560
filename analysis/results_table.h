#pragma once
/// \file results_table.h
/// The one table convention for training runs, ablations and benchmarks (ARCHITECTURE.md §4): an HDF5 group
/// `/table` holding one 1-D dataset per column, all of equal length, each with attrs `unit` and `description`; and a
/// CSV with the same columns (header = column names) written beside it.
///
///   ResultsTable t;
///   t.add_column("epoch", ColumnKind::integer, "", "epoch, 1-based");
///   t.add_column("test_top1", ColumnKind::number, "%", "top-1 accuracy on the test split");
///   t.add_row({{"epoch", int64_t{1}}, {"test_top1", 81.5}});
///   write_table_files(t, "run/metrics.h5", [](h5::File& f) { set_provenance(f); });   // + run/metrics.csv
///
/// Column kinds: number (float64; a missing value is NaN, written "nan" in CSV), integer (int64), text (strings).
/// Missing integers are refused (a row must fill every integer and text column).

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace rala {

namespace h5 {
class File;
}

enum class ColumnKind { number, integer, text };

/// One column: its metadata and its values (only the vector matching `kind` is used).
struct TableColumn {
  std::string name, unit, description;
  ColumnKind kind = ColumnKind::number;
  std::vector<double> numbers;
  std::vector<int64_t> integers;
  std::vector<std::string> texts;
};

using TableValue = std::variant<double, int64_t, std::string>;

class ResultsTable {
 public:
  /// Adds a column (only before the first row). Throws on a duplicate or empty name, or a name with ',', '"' or '/'.
  ResultsTable& add_column(const std::string& name, ColumnKind kind, const std::string& unit = "",
                           const std::string& description = "");
  /// Appends a row. Every key must name a column and carry a value of a matching kind (an int64_t is accepted for a
  /// number column). Number columns not given get NaN; integer and text columns must be given. Throws otherwise.
  void add_row(const std::map<std::string, TableValue>& values);

  int64_t rows() const { return rows_; }
  const std::vector<TableColumn>& columns() const { return columns_; }
  bool has_column(const std::string& name) const;
  /// The column called `name`; throws naming the missing column and the ones that exist.
  const TableColumn& column(const std::string& name) const;
  /// Cell as text, numbers with up to 10 significant digits ("nan" for NaN) — the CSV representation.
  std::string cell_text(const std::string& name, int64_t row) const;

  /// CSV text: header line of column names, one line per row; text cells quoted when they hold ',', '"' or newlines.
  std::string to_csv() const;
  /// Writes the table under `group` ("/table") of an open file (group created; existing columns replaced).
  void write_h5(h5::File& file, const std::string& group = "/table") const;
  /// Reads a table written by write_h5 (column order = the `columns` attr of the group when present, else sorted
  /// names). Throws one line naming the file when the group is missing, or columns are not 1-D or differ in length.
  static ResultsTable read_h5(const h5::File& file, const std::string& group = "/table");

 private:
  TableColumn& mutable_column(const std::string& name);
  std::vector<TableColumn> columns_;
  int64_t rows_ = 0;
};

/// Writes `table` to `h5_path` (group /table; `root_attrs` sets the root attributes, e.g. provenance) and to the same
/// path with extension ".csv", each atomically (written to `<path>.partial`, then renamed). Parent directories must
/// exist.
void write_table_files(const ResultsTable& table, const std::string& h5_path,
                       const std::function<void(h5::File&)>& root_attrs = {});

}  // namespace rala
