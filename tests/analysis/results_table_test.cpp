// ResultsTable: the /table convention round-trips through HDF5 and CSV with units, descriptions, NaN for missing
// numbers; caller mistakes are refused with one line naming the column.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "analysis/h5_store.h"
#include "analysis/results_table.h"
#include "tests/test_util.h"

namespace rala {
namespace {

ResultsTable sample() {
  ResultsTable t;
  t.add_column("config", ColumnKind::text, "", "configuration name")
      .add_column("epochs", ColumnKind::integer, "", "epochs trained")
      .add_column("top1", ColumnKind::number, "%", "test top-1");
  t.add_row({{"config", std::string("RRSS")}, {"epochs", int64_t{3}}, {"top1", 81.25}});
  t.add_row({{"config", std::string("a,\"b\"")}, {"epochs", int64_t{-1}}});  // top1 missing -> NaN
  return t;
}

TEST(ResultsTable, RoundTripsThroughHdf5WithUnitsAndDescriptions) {
  test::TempDir dir;
  const std::string path = (dir.path / "t.h5").string();
  write_table_files(sample(), path, [](h5::File& f) { f.set_attr("/", "model", "ravlt_micro"); });
  ASSERT_FALSE(std::filesystem::exists(path + ".partial"));
  h5::File f(path, h5::Mode::read);
  EXPECT_EQ(f.attr_string("/", "model"), "ravlt_micro");
  EXPECT_EQ(f.shape("/table/top1"), std::vector<int64_t>{2});
  EXPECT_EQ(f.attr_string("/table/top1", "unit"), "%");
  EXPECT_EQ(f.attr_string("/table/epochs", "description"), "epochs trained");
  auto t = ResultsTable::read_h5(f);
  ASSERT_EQ(t.rows(), 2);
  ASSERT_EQ(t.columns().size(), 3u);
  EXPECT_EQ(t.columns()[0].name, "config");  // column order kept
  EXPECT_EQ(t.column("config").texts[1], "a,\"b\"");
  EXPECT_EQ(t.column("epochs").integers[1], -1);
  EXPECT_EQ(t.column("top1").numbers[0], 81.25);
  EXPECT_TRUE(std::isnan(t.column("top1").numbers[1]));
  EXPECT_EQ(t.column("top1").unit, "%");
}

TEST(ResultsTable, CsvBesideTheH5HasTheSameColumnsQuotedWhereNeeded) {
  test::TempDir dir;
  const std::string path = (dir.path / "t.h5").string();
  write_table_files(sample(), path);
  std::ifstream in(dir.path / "t.csv");
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "config,epochs,top1\nRRSS,3,81.25\n\"a,\"\"b\"\"\",-1,nan\n");
}

TEST(ResultsTable, RefusesUnknownColumnsWrongKindsAndMissingIntegers) {
  ResultsTable t = sample();
  EXPECT_THROW(t.add_row({{"config", std::string("x")}, {"epochs", int64_t{1}}, {"nope", 1.0}}), std::invalid_argument);
  EXPECT_THROW(t.add_row({{"config", 1.0}, {"epochs", int64_t{1}}}), std::invalid_argument);
  EXPECT_THROW(t.add_row({{"config", std::string("x")}}), std::invalid_argument);
  EXPECT_THROW(t.add_column("late", ColumnKind::number), std::invalid_argument);
  EXPECT_THROW(ResultsTable().add_column("a/b", ColumnKind::number), std::invalid_argument);
  EXPECT_EQ(t.rows(), 2);  // nothing appended by the refused rows
  try {
    t.column("missing");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("config, epochs, top1"), std::string::npos);
  }
}

TEST(ResultsTable, ReadingAFileWithoutATableNamesTheFile) {
  test::TempDir dir;
  const std::string path = (dir.path / "r.h5").string();
  { h5::File f(path, h5::Mode::truncate); f.set_attr("/", "x", int64_t{1}); }
  h5::File f(path, h5::Mode::read);
  try {
    ResultsTable::read_h5(f);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("r.h5"), std::string::npos);
  }
}

}  // namespace
}  // namespace rala
