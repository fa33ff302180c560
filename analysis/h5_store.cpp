#include "analysis/h5_store.h"
#include "analysis/h5_vlen_check.h"

#include <cstdio>

#include <H5Cpp.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace rala::h5 {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error("h5: " + message); }

std::string quote_path(const std::string& s) { return "'" + s + "'"; }

/// "/a/b" form: leading '/', no repeated or trailing '/'; "" and "/" give "/".
std::string normalize(const std::string& object_path) {
  std::string out;
  std::string part;
  std::istringstream in(object_path);
  while (std::getline(in, part, '/')) {
    if (!part.empty()) out += "/" + part;
  }
  return out.empty() ? "/" : out;
}

/// "/a/b/c" -> {"/a", "/a/b"}.
std::vector<std::string> parent_prefixes(const std::string& norm) {
  std::vector<std::string> out;
  for (size_t pos = norm.find('/', 1); pos != std::string::npos; pos = norm.find('/', pos + 1)) {
    out.push_back(norm.substr(0, pos));
  }
  return out;
}

/// One supported tensor dtype and its HDF5 file (little-endian) and memory (native) types.
struct TypeMap {
  torch::ScalarType dtype;
  const char* name;
  const H5::PredType* file_type;
  const H5::PredType* mem_type;
};

bool supported(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32:
    case torch::kFloat64:
    case torch::kInt64:
    case torch::kInt32:
    case torch::kUInt8:
      return true;
    default:
      return false;
  }
}

TypeMap type_map(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32:
      return {dtype, "float32", &H5::PredType::IEEE_F32LE, &H5::PredType::NATIVE_FLOAT};
    case torch::kFloat64:
      return {dtype, "float64", &H5::PredType::IEEE_F64LE, &H5::PredType::NATIVE_DOUBLE};
    case torch::kInt64:
      return {dtype, "int64", &H5::PredType::STD_I64LE, &H5::PredType::NATIVE_INT64};
    case torch::kInt32:
      return {dtype, "int32", &H5::PredType::STD_I32LE, &H5::PredType::NATIVE_INT32};
    case torch::kUInt8:
      return {dtype, "uint8", &H5::PredType::STD_U8LE, &H5::PredType::NATIVE_UINT8};
    default:
      fail(std::string("unsupported tensor dtype ") + c10::toString(dtype) +
           "; expected float32, float64, int64, int32 or uint8");
  }
}

const char* kSupportedList = "float32, float64, int64, int32 or uint8";

/// Human-readable description of an HDF5 datatype, for error messages.
std::string describe(const H5::DataType& type) {
  const hid_t id = type.getId();
  const size_t size = H5Tget_size(id);
  switch (H5Tget_class(id)) {
    case H5T_INTEGER:
      return std::string(H5Tget_sign(id) == H5T_SGN_NONE ? "uint" : "int") + std::to_string(8 * size);
    case H5T_FLOAT:
      return "float" + std::to_string(8 * size);
    case H5T_STRING:
      return H5Tis_variable_str(id) > 0 ? "variable-length string" : "fixed-length string";
    case H5T_ENUM:
      return "enum";
    case H5T_COMPOUND:
      return "compound";
    case H5T_ARRAY:
      return "array";
    case H5T_VLEN:
      return "variable-length sequence";
    case H5T_BITFIELD:
      return "bitfield";
    case H5T_OPAQUE:
      return "opaque";
    case H5T_REFERENCE:
      return "reference";
    case H5T_TIME:
      return "time";
    default:
      return "unknown type";
  }
}

/// The tensor dtype stored in an HDF5 datatype, or nullopt when it is not one of the supported five.
std::optional<torch::ScalarType> dtype_of(const H5::DataType& type) {
  const hid_t id = type.getId();
  const size_t size = H5Tget_size(id);
  const H5T_class_t cls = H5Tget_class(id);
  if (cls == H5T_FLOAT) {
    if (size == 4) return torch::kFloat32;
    if (size == 8) return torch::kFloat64;
  } else if (cls == H5T_INTEGER) {
    const bool is_signed = H5Tget_sign(id) == H5T_SGN_2;
    if (is_signed && size == 8) return torch::kInt64;
    if (is_signed && size == 4) return torch::kInt32;
    if (!is_signed && size == 1) return torch::kUInt8;
  }
  return std::nullopt;
}

/// A variable-length UTF-8 string type.
H5::StrType vlen_utf8() {
  H5::StrType type(H5::PredType::C_S1, H5T_VARIABLE);
  type.setCset(H5T_CSET_UTF8);
  return type;
}

/// Chunk dims for a compressed dataset: the full shape, halving the largest dim until a chunk is at most ~1 MiB.
std::vector<hsize_t> chunk_dims(const std::vector<hsize_t>& dims, size_t element_size) {
  constexpr size_t kTarget = 1 << 20;
  std::vector<hsize_t> chunk = dims;
  auto bytes = [&] {
    size_t b = element_size;
    for (hsize_t d : chunk) b *= d;
    return b;
  };
  while (bytes() > kTarget) {
    auto it = std::max_element(chunk.begin(), chunk.end());
    if (*it <= 1) break;
    *it = (*it + 1) / 2;
  }
  return chunk;
}

/// Strips the padding of one fixed-length string element.
std::string strip_fixed(const char* data, size_t size, H5T_str_t pad) {
  std::string s(data, size);
  const size_t nul = s.find('\0');
  if (nul != std::string::npos) s.resize(nul);
  if (pad == H5T_STR_SPACEPAD) {
    const size_t last = s.find_last_not_of(' ');
    s.resize(last == std::string::npos ? 0 : last + 1);
  }
  return s;
}

/// Runs f, turning any H5::Exception into one runtime_error line starting with `what`.
template <class F>
auto translate(const std::string& what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const H5::Exception& e) {
    fail(what + " (HDF5: " + e.getFuncName() + ": " + e.getDetailMsg() + ")");
  }
}

/// Attributes larger than this do not fit an HDF5 (v1) object header.
constexpr size_t kMaxAttrBytes = 64000;

}  // namespace

