#include "models/checkpoint.h"

#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/versions.h>
#include <torch/csrc/jit/serialization/import_read.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <memory>
#include <stdexcept>
#include <unordered_map>

#include "attention_variants/text.h"
#include "models/checkpoint_detail.h"
#include "models/safetensors.h"

namespace rala {
namespace {

// ---------------------------------------------------------------------------------------------------------------------
// Errors. Internal problems are FormatError (message without the file name); read_checkpoint prefixes the file and
// turns them into one-line c10::Errors.

struct FormatError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Throws a FormatError: one line, whatever the names and values echoed from the file hold.
template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw FormatError(one_line(c10::str(args...)));
}

/// The first line of a (possibly multi-line) library message.
std::string first_line(const std::string& s) {
  auto end = s.find('\n');
  std::string line = s.substr(0, end);
  while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
  return line;
}

std::string shape_str(const torch::Tensor& t) {
  if (!t.defined()) return "undefined";
  return c10::str(t.sizes());
}

/// "a, b, c … (N in all)" with at most `limit` names.
std::string list_names(const std::vector<std::string>& names, size_t limit = 20) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < limit; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > limit) out += c10::str(", … (", names.size(), " in all)");
  return out;
}

// ---------------------------------------------------------------------------------------------------------------------
// Python objects of the pickle subset torch.save produces.

enum class Kind { none, boolean, integer, floating, string, bytes, tuple, list, dict, tensor, storage, global, opaque };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::none: return "None";
    case Kind::boolean: return "bool";
    case Kind::integer: return "int";
    case Kind::floating: return "float";
    case Kind::string: return "str";
    case Kind::bytes: return "bytes";
    case Kind::tuple: return "tuple";
    case Kind::list: return "list";
    case Kind::dict: return "dict";
    case Kind::tensor: return "tensor";
    case Kind::storage: return "storage";
    case Kind::global: return "global";
    case Kind::opaque: return "object";
  }
  return "?";
}

struct PyObj;
/// Objects refer to each other by plain pointers; a Heap owns them all (see Heap).
using Obj = PyObj*;

struct PyObj {
  Kind kind = Kind::none;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                             ///< str, bytes, global "module.name", opaque description
  std::vector<Obj> items;                    ///< tuple, list
  std::vector<std::pair<Obj, Obj>> entries;  ///< dict, in insertion order
  // Tensors are lazy: a storage names its zip record (`s` = key, `i` = numel, `dtype`); a tensor is a view of a
  // storage (`storage`, `offset`, `size`, `stride`), read only when it is selected (see Archive::tensor).
  torch::Dtype dtype = torch::kFloat32;
  Obj storage = nullptr;
  int64_t offset = 0;
  std::vector<int64_t> size, stride;
};

/// Owns every object of one unpickled stream. A pickle can build cycles (a list appended to itself) and chains nested
/// as deep as the stream is long; objects owned here and linked by plain pointers are freed flat, without recursion and
/// whatever the links.
class Heap {
 public:
  Obj make(Kind kind) {
    objects_.emplace_back();
    objects_.back().kind = kind;
    return &objects_.back();
  }
  Obj make_int(int64_t v) {
    Obj o = make(Kind::integer);
    o->i = v;
    return o;
  }
  Obj make_str(Kind kind, std::string s) {
    Obj o = make(kind);
    o->s = std::move(s);
    return o;
  }
  Obj opaque(std::string what) { return make_str(Kind::opaque, std::move(what)); }
  size_t size() const { return objects_.size(); }

 private:
  std::deque<PyObj> objects_;  // a deque never moves its elements: the pointers stay valid
};

std::string describe(const Obj& o) {
  if (o->kind == Kind::opaque) return "object (" + o->s + ")";
  if (o->kind == Kind::global) return "global " + o->s;
  return kind_name(o->kind);
}

/// The value of string key `key` of a dict (the last one if repeated), or nullptr.
Obj dict_get(const Obj& dict, const std::string& key) {
  for (auto it = dict->entries.rbegin(); it != dict->entries.rend(); ++it)
    if (it->first->kind == Kind::string && it->first->s == key) return it->second;
  return nullptr;
}

/// The first `limit` keys of a dict for a message (each cut to 80 bytes), as list_names writes them.
std::string key_list(const Obj& dict, size_t limit = 20) {
  std::vector<std::string> names;
  for (const auto& [k, v] : dict->entries) {
    if (names.size() == limit) break;
    names.push_back(k->kind != Kind::string ? "<" + std::string(kind_name(k->kind)) + " key>"
                    : k->s.size() > 80      ? "'" + k->s.substr(0, 80) + "…'"
                                            : "'" + k->s + "'");
  }
  std::string out = list_names(names, limit);
  if (dict->entries.size() > limit) out += c10::str(", … (", dict->entries.size(), " in all)");
  return out;
}

c10::optional<torch::Dtype> storage_dtype(const std::string& name) {
  static const std::map<std::string, torch::Dtype> types = {
      {"torch.FloatStorage", torch::kFloat32},       {"torch.DoubleStorage", torch::kFloat64},
      {"torch.HalfStorage", torch::kFloat16},        {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kInt64},          {"torch.IntStorage", torch::kInt32},
      {"torch.ShortStorage", torch::kInt16},         {"torch.CharStorage", torch::kInt8},
      {"torch.ByteStorage", torch::kUInt8},          {"torch.BoolStorage", torch::kBool},
      {"torch.ComplexFloatStorage", torch::kComplexFloat}, {"torch.ComplexDoubleStorage", torch::kComplexDouble}};
  auto it = types.find(name);
  if (it == types.end()) return c10::nullopt;
  return it->second;
}

// ---------------------------------------------------------------------------------------------------------------------
// Unpickler for the subset of pickle (protocols 2–5) that torch.save and torch::pickle_save produce. Known globals are
// evaluated (OrderedDict, tensor rebuilding, the TorchScript pickler's type tags); every other global evaluates to an
// opaque placeholder, and calling or BUILDing a placeholder yields a placeholder, so unknown objects are skipped.

class Unpickler {
 public:
  using PersistentLoad = std::function<Obj(const Obj& pid)>;

  /// Objects are made in `heap`. At most 4 objects and container entries per input byte (+ 64 Ki) are built: a
  /// stream that builds more (e.g. one dict made again and again from the same long list) is rejected.
  Unpickler(Heap& heap, const char* data, size_t size, PersistentLoad persistent_load)
      : heap_(heap), data_(data), size_(size), budget_(4 * size + (1 << 16)),
        persistent_load_(std::move(persistent_load)) {}

