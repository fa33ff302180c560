#include "analysis/h5_vlen_check.h"

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <vector>

namespace rala::h5::detail {
namespace {

/// Bounded random access to the file: every read is checked against its size.
class Bytes {
 public:
  explicit Bytes(const std::string& path) : in_(path, std::ios::binary) {
    if (in_) {
      in_.seekg(0, std::ios::end);
      size_ = static_cast<uint64_t>(in_.tellg());
    }
  }
  bool ok() const { return static_cast<bool>(in_); }
  uint64_t size() const { return size_; }
  /// n bytes at `at`, or false when they are not all inside the file.
  bool read(uint64_t at, uint64_t n, std::vector<unsigned char>& out) {
    if (at > size_ || n > size_ - at) return false;
    out.resize(static_cast<size_t>(n));
    in_.clear();
    in_.seekg(static_cast<std::streamoff>(at));
    in_.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(n));
    return static_cast<bool>(in_);
  }

 private:
  std::ifstream in_;
  uint64_t size_ = 0;
};

/// Little-endian unsigned integer of n bytes at p[at]; false when past `end`.
bool le(const std::vector<unsigned char>& p, size_t at, unsigned n, uint64_t& out) {
  if (at > p.size() || n > p.size() - at || n > 8) return false;
  out = 0;
  for (unsigned i = 0; i < n; ++i) out |= static_cast<uint64_t>(p[at + i]) << (8 * i);
  return true;
}

uint64_t pad8(uint64_t x) { return (x + 7) / 8 * 8; }

struct Found {
  bool found = false;
  uint64_t length = 0, collection = 0, index = 0;
};

/// The attribute message body `m`: if it is the attribute `name` of a variable-length string type, its first
/// element's (length, collection, index). Messages of other attributes are skipped (libhdf5 decodes each attribute
/// only when it is read); returns false, with the reason, when this attribute's own message is malformed.
bool parse_attribute(const std::vector<unsigned char>& m, const std::string& name, unsigned osz, Found& f,
                     std::string& why) {
  if (m.size() < 8) return true;
  const unsigned version = m[0];
  if (version < 1 || version > 3) return true;
  uint64_t name_size = 0, dt_size = 0, ds_size = 0;
  le(m, 2, 2, name_size);
  le(m, 4, 2, dt_size);
  le(m, 6, 2, ds_size);
  const size_t name_at = version == 3 ? 9 : 8;
  // The stored name includes its terminating NUL.
  if (name_size != name.size() + 1 || name_at + name.size() > m.size() ||
      !std::equal(name.begin(), name.end(), m.begin() + static_cast<std::ptrdiff_t>(name_at),
                  [](char a, unsigned char b) { return static_cast<unsigned char>(a) == b; }))
    return true;  // another attribute
  const auto step = [&](uint64_t n) { return version == 1 ? pad8(n) : n; };
  const uint64_t dt_at = name_at + step(name_size), ds_at = dt_at + step(dt_size), data_at = ds_at + step(ds_size);
  const uint64_t element = 4 + osz + 4;  // a variable-length element in the file: length, collection, index
  if (dt_size < 8 || data_at > m.size() || m.size() - data_at < element) {
    if (dt_at + 8 <= m.size() && (m[dt_at] & 0x0F) != 9) return true;  // not variable-length: not this check's
    why = "its attribute message of " + std::to_string(m.size()) + " bytes declares a name of " +
          std::to_string(name_size) + ", a datatype of " + std::to_string(dt_size) + " and a dataspace of " +
          std::to_string(ds_size) + " bytes, which leave no room for its value";
    return false;
  }
  const unsigned cls = m[dt_at] & 0x0F;
  const unsigned vlen_type = m[dt_at + 1] & 0x0F;
  if (cls != 9 || vlen_type != 1) return true;  // not a variable-length string: libhdf5 reads fixed sizes
  f.found = true;
  le(m, data_at, 4, f.length);
  le(m, data_at + 4, osz, f.collection);
  le(m, data_at + 4 + osz, 4, f.index);
  return true;
}

/// Called with each attribute message's body; returns false (with `why`) to stop with an error, sets `done` to stop.
using AttributeVisitor = std::function<bool(const std::vector<unsigned char>& body, bool& done, std::string& why)>;

/// Walks the messages of one object header chunk; appends continuation chunks to `todo`.
bool walk_chunk(const std::vector<unsigned char>& c, size_t begin, size_t end, bool v2, bool creation_order,
                unsigned osz, unsigned lsz, std::vector<std::pair<uint64_t, uint64_t>>& todo,
                const AttributeVisitor& visit, bool& done, std::string& why) {
  size_t at = begin;
  const size_t header = v2 ? (creation_order ? 6 : 4) : 8;
  while (at + header <= end && !done) {
    uint64_t type = 0, size = 0;
    if (v2) {
      le(c, at, 1, type);
      le(c, at + 1, 2, size);
    } else {
      le(c, at, 2, type);
      le(c, at + 2, 2, size);
    }
    const size_t body = at + header;
    if (size > end - body) {
      why = "an object header message runs past the end of its chunk";
      return false;
    }
    if (type == 0x10) {  // continuation: (offset, length)
      uint64_t off = 0, len = 0;
      if (!le(c, body, osz, off) || !le(c, body + osz, lsz, len)) {
        why = "a continuation message is truncated";
        return false;
      }
      todo.emplace_back(off, len);
    } else if (type == 0x0C) {
      const std::vector<unsigned char> m(c.begin() + static_cast<std::ptrdiff_t>(body),
                                         c.begin() + static_cast<std::ptrdiff_t>(body + size));
      if (!visit(m, done, why)) return false;
    }
    at = body + static_cast<size_t>(size);
  }
  return true;
}

/// Every chunk of the object header at `header_addr` (+ base), continuations followed once each within the file;
/// "" or why the header cannot be walked (or what `visit` reported).
std::string walk_header(Bytes& file, uint64_t base, uint64_t header_addr, unsigned osz, unsigned lsz,
                        const AttributeVisitor& visit) {
  const std::string corrupt = "its object header is corrupted: ";
  std::string why;
  bool done = false;
  std::vector<unsigned char> buf;
  header_addr += base;
  if (!file.read(header_addr, 4, buf)) return corrupt + "it starts outside the file";
  std::vector<std::pair<uint64_t, uint64_t>> todo;
  bool v2 = false, creation_order = false;
  if (buf[0] == 'O' && buf[1] == 'H' && buf[2] == 'D' && buf[3] == 'R') {
    v2 = true;
    if (!file.read(header_addr, 6, buf)) return corrupt + "it ends outside the file";
    const unsigned flags = buf[5];
    creation_order = (flags & 0x04) != 0;
    size_t prefix = 6 + ((flags & 0x20) ? 16 : 0) + ((flags & 0x10) ? 4 : 0);
    const unsigned width = 1u << (flags & 0x03);
    if (!file.read(header_addr + prefix, width, buf)) return corrupt + "it ends outside the file";
    uint64_t chunk0 = 0;
    le(buf, 0, width, chunk0);
    prefix += width;
    if (!file.read(header_addr + prefix, chunk0, buf)) return corrupt + "its first chunk ends outside the file";
    if (!walk_chunk(buf, 0, buf.size(), true, creation_order, osz, lsz, todo, visit, done, why)) return corrupt + why;
  } else {
    if (!file.read(header_addr, 16, buf) || buf[0] != 1) return corrupt + "not a version 1 or 2 object header";
    uint64_t size = 0;
    le(buf, 8, 4, size);
    if (!file.read(header_addr + 16, size, buf)) return corrupt + "its first chunk ends outside the file";
    if (!walk_chunk(buf, 0, buf.size(), false, false, osz, lsz, todo, visit, done, why)) return corrupt + why;
  }
  std::set<uint64_t> seen;
  for (size_t i = 0; i < todo.size() && !done; ++i) {
    const uint64_t off = todo[i].first + base, len = todo[i].second;
    if (!seen.insert(off).second || seen.size() > 4096) return corrupt + "its continuation chunks repeat";
    if (!file.read(off, len, buf)) return corrupt + "a continuation chunk ends outside the file";
    if (v2) {
      if (buf.size() < 8 || buf[0] != 'O' || buf[1] != 'C' || buf[2] != 'H' || buf[3] != 'K')
        return corrupt + "a continuation chunk lacks its signature";
      if (!walk_chunk(buf, 4, buf.size() - 4, true, creation_order, osz, lsz, todo, visit, done, why))
        return corrupt + why;
    } else if (!walk_chunk(buf, 0, buf.size(), false, false, osz, lsz, todo, visit, done, why)) {
      return corrupt + why;
    }
  }
  return "";
}

/// The datatype message at m[at, at + size): a known version and class and, for the classes attributes use, sizes
/// and bit fields that agree (libhdf5 fails on such a type half-way and crashes cleaning up; see
/// attribute_messages_problem). Variable-length types: their base type, recursively (at most 4 deep).
bool datatype_ok(const std::vector<unsigned char>& m, uint64_t at, uint64_t size, unsigned osz, int depth,
                 std::string& why) {
  if (size < 8 || at + 8 > m.size()) {
    why = "a datatype of " + std::to_string(size) + " bytes is too short";
    return false;
  }
  const unsigned version = m[at] >> 4, cls = m[at] & 0x0F;
  uint64_t tsize = 0;
  le(m, static_cast<size_t>(at + 4), 4, tsize);
  if (version < 1 || version > 4 || cls > 10) {
    why = "a datatype has version " + std::to_string(version) + " and class " + std::to_string(cls) +
          " (expected versions 1 to 4, classes 0 to 10)";
    return false;
  }
  const auto bits = [&](uint64_t prop_at) {  // (bit offset, precision) of fixed- and floating-point types
    uint64_t offset = 0, precision = 0;
    if (size < prop_at - at + 4 || !le(m, static_cast<size_t>(prop_at), 2, offset) ||
        !le(m, static_cast<size_t>(prop_at + 2), 2, precision) || tsize == 0 || precision == 0 ||
        offset + precision > 8 * tsize) {
      why = "a numeric datatype of " + std::to_string(tsize) + " bytes declares " + std::to_string(precision) +
            " bits at bit " + std::to_string(offset);
      return false;
    }
    return true;
  };
  switch (cls) {
    case 0:
    case 1:
      return bits(at + 8);
    case 3:
      if (tsize == 0) {
        why = "a string datatype has size 0";
        return false;
      }
      return true;
    case 9:
      if (tsize != 4 + osz + 4) {
        why = "a variable-length datatype has size " + std::to_string(tsize) + " (expected " +
              std::to_string(4 + osz + 4) + ")";
        return false;
      }
      if (depth >= 4) {
        why = "variable-length datatypes nest more than 4 deep";
        return false;
      }
      return datatype_ok(m, at + 8, size - 8, osz, depth + 1, why);
    default:
      return true;
  }
}

/// The dataspace message at m[at, at + size): version 1 or 2, rank at most 32, its dimensions within the message.
bool dataspace_ok(const std::vector<unsigned char>& m, uint64_t at, uint64_t size, unsigned lsz, uint64_t& points,
                  std::string& why) {
  if (size < 4 || at + 4 > m.size()) {
    why = "a dataspace of " + std::to_string(size) + " bytes is too short";
    return false;
  }
  const unsigned version = m[at], rank = m[at + 1], flags = m[at + 2];
  const uint64_t header = version == 1 ? 8 : 4;
  const uint64_t need = header + static_cast<uint64_t>(rank) * lsz * ((flags & 1) ? 2 : 1);
  if ((version != 1 && version != 2) || rank > 32 || (version == 2 && m[at + 3] > 2) || need > size) {
    why = "a dataspace of " + std::to_string(size) + " bytes has version " + std::to_string(version) + ", rank " +
          std::to_string(rank) + " and needs " + std::to_string(need) + " bytes";
    return false;
  }
  // Its extent: each dimension within its maximum (when given, not unlimited); the element count, capped.
  points = (version == 2 && m[at + 3] == 2) ? 0 : 1;  // a null dataspace holds nothing
  for (unsigned r = 0; r < rank; ++r) {
    uint64_t dim = 0, max = 0;
    le(m, static_cast<size_t>(at + header + r * lsz), lsz, dim);
    if (flags & 1) {
      le(m, static_cast<size_t>(at + header + (rank + r) * lsz), lsz, max);
      const uint64_t unlimited = lsz == 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * lsz)) - 1;
      if (max != unlimited && dim > max) {
        why = "a dataspace's dimension " + std::to_string(r) + " is " + std::to_string(dim) + ", above its maximum " +
              std::to_string(max);
        return false;
      }
    }
    points = (dim != 0 && points > (uint64_t{1} << 40) / dim) ? (uint64_t{1} << 40) : points * dim;
  }
  return true;
}

