#pragma once
/// \file h5_store.h
/// A small RAII wrapper over the HDF5 C++ API (H5Cpp.h), HighFive-like in shape: open a file, read and write whole
/// datasets as CPU tensors, variable-length string datasets, attributes on groups and datasets, and extendible
/// datasets that grow along dim 0 for streaming results. Plus AtomicPath, which writes to `<final>.partial` and
/// renames on commit so readers never see a half-written file.
///
/// Paths inside a file are HDF5 paths such as "/a/b/c"; a missing leading '/' is added, repeated and trailing '/'
/// are ignored. Every caller mistake and every file problem throws std::runtime_error with one line naming the file,
/// the object path, what was wrong and what was expected. HDF5's automatic error-stack printing is turned off.
///
/// Not thread-safe: serialise all use of the HDF5 library across threads (the Debian serial build has one global lock
/// at most).

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace H5 {
class H5File;
}  // namespace H5

namespace rala::h5 {

/// How File opens its path.
enum class Mode {
  read,        ///< existing file, read-only
  read_write,  ///< existing file opened for modification; created (empty) when it does not exist
  truncate,    ///< create, overwriting any existing file
};

/// An open HDF5 file. Closed when destroyed. Movable, not copyable.
class File {
 public:
  /// Opens `path` in `mode`. Throws std::runtime_error naming the path when the file is missing (Mode::read), is not
  /// an HDF5 file, or cannot be opened or created.
  File(const std::string& path, Mode mode);
  ~File();
  File(File&&) noexcept;
  File& operator=(File&&) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  /// The path the file was opened with.
  const std::string& path() const;
  /// The mode the file was opened with.
  Mode mode() const;

  /// Whether a dataset or group exists at `object_path` (nested paths like "/a/b/c"; "/" always exists). Never throws
  /// for a missing intermediate group or for a path that runs through a dataset: returns false.
  bool exists(const std::string& object_path) const;
  /// Sorted names of the direct children (groups and datasets) of the group at `group_path`. Throws when it is missing
  /// or not a group.
  std::vector<std::string> list(const std::string& group_path = "/") const;
  /// Creates the group at `group_path` and any missing parents (no-op when it exists); throws if a dataset is in the way.
  void create_group(const std::string& group_path);
  /// Whether `object_path` exists and is a dataset (false when missing or a group).
  bool is_dataset(const std::string& object_path) const;
  /// Whether `object_path` exists and is a group (false when missing or a dataset).
  bool is_group(const std::string& object_path) const;
  /// Current dimensions of the dataset at `dataset_path` ({} for a scalar dataset). Throws when missing or a group.
  std::vector<int64_t> shape(const std::string& dataset_path) const;

  /// Reads a dataset into a CPU tensor of the matching dtype (F32->kFloat32, F64->kFloat64, I64->kInt64,
  /// I32->kInt32, U8->kUInt8); other types throw. A scalar dataset gives a 0-d tensor.
  torch::Tensor read(const std::string& dataset_path) const;
  /// Rows [start, start + count) along dim 0 of a dataset of rank ≥ 1 (a hyperslab: only those rows are read, so
  /// a reader of a large dataset bounds its memory by `count`). Throws when the range is outside the dataset.
  torch::Tensor read_rows(const std::string& dataset_path, int64_t start, int64_t count) const;
  /// Writes a tensor (any of those dtypes; non-contiguous ok; made contiguous, on CPU) as a dataset; parent groups
  /// created on demand; overwrites an existing dataset of that name (the old one is unlinked; HDF5 does not reclaim
  /// its space). A 0-d tensor is written as a scalar dataset. When `compress` is true and numel > 0 the dataset is
  /// chunked (chunks up to ~1 MiB) and gzip(4)-compressed.
  void write(const std::string& dataset_path, const torch::Tensor& t, bool compress = false);

  /// Writes a 1-D dataset of variable-length UTF-8 strings (parents created, existing dataset replaced).
  void write_strings(const std::string& dataset_path, const std::vector<std::string>& values);
  /// Reads a string dataset (variable- or fixed-length; scalar or 1-D, higher ranks flattened row-major) into a vector.
  /// Fixed-length padding is stripped.
  std::vector<std::string> read_strings(const std::string& dataset_path) const;

  /// Creates an extendible dataset for streaming results: shape (0, rest_dims...), maxdims unlimited on dim 0, chunked
  /// (chunk_rows, rest_dims...) and gzip(4)-compressed unless `deflate` is false (floating-point values with full
  /// mantissas, such as singular values, shrink by ≈ 4 % for ≈ 50 MB/s of zlib). `dtype` is one of the read() dtypes;
  /// every rest dim and chunk_rows must be > 0. An existing dataset of that name is replaced; parent groups are
  /// created on demand.
  void create_extendible(const std::string& dataset_path, torch::ScalarType dtype,
                         const std::vector<int64_t>& rest_dims, int64_t chunk_rows = 64, bool deflate = true);
  /// Appends rows: `t` has shape (n, rest...) and the dtype of the dataset made by create_extendible; dim 0 grows by n
  /// and the rows are written at the end. n == 0 is a no-op. Throws on a shape or dtype mismatch or when the dataset
  /// is not extendible along dim 0. The dataset stays open until the file closes (or the dataset is replaced), so
  /// small appends fill a chunk in HDF5's chunk cache instead of recompressing it on every call.
  void append(const std::string& dataset_path, const torch::Tensor& t);