  /// Whether the stream came from the TorchScript (C++) pickler (it tags containers with torch.jit._pickle globals).
  bool from_cpp_pickler() const { return cpp_pickler_; }

  Obj parse() {
    while (true) {
      const size_t at = pos_;
      const uint8_t op = u8();
      switch (op) {
        case 0x80: {  // PROTO
          const uint8_t proto = u8();
          if (proto > 5) fail("data.pkl: unsupported pickle protocol ", int(proto));
          break;
        }
        case 0x95: take(8); break;  // FRAME (length only; frames are contiguous here)
        case '.': {                 // STOP
          if (stack_.size() != 1 || !marks_.empty())
            fail("data.pkl: malformed pickle: STOP at offset ", at, " with ", stack_.size(), " stack items");
          return stack_.back();
        }
        case '(': marks_.push_back(stack_.size()); break;  // MARK
        case '}': push(make(Kind::dict)); break;           // EMPTY_DICT
        case ']': push(make(Kind::list)); break;           // EMPTY_LIST
        case ')': push(make(Kind::tuple)); break;          // EMPTY_TUPLE
        case 't': {                                        // TUPLE
          auto t = make(Kind::tuple);
          t->items = pop_mark(at);
          push(t);
          break;
        }
        case 0x85: case 0x86: case 0x87: {  // TUPLE1, TUPLE2, TUPLE3
          const size_t n = op - 0x84;
          if (stack_.size() < n + base()) underflow(at);
          auto t = make(Kind::tuple);
          t->items.assign(stack_.end() - n, stack_.end());
          stack_.resize(stack_.size() - n);
          push(t);
          break;
        }
        case 's': {  // SETITEM
          auto v = pop(at);
          auto k = pop(at);
          set_items(top(at), {k, v}, at);
          break;
        }
        case 'u': {  // SETITEMS
          auto kv = pop_mark(at);
          set_items(top(at), kv, at);
          break;
        }
        case 'a': {  // APPEND
          auto v = pop(at);
          append_items(top(at), {v}, at);
          break;
        }
        case 'e': {  // APPENDS
          auto vs = pop_mark(at);
          append_items(top(at), vs, at);
          break;
        }
        case 'q': memo_[u8()] = top(at); break;         // BINPUT
        case 'r': memo_[le<uint32_t>()] = top(at); break;  // LONG_BINPUT
        case 0x94: {                                      // MEMOIZE
          const auto idx = static_cast<uint32_t>(memo_.size());
          memo_[idx] = top(at);
          break;
        }
        case 'h': push(memo_get(u8(), at)); break;             // BINGET
        case 'j': push(memo_get(le<uint32_t>(), at)); break;   // LONG_BINGET
        case 'J': push(make_int(le<int32_t>())); break;        // BININT
        case 'K': push(make_int(u8())); break;                 // BININT1
        case 'M': push(make_int(le<uint16_t>())); break;       // BININT2
        case 0x8a: push(long_int(u8())); break;                // LONG1
        case 0x8b: push(long_int(checked_len(le<int32_t>(), at))); break;  // LONG4
        case 'G': {                                            // BINFLOAT (big-endian)
          const char* p = take(8);
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<uint8_t>(p[k]);
          auto o = make(Kind::floating);
          std::memcpy(&o->f, &bits, 8);
          push(o);
          break;
        }
        case 'N': push(make(Kind::none)); break;  // NONE
        case 0x88: case 0x89: {                   // NEWTRUE, NEWFALSE
          auto o = make(Kind::boolean);
          o->b = op == 0x88;
          push(o);
          break;
        }
        case 'X': push(text(Kind::string, le<uint32_t>())); break;        // BINUNICODE
        case 0x8c: push(text(Kind::string, u8())); break;                 // SHORT_BINUNICODE
        case 0x8d: push(text(Kind::string, le<uint64_t>())); break;       // BINUNICODE8
        case 'T': push(text(Kind::string, checked_len(le<int32_t>(), at))); break;  // BINSTRING
        case 'U': push(text(Kind::string, u8())); break;                  // SHORT_BINSTRING
        case 'C': push(text(Kind::bytes, u8())); break;                   // SHORT_BINBYTES
        case 'B': push(text(Kind::bytes, le<uint32_t>())); break;         // BINBYTES
        case 0x8e: push(text(Kind::bytes, le<uint64_t>())); break;        // BINBYTES8
        case 'c': {                                                       // GLOBAL
          std::string module = line(at);
          std::string name = line(at);
          push(global(module, name));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          auto name = pop(at);
          auto module = pop(at);
          if (module->kind != Kind::string || name->kind != Kind::string)
            fail("data.pkl: STACK_GLOBAL at offset ", at, " expects two strings");
          push(global(module->s, name->s));
          break;
        }
        case 'R': {  // REDUCE
          auto args = pop(at);
          auto callable = pop(at);
          push(call(callable, args, at));
          break;
        }
        case 0x81: {  // NEWOBJ
          auto args = pop(at);
          auto cls = pop(at);
          push(call(cls, args, at));
          break;
        }
        case 0x92: {  // NEWOBJ_EX
          pop(at);    // kwargs
          auto args = pop(at);
          auto cls = pop(at);
          push(call(cls, args, at));
          break;
        }
        case 'b': pop(at); top(at); break;  // BUILD: object state (attributes) is not needed; the object stays
        case 'Q': {                         // BINPERSID
          auto pid = pop(at);
          push(persistent_load_(pid));
          break;
        }
        case '0': pop(at); break;        // POP
        case '1': pop_mark(at); break;   // POP_MARK
        case '2': push(top(at)); break;  // DUP
        case 0x8f: push(opaque("set")); break;  // EMPTY_SET
        case 0x90: pop_mark(at); top(at); break;  // ADDITEMS
        case 0x91: pop_mark(at); push(opaque("frozenset")); break;  // FROZENSET
        default: {
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02x", op);
          fail("data.pkl: unsupported pickle opcode ", hex, (op >= 0x20 && op < 0x7f ? c10::str(" ('", char(op), "')") : ""),
               " at offset ", at);
        }
      }
    }
  }