/// Structural check of one attribute message (what libhdf5 decodes for every attribute when it iterates them, and
/// mishandles when it is malformed): a known version, a NUL-terminated name, and name, datatype and dataspace that fit.
bool attribute_message_ok(const std::vector<unsigned char>& m, unsigned osz, unsigned lsz, std::string& why) {
  if (m.size() < 8) {
    why = "an attribute message of " + std::to_string(m.size()) + " bytes is too short";
    return false;
  }
  const unsigned version = m[0];
  if (version < 1 || version > 3) {
    why = "an attribute message has version " + std::to_string(version) + " (expected 1 to 3)";
    return false;
  }
  uint64_t name_size = 0, dt_size = 0, ds_size = 0;
  le(m, 2, 2, name_size);
  le(m, 4, 2, dt_size);
  le(m, 6, 2, ds_size);
  const uint64_t name_at = version == 3 ? 9 : 8;
  const auto step = [&](uint64_t n) { return version == 1 ? pad8(n) : n; };
  const uint64_t need = name_at + step(name_size) + step(dt_size) + step(ds_size);
  if (name_size == 0 || dt_size == 0 || need > m.size()) {
    why = "an attribute message of " + std::to_string(m.size()) + " bytes declares a name of " +
          std::to_string(name_size) + ", a datatype of " + std::to_string(dt_size) + " and a dataspace of " +
          std::to_string(ds_size) + " bytes";
    return false;
  }
  const auto name_begin = m.begin() + static_cast<std::ptrdiff_t>(name_at);
  if (m[name_at + name_size - 1] != 0 || std::find(name_begin, name_begin + static_cast<std::ptrdiff_t>(name_size - 1), 0) !=
                                             name_begin + static_cast<std::ptrdiff_t>(name_size - 1)) {
    why = "an attribute message's name is not one NUL-terminated string of its declared " + std::to_string(name_size) +
          " bytes";
    return false;
  }
  // Shared datatypes or dataspaces (flags of versions 2 and 3) are references, not messages: not checked here.
  const unsigned flags = version == 1 ? 0 : m[1];
  const uint64_t dt_at = name_at + step(name_size), ds_at = dt_at + step(dt_size);
  const std::string name(reinterpret_cast<const char*>(&m[name_at]), static_cast<size_t>(name_size - 1));
  if (!(flags & 1) && !datatype_ok(m, dt_at, dt_size, osz, 0, why)) {
    why = "attribute '" + name + "': " + why;
    return false;
  }
  uint64_t points = 0;
  if (!(flags & 2) && !dataspace_ok(m, ds_at, ds_size, lsz, points, why)) {
    why = "attribute '" + name + "': " + why;
    return false;
  }
  // The value follows, points × the datatype's size in the file: it must be in the message (libhdf5 allocates it).
  if (!(flags & 3)) {
    uint64_t tsize = 0;
    le(m, static_cast<size_t>(dt_at + 4), 4, tsize);
    const uint64_t data_at = ds_at + step(ds_size), room = m.size() > data_at ? m.size() - data_at : 0;
    if (tsize != 0 && points > room / tsize) {
      why = "attribute '" + name + "': its value of " + std::to_string(points) + " elements of " +
            std::to_string(tsize) + " bytes does not fit in the " + std::to_string(room) + " bytes after its dataspace";
      return false;
    }
  }
  return true;
}