  /// Attributes on a group or dataset ("/" = root). Writing replaces an existing attribute of the same name.
  /// Strings are stored as scalar variable-length UTF-8, integers as I64, doubles as F64, vectors as 1-D.
  void set_attr(const std::string& object_path, const std::string& name, const std::string& value);
  void set_attr(const std::string& object_path, const std::string& name, const char* value);
  void set_attr(const std::string& object_path, const std::string& name, int64_t value);
  void set_attr(const std::string& object_path, const std::string& name, double value);
  void set_attr(const std::string& object_path, const std::string& name, const std::vector<int64_t>& value);
  void set_attr(const std::string& object_path, const std::string& name, const std::vector<double>& value);
  /// Whether the object at `object_path` has an attribute `name`. Throws when the object does not exist.
  bool has_attr(const std::string& object_path, const std::string& name) const;
  /// Sorted attribute names of the object at `object_path`.
  std::vector<std::string> attr_names(const std::string& object_path) const;
  /// A string attribute (fixed or variable-length; scalar or a single element).
  std::string attr_string(const std::string& object_path, const std::string& name) const;
  /// An integer attribute of any stored integer type (scalar or a single element).
  int64_t attr_int(const std::string& object_path, const std::string& name) const;
  /// A float or integer attribute (scalar or a single element), converted to double.
  double attr_double(const std::string& object_path, const std::string& name) const;
  /// An integer attribute, scalar (one element) or 1-D.
  std::vector<int64_t> attr_ints(const std::string& object_path, const std::string& name) const;
  /// A float or integer attribute, scalar (one element) or 1-D, converted to double.
  std::vector<double> attr_doubles(const std::string& object_path, const std::string& name) const;
  /// Any string, integer or float attribute as text, for comparisons and messages: a string as is, a number as
  /// printed with %lld / %.17g (so equal text = equal value), a 1-D array as "[a, b, c]".
  std::string attr_text(const std::string& object_path, const std::string& name) const;
  /// Copies attribute `name` of `from_path` in `from` onto `to_path` in this file: strings as variable-length UTF-8,
  /// integers as I64 and floats as F64, scalar or 1-D as stored (what set_attr writes).
  void copy_attr(const File& from, const std::string& from_path, const std::string& name, const std::string& to_path);

  /// Flushes all buffers of the file to disk.
  void flush();

 private:
  struct OpenDatasets;  ///< datasets append() keeps open, so their chunk caches live between appends
  void close_datasets() noexcept;
  /// Parent groups of `norm` created, an existing dataset there closed (if append() holds it) and unlinked.
  void prepare_slot(H5::H5File& f, const std::string& norm);
  std::string path_;
  Mode mode_;
  std::unique_ptr<H5::H5File> file_;
  std::unique_ptr<OpenDatasets> open_;
};

/// Convenience: whole-tensor read of one dataset from `file` (opened read-only).
torch::Tensor read_tensor(const std::string& file, const std::string& dataset_path);
/// Convenience: writes one dataset into `file` (opened read_write, created if missing).
void write_tensor(const std::string& file, const std::string& dataset_path, const torch::Tensor& t,
                  bool compress = false);

/// Atomic file creation: write to partial() (= final + ".partial"), then commit() renames it to the final path, so a
/// reader sees either no file or a complete one. If commit() is never called, the destructor removes the partial file.
/// A stale partial file left by an earlier crashed run is removed on construction. Close every File on partial()
/// before commit(). Movable (the moved-from object is disarmed), not copyable.
class AtomicPath {
 public:
  explicit AtomicPath(std::string final_path);
  ~AtomicPath();
  AtomicPath(AtomicPath&& other) noexcept;
  AtomicPath& operator=(AtomicPath&&) = delete;
  AtomicPath(const AtomicPath&) = delete;
  AtomicPath& operator=(const AtomicPath&) = delete;

  /// The final path given at construction.
  const std::string& final_path() const;
  /// final_path() + ".partial": where the caller writes.
  const std::string& partial() const;
  /// Whether commit() has succeeded.
  bool committed() const;
  /// Renames partial() to final_path() (std::filesystem::rename; replaces an existing final file). Throws
  /// std::runtime_error naming both paths when the partial file is missing, commit() already ran, or the rename fails.
  void commit();

 private:
  std::string final_;
  std::string partial_;
  bool committed_ = false;
};

}  // namespace rala::h5