 private:
  // --- reading ---
  const char* take(size_t n) {
    if (n > size_ - pos_) fail("data.pkl: pickle data ends early (needs ", n, " bytes at offset ", pos_, " of ", size_, ")");
    const char* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint8_t u8() { return static_cast<uint8_t>(*take(1)); }
  template <typename T>
  T le() {
    const char* p = take(sizeof(T));
    uint64_t v = 0;
    for (size_t k = 0; k < sizeof(T); ++k) v |= uint64_t(static_cast<uint8_t>(p[k])) << (8 * k);
    T out;
    std::memcpy(&out, &v, sizeof(T));  // little-endian host (x86-64, aarch64)
    return out;
  }
  static size_t checked_len(int64_t n, size_t at) {
    if (n < 0) fail("data.pkl: negative length at offset ", at);
    return static_cast<size_t>(n);
  }
  std::string line(size_t at) {
    const char* begin = data_ + pos_;
    const void* nl = std::memchr(begin, '\n', size_ - pos_);
    if (!nl) fail("data.pkl: GLOBAL at offset ", at, " is not terminated");
    std::string s(begin, static_cast<const char*>(nl));
    pos_ += s.size() + 1;
    return s;
  }
  Obj text(Kind kind, uint64_t n) {
    const char* p = take(n);
    return make_str(kind, std::string(p, n));
  }
  Obj long_int(size_t n) {
    const char* p = take(n);
    if (n > 8) return opaque("integer of " + std::to_string(n) + " bytes");
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) v |= uint64_t(static_cast<uint8_t>(p[k])) << (8 * k);
    if (n > 0 && n < 8 && (static_cast<uint8_t>(p[n - 1]) & 0x80)) v |= ~uint64_t(0) << (8 * n);  // sign-extend
    return make_int(static_cast<int64_t>(v));
  }

  // --- objects ---
  /// Counts `n` new objects or container entries against the budget.
  void spend(size_t n) {
    used_ += n;
    if (used_ > budget_)
      fail("data.pkl: the pickle builds more than ", budget_, " objects and container entries from its ", size_,
           " bytes (at offset ", pos_, "); a checkpoint needs far fewer");
  }
  Obj make(Kind kind) {
    spend(1);
    return heap_.make(kind);
  }
  Obj make_int(int64_t v) {
    spend(1);
    return heap_.make_int(v);
  }
  Obj make_str(Kind kind, std::string s) {
    spend(1);
    return heap_.make_str(kind, std::move(s));
  }
  Obj opaque(std::string what) {
    spend(1);
    return heap_.opaque(std::move(what));
  }