/// The global heap collections a file's variable-length strings point into, each walked once as libhdf5 walks it when
/// it loads the collection (H5HG__cache_heap_deserialize): "GCOL", version, its size; then entries of (index,
/// references, reserved, size, data padded to 8 bytes), the free-space entry (index 0) taking its size alone. A step
/// that does not advance (a free-space size of 0) loops forever in libhdf5 1.10.8; one past the end reads outside.
class HeapCheck {
 public:
  HeapCheck(Bytes& file, uint64_t base, unsigned lsz) : file_(file), base_(base), lsz_(lsz) {}

  /// Why the string (length, collection, index) must not be read, or "".
  std::string problem(uint64_t length, uint64_t collection, uint64_t index) {
    if (length == 0) return "";  // an empty string reads nothing
    const std::string declares = "it declares a string of " + std::to_string(length) + " bytes";
    if (length > file_.size()) return declares + " in a file of " + std::to_string(file_.size()) + " bytes";
    auto it = collections_.find(collection);
    if (it == collections_.end()) it = collections_.emplace(collection, walk(collection + base_)).first;
    const Collection& c = it->second;
    if (!c.error.empty()) return declares + c.error;
    const auto obj = c.sizes.find(index);
    if (obj == c.sizes.end())
      return declares + " but its global heap object " + std::to_string(index) + " is not in the collection";
    if (length > obj->second)
      return declares + " but its global heap object holds " + std::to_string(obj->second) + " bytes";
    return "";
  }