// ------------------------------------------------------------------------------------------------------------------
// File: open / close

struct File::OpenDatasets {
  std::map<std::string, H5::DataSet> by_path;
};

void File::close_datasets() noexcept {
  if (!open_) return;
  for (auto& [name, ds] : open_->by_path) {
    try {
      ds.close();
    } catch (...) {
    }
  }
  open_->by_path.clear();
}

File::File(const std::string& path, Mode mode)
    : path_(path), mode_(mode), open_(std::make_unique<OpenDatasets>()) {
  H5::Exception::dontPrint();
  if (path.empty()) fail("cannot open '': empty file path");
  std::error_code ec;
  const bool present = fs::exists(path, ec);
  if (present && fs::is_directory(path, ec)) {
    fail("cannot open " + quote_path(path) + ": it is a directory, not a file");
  }

  auto check_signature = [&] {
    bool is_hdf5 = false;
    try {
      is_hdf5 = H5::H5File::isHdf5(path);
    } catch (const H5::Exception&) {
      is_hdf5 = false;
    }
    if (!is_hdf5) fail("cannot open " + quote_path(path) + ": not an HDF5 file (no HDF5 signature)");
  };

  try {
    switch (mode) {
      case Mode::read:
        if (!present) fail("cannot open " + quote_path(path) + " for reading: no such file");
        check_signature();
        if (const std::string why = detail::root_header_problem(path); !why.empty())
          fail("cannot open " + quote_path(path) + ": " + why);
        file_ = std::make_unique<H5::H5File>(path, H5F_ACC_RDONLY);
        break;
      case Mode::read_write:
        if (present) {
          check_signature();
          file_ = std::make_unique<H5::H5File>(path, H5F_ACC_RDWR);
        } else {
          file_ = std::make_unique<H5::H5File>(path, H5F_ACC_EXCL);
        }
        break;
      case Mode::truncate:
        file_ = std::make_unique<H5::H5File>(path, H5F_ACC_TRUNC);
        break;
    }
  } catch (const H5::Exception& e) {
    const bool creating = !present || mode == Mode::truncate;
    const std::string what = creating ? "cannot create " + quote_path(path)
                                      : "cannot open " + quote_path(path) +
                                            (mode == Mode::read ? " for reading" : " for writing");
    std::string why;
    const fs::path parent = fs::absolute(fs::path(path), ec).parent_path();
    if (creating && !fs::is_directory(parent, ec)) {
      why = "directory " + quote_path(parent.string()) + " does not exist";
    } else if (creating) {
      why = "directory not writable, or the file is open or locked elsewhere";
    } else {
      why = "corrupt, not readable/writable, or locked by another process";
    }
    fail(what + ": " + why + " (HDF5: " + e.getFuncName() + ": " + e.getDetailMsg() + ")");
  }
}

File::~File() {
  close_datasets();
  if (file_) {
    try {
      file_->close();
    } catch (...) {
    }
  }
}

File::File(File&&) noexcept = default;

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    close_datasets();
    if (file_) {
      try {
        file_->close();
      } catch (...) {
      }
    }
    path_ = std::move(other.path_);
    mode_ = other.mode_;
    file_ = std::move(other.file_);
    open_ = std::move(other.open_);
  }
  return *this;
}

const std::string& File::path() const { return path_; }
Mode File::mode() const { return mode_; }

// ------------------------------------------------------------------------------------------------------------------
// File: private helpers (free functions over the handle, kept out of the header)