  // --- stack ---
  size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  [[noreturn]] void underflow(size_t at) const { fail("data.pkl: malformed pickle: stack underflow at offset ", at); }
  void push(Obj o) { stack_.push_back(std::move(o)); }
  Obj pop(size_t at) {
    if (stack_.size() <= base()) underflow(at);
    Obj o = std::move(stack_.back());
    stack_.pop_back();
    return o;
  }
  const Obj& top(size_t at) const {
    if (stack_.size() <= base()) underflow(at);
    return stack_.back();
  }
  std::vector<Obj> pop_mark(size_t at) {
    if (marks_.empty()) fail("data.pkl: malformed pickle: no MARK for the opcode at offset ", at);
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Obj> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  Obj memo_get(uint32_t idx, size_t at) const {
    auto it = memo_.find(idx);
    if (it == memo_.end()) fail("data.pkl: malformed pickle: memo entry ", idx, " unset at offset ", at);
    return it->second;
  }
  void set_items(const Obj& target, const std::vector<Obj>& kv, size_t at) {
    if (kv.size() % 2) fail("data.pkl: malformed pickle: odd SETITEMS at offset ", at);
    if (target->kind == Kind::opaque) return;
    if (target->kind != Kind::dict) fail("data.pkl: SETITEM(S) on a ", kind_name(target->kind), " at offset ", at);
    spend(kv.size() / 2);
    for (size_t k = 0; k < kv.size(); k += 2) target->entries.emplace_back(kv[k], kv[k + 1]);
  }
  void append_items(const Obj& target, const std::vector<Obj>& vs, size_t at) {
    if (target->kind == Kind::opaque) return;
    if (target->kind != Kind::list) fail("data.pkl: APPEND(S) on a ", kind_name(target->kind), " at offset ", at);
    spend(vs.size());
    target->items.insert(target->items.end(), vs.begin(), vs.end());
  }

  // --- globals ---
  Obj global(const std::string& module, const std::string& name) {
    if (module == "torch.jit._pickle") cpp_pickler_ = true;
    return make_str(Kind::global, module + "." + name);
  }

  Obj call(Obj callable, Obj args, size_t at) {
    // torch._tensor._rebuild_from_type_v2(func, type, args, state) is func(*args): followed in a loop, not by
    // recursion (the stream decides how deep it nests; each step goes to another object, so the heap bounds it).
    for (size_t hops = 0; callable->kind == Kind::global && callable->s == "torch._tensor._rebuild_from_type_v2" &&
                          args->kind == Kind::tuple && args->items.size() >= 3;
         ++hops) {
      if (hops > heap_.size()) fail("data.pkl: _rebuild_from_type_v2 at offset ", at, " calls itself in a cycle");
      callable = args->items[0];
      args = args->items[2];
    }
    if (callable->kind != Kind::global) return opaque("result of calling a " + describe(callable));
    const std::string& f = callable->s;
    if (args->kind != Kind::tuple) return opaque(f + "(…)");
    const auto& a = args->items;
    if (f == "collections.OrderedDict" || f == "builtins.dict" || f == "__builtin__.dict") {
      auto d = make(Kind::dict);
      if (!a.empty() && (a[0]->kind == Kind::list || a[0]->kind == Kind::tuple)) {
        spend(a[0]->items.size());
        for (const auto& pair : a[0]->items)
          if (pair->kind == Kind::tuple && pair->items.size() == 2) d->entries.emplace_back(pair->items[0], pair->items[1]);
      }
      return d;
    }
    if (f == "torch._utils._rebuild_tensor_v2" || f == "torch._utils._rebuild_tensor") return rebuild_tensor(a, at);
    if ((f == "torch._utils._rebuild_parameter" || f == "torch._utils._rebuild_parameter_with_state" ||
         f == "torch.jit._pickle.restore_type_tag" || f == "torch.jit._pickle.build_intlist" ||
         f == "torch.jit._pickle.build_doublelist" || f == "torch.jit._pickle.build_boollist" ||
         f == "torch.jit._pickle.build_tensorlist" || f == "torch.jit._pickle.build_list") &&
        !a.empty())
      return a[0];
    return opaque(f + "(…)");
  }

  Obj rebuild_tensor(const std::vector<Obj>& a, size_t at) {
    if (a.size() < 4) fail("data.pkl: _rebuild_tensor at offset ", at, " has ", a.size(), " arguments, expected ≥ 4");
    const Obj& storage = a[0];
    if (storage->kind == Kind::opaque) return opaque("tensor on " + storage->s);
    auto ints = [&](const Obj& o, const char* what) {
      if (o->kind != Kind::tuple && o->kind != Kind::list)
        fail("data.pkl: tensor ", what, " at offset ", at, " is a ", kind_name(o->kind), ", expected a tuple of ints");
      std::vector<int64_t> v;
      for (const auto& e : o->items) {
        if (e->kind != Kind::integer || e->i < 0)
          fail("data.pkl: tensor ", what, " at offset ", at, " holds a ", kind_name(e->kind), ", expected ints ≥ 0");
        v.push_back(e->i);
      }
      return v;
    };
    if (storage->kind != Kind::storage || a[1]->kind != Kind::integer || a[1]->i < 0)
      fail("data.pkl: _rebuild_tensor at offset ", at, " expects (storage, offset ≥ 0, size, stride), got (",
           describe(storage), ", ", describe(a[1]), ", …)");
    const int64_t offset = a[1]->i;
    const auto size = ints(a[2], "size");
    const auto stride = ints(a[3], "stride");
    if (size.size() != stride.size())
      fail("data.pkl: tensor at offset ", at, " has ", size.size(), " sizes but ", stride.size(), " strides");
    // Sizes, strides and offset come from the file: every product and sum is checked. An empty tensor reads nothing.
    const auto view = [&] {
      return c10::str("tensor at offset ", at, " (size ", c10::IntArrayRef(size), ", stride ", c10::IntArrayRef(stride),
                      ", storage offset ", offset, ")");
    };
    if (std::find(size.begin(), size.end(), 0) == size.end()) {
      int64_t numel = 1, last = offset;
      for (size_t d = 0; d < size.size(); ++d) {
        int64_t reach = 0;
        if (__builtin_mul_overflow(numel, size[d], &numel) || __builtin_mul_overflow(size[d] - 1, stride[d], &reach) ||
            __builtin_add_overflow(last, reach, &last))
          fail("data.pkl: ", view(), " overflows 64-bit element indices");
      }
      if (last >= storage->i)
        fail("data.pkl: ", view(), " reaches past its storage of ", storage->i, " elements");
      // A view of distinct elements has at most as many as its storage; more means strides that repeat elements
      // (an expanded tensor), whose contiguous copy could be any size a few bytes ask for.
      if (numel > storage->i)
        fail("data.pkl: ", view(), " has ", numel, " elements, more than its storage of ", storage->i,
             ": views that repeat elements (expanded tensors) are not read");
    }
    auto out = make(Kind::tensor);
    out->dtype = storage->dtype;
    out->storage = storage;
    out->offset = offset;
    out->size = size;
    out->stride = stride;
    return out;
  }

  Heap& heap_;
  const char* data_;
  size_t size_;
  size_t budget_, used_ = 0;
  size_t pos_ = 0;
  PersistentLoad persistent_load_;
  std::vector<Obj> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, Obj> memo_;
  bool cpp_pickler_ = false;
};

// ---------------------------------------------------------------------------------------------------------------------
// Reading the zip container.

/// One record of a zip's central directory.
struct ZipRecord {
  uint64_t data_offset = 0;  ///< where its (possibly deflated) bytes start in the file
  uint64_t compressed = 0;   ///< bytes in the file
  uint64_t size = 0;         ///< bytes once extracted: what LibTorch's getRecord allocates
  uint16_t method = 0;       ///< 0 stored, 8 deflated
  uint32_t crc = 0;          ///< CRC-32 of the extracted bytes
};

/// CRC-32 (IEEE, as zip uses).
uint32_t crc32(const std::string& data) {
  uint32_t c = 0xffffffffu;
  for (const char ch : data) {
    c ^= static_cast<uint8_t>(ch);
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}

/// The central directory of a checkpoint zip, checked against the file before LibTorch's reader sees it. LibTorch
/// (miniz) allocates a record's declared size before extracting it, throws from its constructor without freeing its
/// zip state (a leak) when the version record is missing or bad, and looks names up case-insensitively; so every
/// record's bytes must lie in the file, extracted sizes are bounded by the deflate ratio, records may not overlap
/// (the overlapping-files zip bomb) or share a name, and the version record must be what LibTorch accepts.
class ZipDirectory {
 public:
  /// The record `name` inside the archive's folder (LibTorch's naming: "data.pkl", "data/0"), or nullptr.
  const ZipRecord* find(const std::string& name) const {
    auto it = records_.find(lower(prefix_ + "/" + name));
    return it == records_.end() ? nullptr : &it->second;
  }

  /// Reads the directory of `path`; throws FormatError naming what is wrong.
  static ZipDirectory read(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) fail("cannot open checkpoint: ", std::strerror(errno));
    if (S_ISDIR(st.st_mode)) fail("is a directory, expected a checkpoint file");
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("cannot open checkpoint for reading: ", std::strerror(errno));
    ZipDirectory z;
    z.in_ = &in;
    z.file_size_ = static_cast<uint64_t>(st.st_size);
    const std::string head = z.file_size_ >= 4 ? z.bytes(0, 4) : std::string();
    if (z.file_size_ < 22 || head != std::string("PK\x03\x04", 4)) {
      if (z.file_size_ >= 2 && static_cast<uint8_t>(head[0]) == 0x80)
        fail("not a zip archive: this looks like the legacy (pre-1.6, non-zip) torch.save format; re-save it in Python "
             "with torch.save(torch.load(f), f2)");
      fail("not a zip archive (", z.file_size_, " bytes, no zip signature): expected a torch.save / save_checkpoint file");
    }
    z.read_directory();
    z.check_version();
    z.in_ = nullptr;
    return z;
  }

 private:
  static std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }
  static uint64_t le(const std::string& b, size_t at, size_t n) {
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) v |= uint64_t(static_cast<uint8_t>(b[at + k])) << (8 * k);
    return v;
  }
  /// `n` bytes at `offset`, which must lie in the file.
  std::string bytes(uint64_t offset, uint64_t n) {
    if (offset > file_size_ || n > file_size_ - offset)
      fail("truncated or corrupt zip archive: ", n, " bytes at offset ", offset, " are past the end of its ",
           file_size_, " bytes");
    std::string b(n, '\0');
    in_->seekg(static_cast<std::streamoff>(offset));
    in_->read(b.data(), static_cast<std::streamsize>(n));
    if (!*in_) fail("cannot read checkpoint: ", std::strerror(errno));
    return b;
  }

  void read_directory() {
    // The end-of-central-directory record sits in the last 22 + ≤ 65535 (comment) bytes; miniz takes the last one.
    const uint64_t tail = std::min<uint64_t>(file_size_, 22 + 65535);
    const std::string buf = bytes(file_size_ - tail, tail);
    const size_t eocd = buf.rfind(std::string("PK\x05\x06", 4));
    if (eocd == std::string::npos || eocd + 22 > buf.size())
      fail("truncated or corrupt zip archive: no end-of-central-directory record in its ", file_size_, " bytes");
    const uint64_t eocd_at = file_size_ - tail + eocd;
    uint64_t entries = le(buf, eocd + 10, 2), cd_size = le(buf, eocd + 12, 4), cd_offset = le(buf, eocd + 16, 4);
    if (le(buf, eocd + 4, 2) != 0 || le(buf, eocd + 6, 2) != 0 || le(buf, eocd + 8, 2) != entries)
      fail("multi-part zip archives are not supported");
    if (eocd_at >= 20 && bytes(eocd_at - 20, 4) == std::string("PK\x06\x07", 4)) {  // zip64 locator
      const std::string loc = bytes(eocd_at - 20, 20);
      const std::string z64 = bytes(le(loc, 8, 8), 56);
      if (z64.compare(0, 4, std::string("PK\x06\x06", 4)) != 0)
        fail("truncated or corrupt zip archive: no zip64 end-of-central-directory record where its locator points");
      entries = le(z64, 32, 8);
      cd_size = le(z64, 40, 8);
      cd_offset = le(z64, 48, 8);
    }
    if (entries == 0) fail("the zip archive holds no records");
    if (entries > cd_size / 46) fail("corrupt zip archive: ", entries, " records cannot fit a ", cd_size, "-byte directory");
    const std::string cd = bytes(cd_offset, cd_size);
    std::vector<std::pair<uint64_t, uint64_t>> spans;  // [local header, end of data) of every record
    size_t at = 0;
    for (uint64_t i = 0; i < entries; ++i) {
      if (at + 46 > cd.size() || cd.compare(at, 4, std::string("PK\x01\x02", 4)) != 0)
        fail("corrupt zip archive: central directory record ", i, " is malformed");
      const uint64_t flags = le(cd, at + 8, 2), name_len = le(cd, at + 28, 2), extra_len = le(cd, at + 30, 2),
                     comment_len = le(cd, at + 32, 2);
      ZipRecord r;
      r.method = static_cast<uint16_t>(le(cd, at + 10, 2));
      r.crc = static_cast<uint32_t>(le(cd, at + 16, 4));
      r.compressed = le(cd, at + 20, 4);
      r.size = le(cd, at + 24, 4);
      uint64_t local = le(cd, at + 42, 4), disk = le(cd, at + 34, 2);
      if (at + 46 + name_len + extra_len + comment_len > cd.size())
        fail("corrupt zip archive: central directory record ", i, " runs past the directory");
      const std::string name = cd.substr(at + 46, name_len);
      const size_t at_record = at;
      // zip64 extended information: the 64-bit values of the fields that hold all ones, in this order.
      for (size_t e = at + 46 + name_len; e + 4 <= at + 46 + name_len + extra_len;) {
        const uint64_t id = le(cd, e, 2), len = le(cd, e + 2, 2);
        if (e + 4 + len > at + 46 + name_len + extra_len) break;
        if (id == 1) {
          size_t f = e + 4;
          for (uint64_t* field : {&r.size, &r.compressed, &local}) {
            if (*field != 0xffffffffu) continue;
            if (f + 8 > e + 4 + len) fail("corrupt zip archive: record '", name, "' has a short zip64 field");
            *field = le(cd, f, 8);
            f += 8;
          }
        }
        e += 4 + len;
      }
      at += 46 + name_len + extra_len + comment_len;
      if (disk != 0) fail("multi-part zip archives are not supported");
      // miniz (in LibTorch) refuses these flags: 1 encrypted, 32 patch data, 64 strong encryption.
      if (flags & (1 | 32 | 64))
        fail("zip record '", name, "' is encrypted or holds patch data (general-purpose flags ", flags, ")");
      if (r.method != 0 && r.method != 8)
        fail("zip record '", name, "' uses compression method ", r.method, "; expected stored (0) or deflated (8)");
      // miniz takes a record for a directory when its name ends in '/' or its external attributes carry the DOS
      // directory bit (0x10), and then extracts nothing: LibTorch would hand out the allocated, unwritten buffer (or
      // throw from its constructor, leaking, for the version record). A directory entry holds no bytes.
      const bool directory = (!name.empty() && name.back() == '/') || (le(cd, at_record + 38, 4) & 0x10u) != 0;
      if (directory && (r.size != 0 || r.compressed != 0))
        fail("corrupt zip archive: record '", name, "' is marked as a directory but holds ", r.size, " bytes");
      if (r.method == 0 ? r.size != r.compressed : r.size > 1032 * r.compressed + 1024)
        fail("corrupt zip archive: record '", name, "' claims ", r.size, " bytes from ", r.compressed,
             r.method == 0 ? " stored bytes" : " deflated bytes (deflate expands at most 1032 times)");
      const std::string header = bytes(local, 30);
      if (header.compare(0, 4, std::string("PK\x03\x04", 4)) != 0)
        fail("corrupt zip archive: record '", name, "' has no local header at offset ", local);
      r.data_offset = local + 30 + le(header, 26, 2) + le(header, 28, 2);
      if (r.data_offset > file_size_ || r.compressed > file_size_ - r.data_offset)
        fail("truncated or corrupt zip archive: record '", name, "' (", r.compressed, " bytes at offset ",
             r.data_offset, ") runs past the end of the file");
      spans.emplace_back(local, r.data_offset + r.compressed);
      if (i == 0) {
        const size_t slash = name.find('/');
        if (slash == std::string::npos)
          fail("zip archive's first record '", name, "' is not in a folder: not a torch.save checkpoint");
        prefix_ = name.substr(0, slash);
      }
      if (!records_.emplace(lower(name), r).second)
        fail("corrupt zip archive: two records are named '", name, "' (names compare without case)");
    }
    std::sort(spans.begin(), spans.end());
    for (size_t i = 1; i < spans.size(); ++i)
      if (spans[i].first < spans[i - 1].second)
        fail("corrupt zip archive: records at offsets ", spans[i - 1].first, " and ", spans[i].first, " overlap");
  }

  /// The format version record, as LibTorch's reader checks it in its constructor (stored, decimal, within the
  /// versions LibTorch reads, CRC intact).
  void check_version() {
    const ZipRecord* r = find(".data/version");
    if (!r) r = find("version");
    if (!r) fail("zip archive has no version record: not a torch.save checkpoint");
    if (r->method != 0 || r->size > 64) fail("zip archive's version record is not a short stored number");
    const std::string text = bytes(r->data_offset, r->size);
    size_t i = 0;
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    uint64_t version = 0;
    size_t digits = 0;
    for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])) && digits < 6; ++i, ++digits)
      version = version * 10 + static_cast<uint64_t>(text[i] - '0');
    if (digits == 0 || digits == 6 || version < caffe2::serialize::kMinSupportedFileFormatVersion ||
        version > caffe2::serialize::kMaxSupportedFileFormatVersion)
      fail("zip archive's format version '", text.substr(0, 16), "' is not one LibTorch reads (",
           caffe2::serialize::kMinSupportedFileFormatVersion, " to ", caffe2::serialize::kMaxSupportedFileFormatVersion,
           ")");
    if (crc32(text) != r->crc) fail("corrupt zip archive: the version record's checksum does not match");
  }

  std::ifstream* in_ = nullptr;  // while read() runs
  uint64_t file_size_ = 0;
  std::string prefix_;                       ///< the archive's folder (the first record's)
  std::map<std::string, ZipRecord> records_;  ///< by lower-cased full name
};