 private:
  struct Collection {
    std::string error;
    std::map<uint64_t, uint64_t> sizes;  // index → object size
  };

  Collection walk(uint64_t at0) {
    Collection c;
    std::vector<unsigned char> buf;
    if (!file_.read(at0, 8 + lsz_, buf) || buf[0] != 'G' || buf[1] != 'C' || buf[2] != 'O' || buf[3] != 'L') {
      c.error = " in a global heap collection that is not in the file (address " + std::to_string(at0) + ")";
      return c;
    }
    uint64_t size = 0;
    le(buf, 8, lsz_, size);
    if (size < 8 + lsz_ || !file_.read(at0, size, buf)) {
      c.error = " in a global heap collection of " + std::to_string(size) + " bytes that does not fit the file";
      return c;
    }
    const uint64_t header = 8 + lsz_;
    for (uint64_t at = 8 + lsz_; at < size;) {
      if (size - at < header) break;  // too small for an object: free space
      uint64_t index = 0, n = 0;
      le(buf, static_cast<size_t>(at), 2, index);
      le(buf, static_cast<size_t>(at + 8), lsz_, n);
      const uint64_t room = size - at;
      if (index == 0 ? (n == 0 || n > room) : (n > room - header || header + pad8(n) > room)) {
        c.error = "; the global heap entry at byte " + std::to_string(at) + " of its collection has index " +
                  std::to_string(index) + " and size " + std::to_string(n) + ", which " +
                  (n == 0 ? "does not advance" : "runs past the collection's end");
        return c;
      }
      if (index != 0) c.sizes[index] = n;
      at += index == 0 ? n : header + pad8(n);
    }
    return c;
  }