namespace {

H5::H5File& handle(const std::unique_ptr<H5::H5File>& file) {
  if (!file) fail("this File object was moved from; it no longer refers to an open file");
  return *file;
}

bool link_exists(hid_t loc, const std::string& norm) {
  if (norm == "/") return true;
  for (const std::string& prefix : parent_prefixes(norm)) {
    if (H5Lexists(loc, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
  }
  if (H5Lexists(loc, norm.c_str(), H5P_DEFAULT) <= 0) return false;
  return H5Oexists_by_name(loc, norm.c_str(), H5P_DEFAULT) > 0;
}

/// H5O_TYPE_UNKNOWN when missing.
/// Where a file's HDF5 addresses start (the user block's size) and its address and length widths (superblock).
struct FileLayout {
  uint64_t base = 0;
  unsigned osz = 8, lsz = 8;
};
FileLayout file_layout(H5::H5File& f) {
  FileLayout l;
  const hid_t fcpl = H5Fget_create_plist(f.getId());
  if (fcpl < 0) return l;
  hsize_t userblock = 0;
  size_t osz = 8, lsz = 8;
  if (H5Pget_userblock(fcpl, &userblock) >= 0) l.base = userblock;
  if (H5Pget_sizes(fcpl, &osz, &lsz) >= 0) {
    l.osz = static_cast<unsigned>(osz);
    l.lsz = static_cast<unsigned>(lsz);
  }
  H5Pclose(fcpl);
  return l;
}

/// The header of the object a hard link names, checked in the file's bytes before libhdf5 loads it (h5_vlen_check.h:
/// libhdf5 1.10.8 leaks the partly built header when loading a corrupted one fails). Read-only files only.
/// Whether the file is open for reading only. The byte-level checks (h5_vlen_check.h) apply to those: a file being
/// written has headers in libhdf5's cache that are not on disk yet (and it is our own).
bool read_only(H5::H5File& file) {
  unsigned intent = 0;
  return H5Fget_intent(file.getId(), &intent) >= 0 && intent == H5F_ACC_RDONLY;
}

void check_object_header(H5::H5File& file, const std::string& norm) {
  if (!read_only(file)) return;
  H5L_info_t li;
  if (H5Lget_info(file.getId(), norm.c_str(), &li, H5P_DEFAULT) < 0 || li.type != H5L_TYPE_HARD) return;
  const FileLayout l = file_layout(file);
  const std::string name = file.getFileName();
  const std::string why = detail::object_header_problem(name, l.base, li.u.address, l.osz, l.lsz);
  if (!why.empty()) fail(quote_path(norm) + " in " + name + " cannot be opened: " + why);
}

H5O_type_t object_type(H5::H5File& file, const std::string& norm) {
  if (norm == "/") return H5O_TYPE_GROUP;
  if (!link_exists(file.getId(), norm)) return H5O_TYPE_UNKNOWN;
  check_object_header(file, norm);
  return file.childObjType(norm);
}

std::string in_file(const std::string& norm, const std::string& path) { return quote_path(norm) + " in " + path; }

H5::DataSet open_dataset(H5::H5File& file, const std::string& norm, const std::string& path) {
  const H5O_type_t type = object_type(file, norm);
  if (type == H5O_TYPE_UNKNOWN) fail(quote_path(norm) + " not found in " + path);
  if (type != H5O_TYPE_DATASET) fail(in_file(norm, path) + " is a group, not a dataset");
  return file.openDataSet(norm);
}

/// The tensor dtype of a dataset being read, or a one-line error naming what it holds instead.
torch::ScalarType tensor_dtype(const H5::DataSet& ds, const std::string& norm, const std::string& path) {
  const H5::DataType type = ds.getDataType();
  const auto dtype = dtype_of(type);
  if (!dtype) {
    fail("cannot read " + in_file(norm, path) + " as a tensor: it is " + describe(type) + "; expected " +
         kSupportedList);
  }
  return *dtype;
}

/// A group or dataset opened by path, usable through its H5Object base (whose destructor is protected).
struct ObjectRef {
  H5::Group group;
  H5::DataSet dataset;
  bool is_group = false;
  H5::H5Object* operator->() { return is_group ? static_cast<H5::H5Object*>(&group) : &dataset; }
};

ObjectRef open_object(H5::H5File& file, const std::string& norm, const std::string& path) {
  const H5O_type_t type = object_type(file, norm);
  if (type == H5O_TYPE_UNKNOWN) fail(quote_path(norm) + " not found in " + path);
  ObjectRef ref;
  if (type == H5O_TYPE_GROUP) {
    ref.group = file.openGroup(norm);
    ref.is_group = true;
  } else if (type == H5O_TYPE_DATASET) {
    ref.dataset = file.openDataSet(norm);
  } else {
    fail(in_file(norm, path) + " is neither a group nor a dataset");
  }
  return ref;
}

void require_writable(Mode mode, const std::string& norm, const std::string& path) {
  if (mode == Mode::read) {
    fail("cannot write " + quote_path(norm) + ": " + path +
         " is open read-only (use Mode::read_write or Mode::truncate)");
  }
}

std::string dataset_path_checked(const std::string& dataset_path, const std::string& path) {
  std::string norm = normalize(dataset_path);
  if (norm == "/") fail("'/' is the root group of " + path + ", not a dataset path");
  return norm;
}

/// Creates missing parent groups of `norm` and removes an existing dataset at `norm`, so a new one can be created.
void prepare_dataset_slot(H5::H5File& file, const std::string& norm, const std::string& path) {
  for (const std::string& prefix : parent_prefixes(norm)) {
    const H5O_type_t type = object_type(file, prefix);
    if (type == H5O_TYPE_UNKNOWN) {
      file.createGroup(prefix);
    } else if (type != H5O_TYPE_GROUP) {
      fail("cannot create " + in_file(norm, path) + ": " + quote_path(prefix) + " is a dataset, not a group");
    }
  }
  const H5O_type_t type = object_type(file, norm);
  if (type == H5O_TYPE_DATASET) {
    file.unlink(norm);
  } else if (type != H5O_TYPE_UNKNOWN) {
    fail("cannot write dataset " + in_file(norm, path) + ": a group of that name exists");
  }
}

std::vector<hsize_t> extent(const H5::DataSpace& space, std::vector<hsize_t>* maxdims = nullptr) {
  const int rank = space.getSimpleExtentNdims();
  std::vector<hsize_t> dims(static_cast<size_t>(std::max(rank, 0)));
  std::vector<hsize_t> maxd(dims.size());
  if (rank > 0) space.getSimpleExtentDims(dims.data(), maxd.data());
  if (maxdims) *maxdims = maxd;
  return dims;
}

std::string shape_string(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

struct AttrHandle {
  ObjectRef object;
  H5::Attribute attr;
  H5::DataType type;
  H5::DataSpace space;
  hssize_t npoints = 0;
  int rank = 0;
};

/// Refuses, with one line, an object whose attribute messages libhdf5 must not decode (h5_vlen_check.h): called before
/// every attribute lookup, which makes libhdf5 decode all of them.
void check_attribute_messages(H5::H5File& file, ObjectRef& object, const std::string& norm, const std::string& path) {
  if (!read_only(file)) return;
  H5O_info_t info;
  if (H5Oget_info2(object->getId(), &info, H5O_INFO_BASIC) < 0) return;  // libhdf5's own error follows
  const FileLayout l = file_layout(file);
  const std::string why = detail::attribute_messages_problem(path, l.base, info.addr, l.osz, l.lsz);
  if (!why.empty()) fail("the attributes of " + in_file(norm, path) + " cannot be read: " + why);
}

AttrHandle open_attr(H5::H5File& file, const std::string& norm, const std::string& name, const std::string& path) {
  AttrHandle h;
  h.object = open_object(file, norm, path);
  check_attribute_messages(file, h.object, norm, path);
  if (!h.object->attrExists(name)) fail("attribute " + quote_path(name) + " not found on " + in_file(norm, path));
  h.attr = h.object->openAttribute(name);
  h.type = h.attr.getDataType();
  h.space = h.attr.getSpace();
  h.npoints = h.space.getSimpleExtentNpoints();
  h.rank = h.space.getSimpleExtentNdims();
  return h;
}

std::string attr_where(const std::string& name, const std::string& norm, const std::string& path) {
  return "attribute " + quote_path(name) + " on " + in_file(norm, path);
}

/// Reads a numeric (H5T_INTEGER, or also H5T_FLOAT when allow_float) attribute of scalar or 1-D shape.
template <class T>
std::vector<T> read_numeric_attr(H5::H5File& file, const std::string& norm, const std::string& name,
                                 const std::string& path, bool allow_float, bool single, const H5::PredType& mem) {
  AttrHandle h = open_attr(file, norm, name, path);
  const H5T_class_t cls = h.type.getClass();
  const char* expected = allow_float ? "a float or integer number" : "an integer";
  if (!(cls == H5T_INTEGER || (allow_float && cls == H5T_FLOAT))) {
    fail(attr_where(name, norm, path) + " is " + describe(h.type) + "; expected " + expected);
  }
  if (single && h.npoints != 1) {
    fail(attr_where(name, norm, path) + " has " + std::to_string(h.npoints) + " elements; expected a single " +
         (allow_float ? "number" : "integer"));
  }
  if (!single && h.rank > 1) {
    fail(attr_where(name, norm, path) + " has rank " + std::to_string(h.rank) + "; expected a scalar or 1-D array");
  }
  std::vector<T> values(static_cast<size_t>(h.npoints));
  if (!values.empty()) h.attr.read(mem, values.data());
  return values;
}

}  // namespace

void File::prepare_slot(H5::H5File& f, const std::string& norm) {
  if (open_) open_->by_path.erase(norm);  // the dataset there is about to be replaced: close our append handle first
  prepare_dataset_slot(f, norm, path_);
}

// ------------------------------------------------------------------------------------------------------------------
// File: structure

bool File::exists(const std::string& object_path) const {
  H5::H5File& f = handle(file_);
  return link_exists(f.getId(), normalize(object_path));
}

std::vector<std::string> File::list(const std::string& group_path) const {
  H5::H5File& f = handle(file_);
  const std::string norm = normalize(group_path);
  return translate("cannot list " + in_file(norm, path_), [&] {
    const H5O_type_t type = object_type(f, norm);
    if (type == H5O_TYPE_UNKNOWN) fail(quote_path(norm) + " not found in " + path_);
    if (type != H5O_TYPE_GROUP) fail("cannot list " + in_file(norm, path_) + ": it is a dataset, not a group");
    H5::Group group = f.openGroup(norm);
    std::vector<std::string> names;
    const hsize_t n = group.getNumObjs();
    names.reserve(n);
    for (hsize_t i = 0; i < n; ++i) names.push_back(group.getObjnameByIdx(i));
    std::sort(names.begin(), names.end());
    return names;
  });
}

bool File::is_dataset(const std::string& object_path) const {
  H5::H5File& f = handle(file_);
  const std::string norm = normalize(object_path);
  return translate("cannot inspect " + in_file(norm, path_),
                   [&] { return object_type(f, norm) == H5O_TYPE_DATASET; });
}

bool File::is_group(const std::string& object_path) const {
  H5::H5File& f = handle(file_);
  const std::string norm = normalize(object_path);
  return translate("cannot inspect " + in_file(norm, path_), [&] { return object_type(f, norm) == H5O_TYPE_GROUP; });
}

std::vector<int64_t> File::shape(const std::string& dataset_path) const {
  H5::H5File& f = handle(file_);
  const std::string norm = dataset_path_checked(dataset_path, path_);
  return translate("cannot read the shape of " + in_file(norm, path_), [&] {
    H5::DataSet ds = open_dataset(f, norm, path_);
    const std::vector<hsize_t> dims = extent(ds.getSpace());
    return std::vector<int64_t>(dims.begin(), dims.end());
  });
}

// ------------------------------------------------------------------------------------------------------------------
// File: tensors

namespace {
/// Refuses to read `elements` × `element_size` bytes of a dataset that cannot hold them: a reader bounds its
/// allocation by the input. A dataset's values are its stored bytes expanded by at most deflate's ratio (1032:1;
/// shuffle and the other filters do not expand further), or fill values when nothing is stored (then 1 MiB at most).
void check_read_size(H5::DataSet& ds, const std::vector<hsize_t>& dims, size_t element_size, const std::string& what) {
  constexpr uint64_t kMaxRatio = 1032, kUnstored = uint64_t{1} << 20;
  const uint64_t stored = static_cast<uint64_t>(H5Dget_storage_size(ds.getId()));
  const uint64_t limit = stored == 0 ? kUnstored : (stored > (uint64_t{1} << 52) ? ~uint64_t{0} : stored * kMaxRatio);
  uint64_t bytes = element_size;
  for (hsize_t d : dims) {
    if (d != 0 && bytes > limit / d) {
      bytes = ~uint64_t{0};
      break;
    }
    bytes *= d;
  }
  if (bytes > limit)
    fail("cannot read " + what + ": its shape asks for " + (bytes == ~uint64_t{0} ? std::string("more than 2^64") :
                                                                 std::to_string(bytes)) +
         " bytes, more than the " + std::to_string(stored) + " bytes stored for it can hold");
}
}  // namespace

torch::Tensor File::read(const std::string& dataset_path) const {
  H5::H5File& f = handle(file_);
  const std::string norm = dataset_path_checked(dataset_path, path_);
  return translate("cannot read " + in_file(norm, path_), [&] {
    H5::DataSet ds = open_dataset(f, norm, path_);
    const auto dtype = tensor_dtype(ds, norm, path_);
    const H5::DataSpace space = ds.getSpace();
    if (space.getSimpleExtentType() == H5S_NULL) fail("cannot read " + in_file(norm, path_) + ": it has no data");
    const std::vector<hsize_t> dims = extent(space);
    check_read_size(ds, dims, c10::elementSize(dtype), in_file(norm, path_));
    const std::vector<int64_t> sizes(dims.begin(), dims.end());
    torch::Tensor out = torch::empty(sizes, torch::TensorOptions().dtype(dtype));
    if (out.numel() > 0) ds.read(out.data_ptr(), *type_map(dtype).mem_type);
    return out;
  });
}

torch::Tensor File::read_rows(const std::string& dataset_path, int64_t start, int64_t count) const {
  H5::H5File& f = handle(file_);
  const std::string norm = dataset_path_checked(dataset_path, path_);
  return translate("cannot read rows of " + in_file(norm, path_), [&] {
    H5::DataSet ds = open_dataset(f, norm, path_);
    const auto dtype = tensor_dtype(ds, norm, path_);
    H5::DataSpace space = ds.getSpace();
    const std::vector<hsize_t> dims = extent(space);
    if (dims.empty()) fail("cannot read rows of " + in_file(norm, path_) + ": it is a scalar dataset");
    if (start < 0 || count < 0 || static_cast<hsize_t>(start) + static_cast<hsize_t>(count) > dims[0]) {
      fail("cannot read rows [" + std::to_string(start) + ", " + std::to_string(start + count) + ") of " +
           in_file(norm, path_) + ": it has " + std::to_string(dims[0]) + " rows");
    }
    std::vector<hsize_t> wanted = dims;
    wanted[0] = static_cast<hsize_t>(count);
    check_read_size(ds, wanted, c10::elementSize(dtype), in_file(norm, path_));
    std::vector<int64_t> sizes(dims.begin(), dims.end());
    sizes[0] = count;
    torch::Tensor out = torch::empty(sizes, torch::TensorOptions().dtype(dtype));
    if (out.numel() == 0) return out;
    std::vector<hsize_t> offset(dims.size(), 0), shape = dims;
    offset[0] = static_cast<hsize_t>(start);
    shape[0] = static_cast<hsize_t>(count);
    space.selectHyperslab(H5S_SELECT_SET, shape.data(), offset.data());
    const H5::DataSpace mem(static_cast<int>(shape.size()), shape.data());
    ds.read(out.data_ptr(), *type_map(dtype).mem_type, mem, space);
    return out;
  });
}

void File::create_group(const std::string& group_path) {
  H5::H5File& f = handle(file_);
  const std::string norm = normalize(group_path);
  if (norm == "/") return;
  require_writable(mode_, norm, path_);
  translate("cannot create group " + in_file(norm, path_), [&] {
    for (const std::string& prefix : parent_prefixes(norm + "/x")) {
      const H5O_type_t type = object_type(f, prefix);
      if (type == H5O_TYPE_UNKNOWN) {
        f.createGroup(prefix);
      } else if (type != H5O_TYPE_GROUP) {
        fail("cannot create group " + in_file(norm, path_) + ": " + quote_path(prefix) + " is a dataset, not a group");
      }
    }
  });
}

void File::write(const std::string& dataset_path, const torch::Tensor& t, bool compress) {
  H5::H5File& f = handle(file_);
  const std::string norm = dataset_path_checked(dataset_path, path_);
  require_writable(mode_, norm, path_);
  if (!t.defined()) fail("cannot write " + in_file(norm, path_) + ": the tensor is undefined");
  if (!supported(t.scalar_type())) {
    fail("cannot write " + in_file(norm, path_) + ": tensor dtype " + c10::toString(t.scalar_type()) +
         " is not supported; expected " + kSupportedList);
  }
  const torch::Tensor data = t.detach().to(torch::kCPU).contiguous();
  const TypeMap map = type_map(data.scalar_type());
  translate("cannot write " + in_file(norm, path_), [&] {
    prepare_slot(f, norm);
    const std::vector<hsize_t> dims(data.sizes().begin(), data.sizes().end());
    const H5::DataSpace space = dims.empty() ? H5::DataSpace(H5S_SCALAR)
                                             : H5::DataSpace(static_cast<int>(dims.size()), dims.data());
    H5::DSetCreatPropList props;
    if (compress && data.numel() > 0 && !dims.empty()) {
      const std::vector<hsize_t> chunk = chunk_dims(dims, data.element_size());
      props.setChunk(static_cast<int>(chunk.size()), chunk.data());
      props.setDeflate(4);
    }
    H5::DataSet ds = f.createDataSet(norm, *map.file_type, space, props);
    if (data.numel() > 0) ds.write(data.data_ptr(), *map.mem_type);
  });
}

// ------------------------------------------------------------------------------------------------------------------
// File: strings

void File::write_strings(const std::string& dataset_path, const std::vector<std::string>& values) {
  H5::H5File& f = handle(file_);
  const std::string norm = dataset_path_checked(dataset_path, path_);
  require_writable(mode_, norm, path_);
  translate("cannot write strings " + in_file(norm, path_), [&] {
    prepare_slot(f, norm);
    const hsize_t n = values.size();
    const H5::DataSpace space(1, &n);
    const H5::StrType type = vlen_utf8();
    H5::DataSet ds = f.createDataSet(norm, type, space);
    std::vector<const char*> ptrs;
    ptrs.reserve(values.size());
    for (const std::string& v : values) ptrs.push_back(v.c_str());
    if (!ptrs.empty()) ds.write(ptrs.data(), type);
  });
}

std::vector<std::string> File::read_strings(const std::string& dataset_path) const {
  H5::H5File& f = handle(file_);
  const std::string norm = dataset_path_checked(dataset_path, path_);
  return translate("cannot read strings " + in_file(norm, path_), [&] {
    H5::DataSet ds = open_dataset(f, norm, path_);
    const H5::DataType type = ds.getDataType();
    if (type.getClass() != H5T_STRING) {
      fail("cannot read " + in_file(norm, path_) + " as strings: it is " + describe(type) + "; expected strings");
    }
    const H5::StrType file_type = ds.getStrType();
    const H5::DataSpace space = ds.getSpace();
    const size_t n = static_cast<size_t>(space.getSimpleExtentNpoints());
    std::vector<std::string> out;
    if (n == 0) return out;
    check_read_size(ds, {static_cast<hsize_t>(n)}, file_type.isVariableStr() ? sizeof(char*) : file_type.getSize(),
                    in_file(norm, path_));
    if (file_type.isVariableStr()) {
      // As for attributes (attr_string): the lengths and heap objects checked in the file's bytes before libhdf5
      // allocates and reads them — for contiguous data, the layout rala writes.
      const hid_t dcpl = H5Dget_create_plist(ds.getId());
      const bool contiguous = dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CONTIGUOUS;
      if (dcpl >= 0) H5Pclose(dcpl);
      const haddr_t offset = contiguous && read_only(f) ? H5Dget_offset(ds.getId()) : HADDR_UNDEF;
      if (offset != HADDR_UNDEF) {
        const FileLayout l = file_layout(f);
        const std::string why = detail::vlen_dataset_problem(path_, l.base, offset, n, l.osz, l.lsz);
        if (!why.empty()) fail(in_file(norm, path_) + " holds corrupted variable-length strings: " + why);
      }
      H5::StrType mem(H5::PredType::C_S1, H5T_VARIABLE);
      mem.setCset(file_type.getCset());
      out.reserve(n);
      std::vector<char*> buf(n, nullptr);
      ds.read(buf.data(), mem);
      for (char* s : buf) out.emplace_back(s ? s : "");
      H5::DataSet::vlenReclaim(buf.data(), mem, space);
    } else {
      const size_t size = file_type.getSize();
      std::vector<char> buf(n * size);
      ds.read(buf.data(), file_type);
      const H5T_str_t pad = file_type.getStrpad();
      for (size_t i = 0; i < n; ++i) out.push_back(strip_fixed(buf.data() + i * size, size, pad));
    }
    return out;
  });
}

// ------------------------------------------------------------------------------------------------------------------
// File: extendible datasets

void File::create_extendible(const std::string& dataset_path, torch::ScalarType dtype,
                             const std::vector<int64_t>& rest_dims, int64_t chunk_rows, bool deflate) {
  H5::H5File& f = handle(file_);
  const std::string norm = dataset_path_checked(dataset_path, path_);
  require_writable(mode_, norm, path_);
  if (!supported(dtype)) {
    fail("cannot create " + in_file(norm, path_) + ": dtype " + c10::toString(dtype) + " is not supported; expected " +
         kSupportedList);
  }
  if (chunk_rows <= 0) {
    fail("cannot create " + in_file(norm, path_) + ": chunk_rows is " + std::to_string(chunk_rows) + "; expected > 0");
  }
  for (int64_t d : rest_dims) {
    if (d <= 0) {
      fail("cannot create " + in_file(norm, path_) + ": rest_dims " + shape_string(rest_dims) +
           " has a dim <= 0; expected all > 0");
    }
  }
  const TypeMap map = type_map(dtype);
  translate("cannot create extendible dataset " + in_file(norm, path_), [&] {
    prepare_slot(f, norm);
    std::vector<hsize_t> dims{0};
    std::vector<hsize_t> maxdims{H5S_UNLIMITED};
    std::vector<hsize_t> chunk{static_cast<hsize_t>(chunk_rows)};
    for (int64_t d : rest_dims) {
      dims.push_back(static_cast<hsize_t>(d));
      maxdims.push_back(static_cast<hsize_t>(d));
      chunk.push_back(static_cast<hsize_t>(d));
    }
    const int rank = static_cast<int>(dims.size());
    const H5::DataSpace space(rank, dims.data(), maxdims.data());
    H5::DSetCreatPropList props;
    props.setChunk(rank, chunk.data());
    if (deflate) props.setDeflate(4);
    f.createDataSet(norm, *map.file_type, space, props);
  });
}

void File::append(const std::string& dataset_path, const torch::Tensor& t) {
  H5::H5File& f = handle(file_);
  const std::string norm = dataset_path_checked(dataset_path, path_);
  require_writable(mode_, norm, path_);
  if (!t.defined()) fail("cannot append to " + in_file(norm, path_) + ": the tensor is undefined");
  translate("cannot append to " + in_file(norm, path_), [&] {
    auto cached = open_->by_path.find(norm);
    if (cached == open_->by_path.end()) cached = open_->by_path.emplace(norm, open_dataset(f, norm, path_)).first;
    H5::DataSet& ds = cached->second;
    const H5::DataType type = ds.getDataType();
    const auto dtype = dtype_of(type);
    if (!dtype) fail("cannot append to " + in_file(norm, path_) + ": it is " + describe(type) + ", not a tensor type");
    if (*dtype != t.scalar_type()) {
      fail("cannot append to " + in_file(norm, path_) + ": tensor dtype " + c10::toString(t.scalar_type()) +
           " does not match the dataset's " + type_map(*dtype).name);
    }
    std::vector<hsize_t> maxdims;
    std::vector<hsize_t> dims = extent(ds.getSpace(), &maxdims);
    if (dims.empty() || maxdims[0] != H5S_UNLIMITED) {
      fail("cannot append to " + in_file(norm, path_) + ": it is not extendible along dim 0 (make it with "
           "create_extendible)");
    }
    std::vector<int64_t> expected(dims.begin(), dims.end());
    expected[0] = t.dim() > 0 ? t.size(0) : 0;
    if (t.dim() != static_cast<int64_t>(dims.size()) || t.sizes().vec() != expected) {
      std::vector<int64_t> want(dims.begin(), dims.end());
      std::string want_str = "(n";
      for (size_t i = 1; i < want.size(); ++i) want_str += ", " + std::to_string(want[i]);
      want_str += want.size() == 1 ? ",)" : ")";
      fail("cannot append to " + in_file(norm, path_) + ": tensor shape " + shape_string(t.sizes().vec()) +
           " does not match the dataset's rows; expected " + want_str);
    }
    const hsize_t n = static_cast<hsize_t>(t.size(0));
    if (n == 0) return;
    const torch::Tensor data = t.detach().to(torch::kCPU).contiguous();
    std::vector<hsize_t> start(dims.size(), 0);
    start[0] = dims[0];
    std::vector<hsize_t> count = dims;
    count[0] = n;
    std::vector<hsize_t> grown = dims;
    grown[0] += n;
    ds.extend(grown.data());
    H5::DataSpace file_space = ds.getSpace();
    file_space.selectHyperslab(H5S_SELECT_SET, count.data(), start.data());
    const H5::DataSpace mem_space(static_cast<int>(count.size()), count.data());
    ds.write(data.data_ptr(), *type_map(*dtype).mem_type, mem_space, file_space);
  });
}

// ------------------------------------------------------------------------------------------------------------------
// File: attributes

namespace {

/// Replaces attribute `name` on the object at `norm` with one of `type`/`space`, then writes `data` (if any elements).
void write_attr(H5::H5File& f, Mode mode, const std::string& path, const std::string& object_path,
                const std::string& name, const H5::DataType& file_type, const H5::DataSpace& space,
                const H5::DataType& mem_type, const void* data, size_t bytes) {
  const std::string norm = normalize(object_path);
  if (name.empty()) fail("cannot set an attribute with an empty name on " + in_file(norm, path));
  if (mode == Mode::read) {
    fail("cannot set attribute " + quote_path(name) + " on " + quote_path(norm) + ": " + path +
         " is open read-only (use Mode::read_write or Mode::truncate)");
  }
  if (bytes > kMaxAttrBytes) {
    fail("cannot set " + attr_where(name, norm, path) + ": " + std::to_string(bytes) +
         " bytes exceed the HDF5 attribute limit of ~64 KiB; store it as a dataset");
  }
  translate("cannot set " + attr_where(name, norm, path), [&] {
    ObjectRef object = open_object(f, norm, path);
    if (object->attrExists(name)) object->removeAttr(name);
    H5::Attribute attr = object->createAttribute(name, file_type, space);
    if (space.getSimpleExtentNpoints() > 0) attr.write(mem_type, data);
  });
}

}  // namespace

void File::set_attr(const std::string& object_path, const std::string& name, const std::string& value) {
  const H5::StrType type = vlen_utf8();
  const char* ptr = value.c_str();
  // Variable-length data lives in the global heap, so the object-header size limit does not apply: pass 0 bytes.
  write_attr(handle(file_), mode_, path_, object_path, name, type, H5::DataSpace(H5S_SCALAR), type, &ptr, 0);
}

void File::set_attr(const std::string& object_path, const std::string& name, const char* value) {
  if (value == nullptr) {
    fail("cannot set attribute " + quote_path(name) + " on " + in_file(normalize(object_path), path_) +
         ": the string is a null pointer");
  }
  set_attr(object_path, name, std::string(value));
}

void File::set_attr(const std::string& object_path, const std::string& name, int64_t value) {
  write_attr(handle(file_), mode_, path_, object_path, name, H5::PredType::STD_I64LE,
             H5::DataSpace(H5S_SCALAR), H5::PredType::NATIVE_INT64, &value, sizeof value);
}

void File::set_attr(const std::string& object_path, const std::string& name, double value) {
  write_attr(handle(file_), mode_, path_, object_path, name, H5::PredType::IEEE_F64LE,
             H5::DataSpace(H5S_SCALAR), H5::PredType::NATIVE_DOUBLE, &value, sizeof value);
}

void File::set_attr(const std::string& object_path, const std::string& name, const std::vector<int64_t>& value) {
  const hsize_t n = value.size();
  write_attr(handle(file_), mode_, path_, object_path, name, H5::PredType::STD_I64LE, H5::DataSpace(1, &n),
             H5::PredType::NATIVE_INT64, value.data(), n * sizeof(int64_t));
}

void File::set_attr(const std::string& object_path, const std::string& name, const std::vector<double>& value) {
  const hsize_t n = value.size();
  write_attr(handle(file_), mode_, path_, object_path, name, H5::PredType::IEEE_F64LE, H5::DataSpace(1, &n),
             H5::PredType::NATIVE_DOUBLE, value.data(), n * sizeof(double));
}

bool File::has_attr(const std::string& object_path, const std::string& name) const {
  H5::H5File& f = handle(file_);
  const std::string norm = normalize(object_path);
  return translate("cannot check " + attr_where(name, norm, path_), [&] {
    ObjectRef object = open_object(f, norm, path_);
    check_attribute_messages(f, object, norm, path_);
    return !name.empty() && object->attrExists(name);
  });
}

std::vector<std::string> File::attr_names(const std::string& object_path) const {
  H5::H5File& f = handle(file_);
  const std::string norm = normalize(object_path);
  return translate("cannot list attributes of " + in_file(norm, path_), [&] {
    ObjectRef object = open_object(f, norm, path_);
    check_attribute_messages(f, object, norm, path_);
    std::vector<std::string> names;
    const int n = object->getNumAttrs();
    for (int i = 0; i < n; ++i) names.push_back(object->openAttribute(static_cast<unsigned>(i)).getName());
    std::sort(names.begin(), names.end());
    return names;
  });
}

std::string File::attr_string(const std::string& object_path, const std::string& name) const {
  H5::H5File& f = handle(file_);
  const std::string norm = normalize(object_path);
  return translate("cannot read " + attr_where(name, norm, path_), [&] {
    AttrHandle h = open_attr(f, norm, name, path_);
    if (h.type.getClass() != H5T_STRING) {
      fail(attr_where(name, norm, path_) + " is " + describe(h.type) + "; expected a string");
    }
    if (h.npoints != 1) {
      fail(attr_where(name, norm, path_) + " has " + std::to_string(h.npoints) + " elements; expected one string");
    }
    const H5::StrType file_type = h.attr.getStrType();
    if (file_type.isVariableStr()) {
      // libhdf5 1.10.8 allocates the length the file declares before reading the string (and can loop on a corrupted
      // heap): check both in the file's own bytes first (h5_vlen_check.h).
      H5O_info_t info;
      if (read_only(f) && H5Oget_info2(h.object->getId(), &info, H5O_INFO_BASIC) >= 0) {
        const FileLayout l = file_layout(f);
        const std::string why = detail::vlen_attribute_problem(path_, l.base, info.addr, name, l.osz, l.lsz);
        if (!why.empty()) fail(attr_where(name, norm, path_) + " is a corrupted variable-length string: " + why);
      }
      H5::StrType mem(H5::PredType::C_S1, H5T_VARIABLE);
      mem.setCset(file_type.getCset());
      char* ptr = nullptr;
      h.attr.read(mem, &ptr);
      std::string out = ptr ? ptr : "";
      H5::DataSet::vlenReclaim(&ptr, mem, h.space);
      return out;
    }
    const size_t size = file_type.getSize();
    std::vector<char> buf(size);
    h.attr.read(file_type, buf.data());
    return strip_fixed(buf.data(), size, file_type.getStrpad());
  });
}

int64_t File::attr_int(const std::string& object_path, const std::string& name) const {
  H5::H5File& f = handle(file_);
  const std::string norm = normalize(object_path);
  return translate("cannot read " + attr_where(name, norm, path_), [&] {
    return read_numeric_attr<int64_t>(f, norm, name, path_, false, true, H5::PredType::NATIVE_INT64).front();
  });
}

double File::attr_double(const std::string& object_path, const std::string& name) const {
  H5::H5File& f = handle(file_);
  const std::string norm = normalize(object_path);
  return translate("cannot read " + attr_where(name, norm, path_), [&] {
    return read_numeric_attr<double>(f, norm, name, path_, true, true, H5::PredType::NATIVE_DOUBLE).front();
  });
}

std::vector<int64_t> File::attr_ints(const std::string& object_path, const std::string& name) const {
  H5::H5File& f = handle(file_);
  const std::string norm = normalize(object_path);
  return translate("cannot read " + attr_where(name, norm, path_), [&] {
    return read_numeric_attr<int64_t>(f, norm, name, path_, false, false, H5::PredType::NATIVE_INT64);
  });
}

std::vector<double> File::attr_doubles(const std::string& object_path, const std::string& name) const {
  H5::H5File& f = handle(file_);
  const std::string norm = normalize(object_path);
  return translate("cannot read " + attr_where(name, norm, path_), [&] {
    return read_numeric_attr<double>(f, norm, name, path_, true, false, H5::PredType::NATIVE_DOUBLE);
  });
}

std::string File::attr_text(const std::string& object_path, const std::string& name) const {
  H5::H5File& f = handle(file_);
  const std::string norm = normalize(object_path);
  H5T_class_t cls = H5T_NO_CLASS;
  int rank = 0;
  translate("cannot read " + attr_where(name, norm, path_), [&] {
    AttrHandle h = open_attr(f, norm, name, path_);
    cls = h.type.getClass();
    rank = h.rank;
  });
  if (cls == H5T_STRING) return attr_string(object_path, name);
  std::vector<std::string> items;
  if (cls == H5T_INTEGER) {
    for (int64_t v : attr_ints(object_path, name)) items.push_back(std::to_string(v));
  } else if (cls == H5T_FLOAT) {
    for (double v : attr_doubles(object_path, name)) {
      char buf[40];
      std::snprintf(buf, sizeof buf, "%.17g", v);
      items.push_back(buf);
    }
  } else {
    fail(attr_where(name, norm, path_) + " is neither a string nor a number");
  }
  if (rank == 0 && items.size() == 1) return items[0];
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + items[i];
  return out + "]";
}

void File::copy_attr(const File& from, const std::string& from_path, const std::string& name,
                     const std::string& to_path) {
  H5::H5File& src = handle(from.file_);
  const std::string norm = normalize(from_path);
  H5T_class_t cls = H5T_NO_CLASS;
  int rank = 0;
  translate("cannot read " + attr_where(name, norm, from.path()), [&] {
    AttrHandle h = open_attr(src, norm, name, from.path());
    cls = h.type.getClass();
    rank = h.rank;
  });
  if (cls == H5T_STRING) {
    set_attr(to_path, name, from.attr_string(from_path, name));
  } else if (cls == H5T_INTEGER) {
    const auto v = from.attr_ints(from_path, name);
    if (rank == 0 && v.size() == 1)
      set_attr(to_path, name, v[0]);
    else
      set_attr(to_path, name, v);
  } else if (cls == H5T_FLOAT) {
    const auto v = from.attr_doubles(from_path, name);
    if (rank == 0 && v.size() == 1)
      set_attr(to_path, name, v[0]);
    else
      set_attr(to_path, name, v);
  } else {
    fail("cannot copy " + attr_where(name, norm, from.path()) + ": it is neither a string nor a number");
  }
}

void File::flush() {
  H5::H5File& f = handle(file_);
  translate("cannot flush " + quote_path(path_), [&] { f.flush(H5F_SCOPE_GLOBAL); });
}

// ------------------------------------------------------------------------------------------------------------------
// Convenience

torch::Tensor read_tensor(const std::string& file, const std::string& dataset_path) {
  return File(file, Mode::read).read(dataset_path);
}

void write_tensor(const std::string& file, const std::string& dataset_path, const torch::Tensor& t, bool compress) {
  File(file, Mode::read_write).write(dataset_path, t, compress);
}

// ------------------------------------------------------------------------------------------------------------------
// AtomicPath

AtomicPath::AtomicPath(std::string final_path) : final_(std::move(final_path)) {
  if (final_.empty()) fail("AtomicPath needs a non-empty final path");
  partial_ = final_ + ".partial";
  std::error_code ec;
  fs::remove(partial_, ec);  // stale leftover from a crashed run
}

AtomicPath::~AtomicPath() {
  if (!committed_ && !partial_.empty()) {
    std::error_code ec;
    fs::remove(partial_, ec);
  }
}

AtomicPath::AtomicPath(AtomicPath&& other) noexcept
    : final_(std::move(other.final_)), partial_(std::move(other.partial_)), committed_(other.committed_) {
  other.committed_ = true;
  other.partial_.clear();
}

const std::string& AtomicPath::final_path() const { return final_; }
const std::string& AtomicPath::partial() const { return partial_; }
bool AtomicPath::committed() const { return committed_; }

void AtomicPath::commit() {
  if (committed_) fail("cannot commit " + quote_path(final_) + ": already committed");
  std::error_code ec;
  if (!fs::exists(partial_, ec)) {
    fail("cannot commit " + quote_path(final_) + ": " + quote_path(partial_) +
         " does not exist (nothing was written to it)");
  }
  fs::rename(partial_, final_, ec);
  if (ec) fail("cannot rename " + quote_path(partial_) + " to " + quote_path(final_) + ": " + ec.message());
  committed_ = true;
}

}  // namespace rala::h5