/// persistent_load: ('storage', storage type, key, location, numel) → a lazy storage object, one per key (`storages`);
/// `has_record` says whether the zip holds "data/<key>".
Obj resolve_storage(Heap& heap, const Obj& pid, std::map<std::string, Obj>& storages,
                    const std::function<bool(const std::string&)>& has_record) {
  const auto& t = pid->items;
  if (pid->kind != Kind::tuple || t.size() < 5 || t[0]->kind != Kind::string || t[0]->s != "storage")
    return heap.opaque("persistent id");
  if (t[1]->kind != Kind::global || t[2]->kind != Kind::string || t[4]->kind != Kind::integer || t[4]->i < 0)
    fail("data.pkl: malformed storage id (expected ('storage', type, key, location, numel))");
  auto dtype = storage_dtype(t[1]->s);
  if (!dtype) return heap.opaque("unsupported storage type " + t[1]->s);
  auto& obj = storages[t[2]->s];
  if (!obj) {
    if (!has_record("data/" + t[2]->s)) fail("zip archive has no record data/", t[2]->s, " for a tensor storage");
    obj = heap.make_str(Kind::storage, t[2]->s);
    obj->i = t[4]->i;
    obj->dtype = *dtype;
  } else if (obj->dtype != *dtype || obj->i != t[4]->i) {
    fail("data.pkl: storage ", t[2]->s, " is referenced with two types or sizes");
  }
  return obj;
}