  Bytes& file_;
  uint64_t base_;
  unsigned lsz_;
  std::map<uint64_t, HeapCheck::Collection> collections_;
};

}  // namespace

std::string vlen_attribute_problem(const std::string& path, uint64_t base, uint64_t header_addr,
                                   const std::string& name, unsigned osz, unsigned lsz) {
  if (osz < 2 || osz > 8 || lsz < 2 || lsz > 8) return "";
  Bytes file(path);
  if (!file.ok()) return "";  // libhdf5 has it open; its own error will say what is wrong
  Found f;
  const std::string why = walk_header(file, base, header_addr, osz, lsz,
                                      [&](const std::vector<unsigned char>& m, bool& done, std::string& w) {
                                        if (!parse_attribute(m, name, osz, f, w)) return false;
                                        done = f.found;
                                        return true;
                                      });
  if (!why.empty()) return why;
  if (!f.found) return "";  // dense storage (not parsed here)
  HeapCheck heaps(file, base, lsz);
  return heaps.problem(f.length, f.collection, f.index);
}

namespace {
/// walk_header on the file at `path` ("" when the sizes are not ones libhdf5 accepts or the file cannot be read:
/// libhdf5's own error follows).
std::string walk_file(const std::string& path, uint64_t base, uint64_t header_addr, unsigned osz, unsigned lsz,
                      const AttributeVisitor& visit) {
  if (osz < 2 || osz > 8 || lsz < 2 || lsz > 8) return "";
  Bytes file(path);
  if (!file.ok()) return "";
  return walk_header(file, base, header_addr, osz, lsz, visit);
}
}  // namespace

