#include "analysis/results_table.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "analysis/h5_store.h"

namespace rala {

namespace {

std::string kind_name(ColumnKind k) {
  switch (k) {
    case ColumnKind::number: return "number";
    case ColumnKind::integer: return "integer";
    case ColumnKind::text: return "text";
  }
  return "?";
}

std::string format_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

std::string csv_quote(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += (c == '"') ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

}  // namespace

ResultsTable& ResultsTable::add_column(const std::string& name, ColumnKind kind, const std::string& unit,
                                       const std::string& description) {
  if (name.empty() || name.find_first_of(",\"/\n") != std::string::npos)
    throw std::invalid_argument("table column name '" + name + "' must be non-empty without ',', '\"', '/' or newlines");
  if (has_column(name)) throw std::invalid_argument("table column '" + name + "' added twice");
  if (rows_ > 0) throw std::invalid_argument("table column '" + name + "' added after rows were added");
  TableColumn c;
  c.name = name;
  c.kind = kind;
  c.unit = unit;
  c.description = description;
  columns_.push_back(std::move(c));
  return *this;
}

bool ResultsTable::has_column(const std::string& name) const {
  for (const auto& c : columns_)
    if (c.name == name) return true;
  return false;
}

const TableColumn& ResultsTable::column(const std::string& name) const {
  for (const auto& c : columns_)
    if (c.name == name) return c;
  std::string names;
  for (const auto& c : columns_) names += (names.empty() ? "" : ", ") + c.name;
  throw std::invalid_argument("table has no column '" + name + "' (columns: " + names + ")");
}

TableColumn& ResultsTable::mutable_column(const std::string& name) {
  return const_cast<TableColumn&>(static_cast<const ResultsTable*>(this)->column(name));
}

void ResultsTable::add_row(const std::map<std::string, TableValue>& values) {
  for (const auto& [name, value] : values) {
    const auto& c = column(name);  // throws for unknown names
    const bool ok = (c.kind == ColumnKind::number && !std::holds_alternative<std::string>(value)) ||
                    (c.kind == ColumnKind::integer && std::holds_alternative<int64_t>(value)) ||
                    (c.kind == ColumnKind::text && std::holds_alternative<std::string>(value));
    if (!ok) throw std::invalid_argument("table column '" + name + "' holds " + kind_name(c.kind) + " values");
  }
  for (const auto& c : columns_)
    if (c.kind != ColumnKind::number && !values.count(c.name))
      throw std::invalid_argument("table row lacks a value for " + kind_name(c.kind) + " column '" + c.name + "'");
  for (auto& c : columns_) {
    auto it = values.find(c.name);
    switch (c.kind) {
      case ColumnKind::number:
        if (it == values.end())
          c.numbers.push_back(std::numeric_limits<double>::quiet_NaN());
        else if (auto i = std::get_if<int64_t>(&it->second))
          c.numbers.push_back(static_cast<double>(*i));
        else
          c.numbers.push_back(std::get<double>(it->second));
        break;
      case ColumnKind::integer: c.integers.push_back(std::get<int64_t>(it->second)); break;
      case ColumnKind::text: c.texts.push_back(std::get<std::string>(it->second)); break;
    }
  }
  ++rows_;
}

std::string ResultsTable::cell_text(const std::string& name, int64_t row) const {
  const auto& c = column(name);
  if (row < 0 || row >= rows_)
    throw std::out_of_range("table row " + std::to_string(row) + " out of range [0, " + std::to_string(rows_) + ")");
  switch (c.kind) {
    case ColumnKind::number: return format_number(c.numbers[row]);
    case ColumnKind::integer: return std::to_string(c.integers[row]);
    case ColumnKind::text: return c.texts[row];
  }
  return "";
}

std::string ResultsTable::to_csv() const {
  std::ostringstream out;
  for (size_t j = 0; j < columns_.size(); ++j) out << (j ? "," : "") << columns_[j].name;
  out << "\n";
  for (int64_t r = 0; r < rows_; ++r) {
    for (size_t j = 0; j < columns_.size(); ++j) out << (j ? "," : "") << csv_quote(cell_text(columns_[j].name, r));
    out << "\n";
  }
  return out.str();
}

void ResultsTable::write_h5(h5::File& file, const std::string& group) const {
  file.create_group(group);
  std::vector<std::string> order;
  for (const auto& c : columns_) {
    const std::string path = group + "/" + c.name;
    switch (c.kind) {
      case ColumnKind::number:
        file.write(path, torch::tensor(c.numbers, torch::kFloat64).reshape({rows_}));
        break;
      case ColumnKind::integer:
        file.write(path, torch::tensor(c.integers, torch::kInt64).reshape({rows_}));
        break;
      case ColumnKind::text: file.write_strings(path, c.texts); break;
    }
    file.set_attr(path, "unit", c.unit);
    file.set_attr(path, "description", c.description);
    order.push_back(c.name);
  }
  std::string joined;
  for (const auto& n : order) joined += (joined.empty() ? "" : ",") + n;
  file.set_attr(group, "columns", joined);
  file.set_attr(group, "rows", rows_);
}

ResultsTable ResultsTable::read_h5(const h5::File& file, const std::string& group) {
  if (!file.is_group(group))
    throw std::runtime_error("'" + file.path() + "' is not a results table (no group " + group + ")");
  std::vector<std::string> names;
  if (file.has_attr(group, "columns")) {
    std::stringstream ss(file.attr_string(group, "columns"));
    std::string n;
    while (std::getline(ss, n, ','))
      if (!n.empty()) names.push_back(n);
  } else {
    names = file.list(group);
  }
  ResultsTable t;
  int64_t rows = -1;
  for (const auto& n : names) {
    const std::string path = group + "/" + n;
    if (!file.is_dataset(path))
      throw std::runtime_error("'" + file.path() + "': table column " + path + " is missing or not a dataset");
    auto shape = file.shape(path);
    if (shape.size() != 1)
      throw std::runtime_error("'" + file.path() + "': table column " + path + " must be 1-D");
    if (rows >= 0 && shape[0] != rows)
      throw std::runtime_error("'" + file.path() + "': table column " + path + " has " + std::to_string(shape[0]) +
                               " rows, expected " + std::to_string(rows));
    rows = shape[0];
    TableColumn c;
    c.name = n;
    if (file.has_attr(path, "unit")) c.unit = file.attr_string(path, "unit");
    if (file.has_attr(path, "description")) c.description = file.attr_string(path, "description");
    bool is_text = false;
    try {
      auto v = file.read(path);
      if (v.is_floating_point()) {
        c.kind = ColumnKind::number;
        v = v.to(torch::kFloat64).contiguous();
        c.numbers.assign(v.data_ptr<double>(), v.data_ptr<double>() + v.numel());
      } else {
        c.kind = ColumnKind::integer;
        v = v.to(torch::kInt64).contiguous();
        c.integers.assign(v.data_ptr<int64_t>(), v.data_ptr<int64_t>() + v.numel());
      }
    } catch (const std::runtime_error&) {
      is_text = true;
    }
    if (is_text) {
      c.kind = ColumnKind::text;
      c.texts = file.read_strings(path);
    }
    t.columns_.push_back(std::move(c));
  }
  t.rows_ = std::max<int64_t>(rows, 0);
  return t;
}

void write_table_files(const ResultsTable& table, const std::string& h5_path,
                       const std::function<void(h5::File&)>& root_attrs) {
  const std::string csv_path = std::filesystem::path(h5_path).replace_extension(".csv").string();
  h5::AtomicPath h5_target(h5_path);
  h5::AtomicPath csv_target(csv_path);
  {
    h5::File f(h5_target.partial(), h5::Mode::truncate);
    if (root_attrs) root_attrs(f);
    table.write_h5(f);
  }
  {
    std::ofstream out(csv_target.partial());
    out << table.to_csv();
    out.close();
    if (!out) throw std::runtime_error("cannot write '" + csv_target.partial() + "'");
  }
  h5_target.commit();
  csv_target.commit();
}

}  // namespace rala