/// An open checkpoint zip: parses data.pkl and reads tensor storages on demand (each record at most once).
class Archive {
 public:
  /// `zip` is the directory of the file `reader` reads: every record is looked up and size-checked there before
  /// LibTorch allocates and extracts it.
  Archive(caffe2::serialize::PyTorchStreamReader& reader, const ZipDirectory& zip) : reader_(reader), zip_(zip) {}

  /// The unpickled top-level object. Sets from_cpp_pickler.
  Obj parse() {
    if (const ZipRecord* r = zip_.find("byteorder")) {
      if (r->size > 16) fail("the byteorder record has ", r->size, " bytes, expected 'little'");
      auto [ptr, n] = reader_.getRecord("byteorder");
      const std::string order(static_cast<const char*>(ptr.get()), n);
      if (order != "little") fail("tensor data is stored in '", order, "' byte order; only little-endian is supported");
    }
    if (!zip_.find("data.pkl")) fail("zip archive has no data.pkl record: not a torch.save checkpoint");
    auto [pkl, pkl_size] = reader_.getRecord("data.pkl");
    Unpickler unpickler(heap_, static_cast<const char*>(pkl.get()), pkl_size,
                        [this](const Obj& pid) { return storage(pid); });
    Obj root = unpickler.parse();
    from_cpp_pickler = unpickler.from_cpp_pickler();
    return root;
  }

  /// The contiguous CPU tensor of a (lazy) tensor object.
  torch::Tensor tensor(const PyObj& t) {
    if (std::find(t.size.begin(), t.size.end(), 0) != t.size.end())
      return torch::empty(t.size, torch::TensorOptions().dtype(t.dtype));
    return data(*t.storage).as_strided(t.size, t.stride, t.offset).clone(at::MemoryFormat::Contiguous);
  }

  bool from_cpp_pickler = false;

 private:
  Obj storage(const Obj& pid) {
    return resolve_storage(heap_, pid, storages_,
                           [this](const std::string& record) { return zip_.find(record) != nullptr; });
  }

  /// The 1-D tensor of a storage's record, read once.
  const torch::Tensor& data(const PyObj& st) {
    auto& cached = loaded_[st.s];
    if (!cached.defined()) {
      const std::string record = "data/" + st.s;
      uint64_t expected = 0;
      const uint64_t declared = zip_.find(record)->size;  // resolve_storage checked that it exists
      if (__builtin_mul_overflow(static_cast<uint64_t>(st.i), c10::elementSize(st.dtype), &expected) ||
          declared != expected)
        fail("record ", record, " has ", declared, " bytes, expected ", st.i, " × ", c10::toString(st.dtype));
      auto [ptr, n] = reader_.getRecord(record);
      if (n != expected) fail("record ", record, " has ", n, " bytes, expected ", expected);
      cached = torch::empty({st.i}, torch::TensorOptions().dtype(st.dtype));
      if (n) std::memcpy(cached.data_ptr(), ptr.get(), n);
    }
    return cached;
  }