std::string attribute_messages_problem(const std::string& path, uint64_t base, uint64_t header_addr, unsigned osz,
                                       unsigned lsz) {
  return walk_file(path, base, header_addr, osz, lsz,
                   [&](const std::vector<unsigned char>& m, bool&, std::string& w) {
                     return attribute_message_ok(m, osz, lsz, w);
                   });
}

std::string object_header_problem(const std::string& path, uint64_t base, uint64_t header_addr, unsigned osz,
                                  unsigned lsz) {
  return walk_file(path, base, header_addr, osz, lsz,
                   [](const std::vector<unsigned char>&, bool&, std::string&) { return true; });
}

std::string root_header_problem(const std::string& path) {
  Bytes file(path);
  if (!file.ok()) return "";
  // The superblock: at 0, 512, 1024, 2048, … (after a user block), "\x89HDF\r\n\x1a\n" then its version.
  static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1A, '\n'};
  std::vector<unsigned char> b;
  uint64_t at = 0;
  for (; at < file.size(); at = at == 0 ? 512 : at * 2) {
    if (file.read(at, 8, b) && std::equal(sig, sig + 8, b.begin())) break;
  }
  if (at >= file.size()) return "";  // libhdf5 reports the missing signature itself
  if (!file.read(at, 9, b)) return "its superblock is truncated";
  const unsigned version = b[8];
  uint64_t root = 0;
  unsigned osz = 8, lsz = 8;
  if (version <= 1) {
    // version, 4 version bytes, sizes of offsets and lengths, reserved, leaf K, internal K, flags (4),
    // [v1: indexed storage K, reserved], then base, free space, end of file, driver addresses, and the root group's
    // symbol table entry: link name offset, object header address.
    if (!file.read(at, 24, b)) return "its superblock is truncated";
    osz = b[13];
    lsz = b[14];
    if (osz < 2 || osz > 8 || lsz < 2 || lsz > 8) return "";  // libhdf5 rejects these sizes itself
    const uint64_t entry = at + 24 + (version == 1 ? 4 : 0) + 4 * uint64_t{osz};
    if (!file.read(entry + osz, osz, b)) return "its superblock is truncated";
    le(b, 0, osz, root);
  } else if (version <= 3) {
    // version, sizes of offsets and lengths, flags, then base, extension, end of file, root object header addresses.
    if (!file.read(at, 12, b)) return "its superblock is truncated";
    osz = b[9];
    lsz = b[10];
    if (osz < 2 || osz > 8 || lsz < 2 || lsz > 8) return "";
    if (!file.read(at + 12 + 3 * uint64_t{osz}, osz, b)) return "its superblock is truncated";
    le(b, 0, osz, root);
  } else {
    return "";  // a superblock version libhdf5 1.10 does not know: its own error
  }
  const std::string why = walk_header(file, at, root, osz, lsz,
                                      [](const std::vector<unsigned char>&, bool&, std::string&) { return true; });
  return why.empty() ? "" : "the root group's " + why.substr(4);  // "its object header …" → "object header …"
}

std::string vlen_dataset_problem(const std::string& path, uint64_t base, uint64_t data_offset, uint64_t count,
                                 unsigned osz, unsigned lsz) {
  if (osz < 2 || osz > 8 || lsz < 2 || lsz > 8) return "";
  Bytes file(path);
  if (!file.ok()) return "";
  const uint64_t element = 4 + osz + 4;
  std::vector<unsigned char> raw;
  if (count > file.size() / element || !file.read(data_offset, count * element, raw))
    return "its " + std::to_string(count) + " elements do not fit in the file";
  HeapCheck heaps(file, base, lsz);
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t length = 0, collection = 0, index = 0;
    le(raw, static_cast<size_t>(i * element), 4, length);
    le(raw, static_cast<size_t>(i * element + 4), osz, collection);
    le(raw, static_cast<size_t>(i * element + 4 + osz), 4, index);
    const std::string why = heaps.problem(length, collection, index);
    if (!why.empty()) return "element " + std::to_string(i) + ": " + why;
  }
  return "";
}

}  // namespace rala::h5::detail