  caffe2::serialize::PyTorchStreamReader& reader_;
  const ZipDirectory& zip_;
  Heap heap_;  // owns every object parse() returns
  std::map<std::string, Obj> storages_;
  std::map<std::string, torch::Tensor> loaded_;
};

/// The tensors of a dict whose keys are strings and whose values are all tensors; `where` names it in errors.
/// `rebuild` turns a (lazy) tensor object into its tensor.
template <class Rebuild>
StateDict to_state_dict(Rebuild&& rebuild, const Obj& dict, const std::string& where) {
  if (dict->kind != Kind::dict) fail(where, " is a ", describe(dict), ", expected a dict of tensors (a state dict)");
  StateDict state;
  for (const auto& [k, v] : dict->entries) {
    if (k->kind != Kind::string) fail(where, " has a ", kind_name(k->kind), " key, expected str keys");
    if (v->kind != Kind::tensor)
      fail(where, " entry '", k->s, "' is a ", describe(v), ", expected a tensor");
    state[k->s] = rebuild(*v);
  }
  return state;
}

bool is_tensor_dict(const Obj& o) {
  if (o->kind != Kind::dict || o->entries.empty()) return false;
  for (const auto& [k, v] : o->entries)
    if (k->kind != Kind::string || v->kind != Kind::tensor) return false;
  return true;
}

/// The own-format extra entries, read back as IValues with LibTorch's TorchScript unpickler.
std::vector<std::pair<std::string, torch::IValue>> read_extra(caffe2::serialize::PyTorchStreamReader& reader) {
  torch::IValue root = torch::jit::readArchiveAndTensors("data", "", "", c10::nullopt, c10::nullopt, at::Device(at::kCPU),
                                                         reader);
  std::vector<std::pair<std::string, torch::IValue>> extra;
  if (!root.isGenericDict()) return extra;
  for (const auto& entry : root.toGenericDict()) {
    if (!entry.key().isString()) continue;
    const std::string name = entry.key().toStringRef();
    if (name != "model" && name != "epoch" && name != "meta") extra.emplace_back(name, entry.value());
  }
  return extra;
}

/// The object holding the state dict in `root` (see read_checkpoint's `key`); sets ck->source_key.
Obj select_state(const Obj& root, const std::string& key, Checkpoint* ck) {
  if (root->kind != Kind::dict)
    fail("the saved object is a ", describe(root), ", expected a dict (a checkpoint or a state dict)");
  Obj source;
  if (key.empty()) {
    for (const char* name : {"model", "model_ema"}) {
      if ((source = dict_get(root, name))) {
        ck->source_key = name;
        break;
      }
    }
    if (!source) {
      if (!is_tensor_dict(root))
        fail("has no 'model' or 'model_ema' entry and its top level is not a dict of tensors (top-level keys: ",
             key_list(root), ")");
      source = root;
    }
  } else {
    source = dict_get(root, key);
    if (!source) {
      if (is_tensor_dict(root))
        fail("has no entry '", key, "': its top level is itself a state dict of ", root->entries.size(),
             " tensors (read it with key \"\"; keys present: ", key_list(root, 8), ")");
      fail("has no entry '", key, "' (keys present: ", key_list(root), ")");
    }
    ck->source_key = key;
  }
  return source;
}

/// How errors name the selected state dict.
std::string state_where(const Checkpoint& ck) {
  return ck.source_key.empty() ? std::string("the top-level state dict") : "entry '" + ck.source_key + "'";
}

Checkpoint read_checkpoint_impl(const std::string& path, const std::string& key) {
  const ZipDirectory zip = ZipDirectory::read(path);
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error& e) {
    fail("unreadable zip archive: ", first_line(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    fail("unreadable zip archive: ", first_line(e.what()));
  }
  Archive archive(*reader, zip);
  Obj root;
  try {
    root = archive.parse();
  } catch (const c10::Error& e) {
    fail("corrupt zip archive: ", first_line(e.what_without_backtrace()));
  }
  Checkpoint ck;
  const Obj source = select_state(root, key, &ck);
  try {
    ck.state = to_state_dict([&](const PyObj& t) { return archive.tensor(t); }, source, state_where(ck));
  } catch (const c10::Error& e) {
    fail("corrupt zip archive: ", first_line(e.what_without_backtrace()));
  }
  if (source != root) {
    if (auto epoch = dict_get(root, "epoch"); epoch && epoch->kind == Kind::integer) ck.epoch = epoch->i;
    auto meta = dict_get(root, "meta");
    if (meta && meta->kind == Kind::string) ck.meta = meta->s;
    // Our own format (written by save_checkpoint through LibTorch's pickler): also return the extra entries.
    if (archive.from_cpp_pickler && meta && meta->kind == Kind::string && dict_get(root, "model")) {
      try {
        ck.extra = read_extra(*reader);
      } catch (const c10::Error& e) {
        fail("cannot read the extra entries: ", first_line(e.what_without_backtrace()));
      } catch (const std::exception& e) {
        fail("cannot read the extra entries: ", first_line(e.what()));
      }
    }
  }
  return ck;
}

// ---------------------------------------------------------------------------------------------------------------------
// Writing.

/// Writes `bytes` to `path` atomically (via "<path>.partial", fsync, rename). Throws FormatError on failure.
void write_atomically(const std::string& path, const std::vector<char>& bytes) {
  const std::string partial = path + ".partial";
  const int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create ", partial, ": ", std::strerror(errno));
  auto abandon = [&](const char* what) {
    const int err = errno;
    ::close(fd);
    ::unlink(partial.c_str());
    fail(what, " ", partial, ": ", std::strerror(err));
  };
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      abandon("cannot write");
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) abandon("cannot flush");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(partial.c_str());
    fail("cannot close ", partial, ": ", std::strerror(err));
  }
  if (std::rename(partial.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(partial.c_str());
    fail("cannot rename ", partial, " to the final name: ", std::strerror(err));
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------------

void save_checkpoint(const std::string& path, const StateDict& model_state, int64_t epoch, const std::string& meta_json,
                     const std::vector<std::pair<std::string, torch::IValue>>& extra) {
  TORCH_CHECK(!path.empty(), "save_checkpoint: empty path");
  c10::Dict<std::string, torch::Tensor> model;
  for (const auto& [k, t] : model_state) {
    TORCH_CHECK(t.defined(), "save_checkpoint: ", path, ": model tensor '", k, "' is undefined");
    torch::Tensor c = t.detach().to(torch::kCPU);
    // Write only the tensor's own elements (a view would otherwise drag its whole storage along).
    if (!c.is_contiguous() || c.storage_offset() != 0 ||
        c.storage().nbytes() != static_cast<size_t>(c.numel()) * c.element_size())
      c = c.clone(at::MemoryFormat::Contiguous);
    model.insert(k, c);
  }
  c10::impl::GenericDict top(c10::StringType::get(), c10::AnyType::get());
  top.insert("model", model);
  top.insert("epoch", epoch);
  top.insert("meta", meta_json);
  for (const auto& [name, value] : extra) {
    TORCH_CHECK(!top.contains(name), "save_checkpoint: ", path, ": extra entry '", name,
                "' is repeated or collides with 'model', 'epoch' or 'meta'");
    top.insert(name, value);
  }
  std::vector<char> bytes;
  try {
    bytes = torch::pickle_save(top);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "save_checkpoint: ", path, ": cannot serialise: ", first_line(e.what_without_backtrace()));
  }
  try {
    write_atomically(path, bytes);
  } catch (const FormatError& e) {
    TORCH_CHECK(false, "save_checkpoint: ", path, ": ", e.what());
  }
}

void write_bytes_atomically(const std::string& path, const std::vector<char>& bytes) {
  try {
    write_atomically(path, bytes);
  } catch (const FormatError& e) {
    TORCH_CHECK(false, path, ": ", e.what());
  }
}

StateDict state_dict(const torch::nn::Module& module) {
  StateDict state;
  for (const auto& p : module.named_parameters(/*recurse=*/true))
    if (p.value().defined()) state[p.key()] = p.value().detach().to(torch::kCPU).clone();
  for (const auto& b : module.named_buffers(/*recurse=*/true))
    if (b.value().defined()) state[b.key()] = b.value().detach().to(torch::kCPU).clone();
  return state;
}

namespace {

/// A .safetensors file (timm / Hugging Face): the whole file is the state dict; our own exports carry the checkpoint's
/// 'meta' JSON and epoch in __metadata__ ("rala_meta", "epoch").
bool read_if_safetensors(const std::string& path, const std::string& key, Checkpoint* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::string first(9, '\0');
  in.read(first.data(), 9);
  first.resize(static_cast<size_t>(in.gcount()));
  in.seekg(0, std::ios::end);
  if (!looks_like_safetensors(first, static_cast<uint64_t>(std::max<std::streamoff>(in.tellg(), 0)))) return false;
  TORCH_CHECK(key.empty() || key == "model", "read_checkpoint: ", path, ": a safetensors file holds one state dict; ",
              "key '", key, "' does not apply (use the default or 'model')");
  auto st = read_safetensors(path);
  out->state = std::move(st.tensors);
  out->source_key = "";
  auto meta = st.metadata.find("rala_meta");
  if (meta != st.metadata.end()) out->meta = meta->second;
  auto epoch = st.metadata.find("epoch");
  if (epoch != st.metadata.end()) {
    char* end = nullptr;
    const long long e = std::strtoll(epoch->second.c_str(), &end, 10);
    if (end != epoch->second.c_str() && *end == '\0') out->epoch = e;
  }
  return true;
}

}  // namespace

Checkpoint read_checkpoint(const std::string& path, const std::string& key) {
  Checkpoint st;
  if (read_if_safetensors(path, key, &st)) return st;
  try {
    return read_checkpoint_impl(path, key);
  } catch (const FormatError& e) {
    TORCH_CHECK(false, "read_checkpoint: ", one_line(path), ": ", e.what());
  }
}

void load_state_dict(torch::nn::Module& module, const StateDict& state, const std::set<std::string>& optional) {
  std::map<std::string, torch::Tensor> targets;
  for (const auto& p : module.named_parameters(/*recurse=*/true))
    if (p.value().defined()) targets[p.key()] = p.value();
  for (const auto& b : module.named_buffers(/*recurse=*/true))
    if (b.value().defined()) targets[b.key()] = b.value();

  std::vector<std::string> missing, unexpected, mismatched;
  for (const auto& [k, t] : targets) {
    auto it = state.find(k);
    if (it == state.end()) {
      if (!optional.count(k)) missing.push_back(k);
    } else if (!it->second.defined() || it->second.sizes() != t.sizes()) {
      mismatched.push_back(k + ": state " + shape_str(it->second) + " vs module " + shape_str(t));
    }
  }
  for (const auto& [k, t] : state)
    if (!targets.count(k)) unexpected.push_back(k);

  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    std::string msg = c10::str("load_state_dict: the state dict (", state.size(), " keys) does not match the module (",
                               targets.size(), " keys):");
    if (!missing.empty()) msg += c10::str(" ", missing.size(), " missing [", list_names(missing), "];");
    if (!unexpected.empty()) msg += c10::str(" ", unexpected.size(), " unexpected [", list_names(unexpected), "];");
    if (!mismatched.empty())
      msg += c10::str(" ", mismatched.size(), " with a different shape [", list_names(mismatched), "];");
    msg.pop_back();
    TORCH_CHECK(false, msg);
  }
  torch::NoGradGuard no_grad;
  for (auto& [k, t] : targets) {
    auto it = state.find(k);
    if (it != state.end()) t.copy_(it->second);
  }
}

namespace detail {

std::string inspect_pickle(const std::string& bytes) {
  try {
    Heap heap;
    std::map<std::string, Obj> storages;
    Unpickler unpickler(heap, bytes.data(), bytes.size(), [&](const Obj& pid) {
      return resolve_storage(heap, pid, storages, [](const std::string&) { return true; });
    });
    const Obj root = unpickler.parse();
    Checkpoint ck;
    const Obj source = select_state(root, "", &ck);
    // The tensor views were checked against their storages when rebuilt; no storage data exists here.
    const StateDict state = to_state_dict([](const PyObj&) { return torch::Tensor(); }, source, state_where(ck));
    return c10::str(state.size(), " tensors in ", state_where(ck), ", ", storages.size(), " storages");
  } catch (const FormatError& e) {
    TORCH_CHECK(false, "inspect_pickle: ", e.what());
  }
}

}  // namespace detail
}  // namespace rala
