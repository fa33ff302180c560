#pragma once
/// \file h5_vlen_check.h
/// Internal (h5_store.cpp): bounds checks of attribute messages and variable-length strings before libhdf5 reads them.
///
/// Why: libhdf5 1.10.8 (Debian 12) trusts the length a variable-length string declares in the attribute's raw data and
/// allocates it before it reads the string from the global heap (a 12 KB corrupted file asked for 1.7 GB, found by
/// fuzz/report_input_fuzz.cpp), and it can loop forever on a corrupted global heap collection. Neither is reachable
/// through its public API before the read, so this reads the attribute's raw bytes from the file itself: the object
/// header (version 1 or 2, continuation chunks followed within the file), the attribute message of that name, its
/// (length, heap collection, index) triple, and the collection's objects (signature, sizes, each step forward, all
/// within the file and the collection). Every read is bounded by the file's size.

#include <cstdint>
#include <string>

namespace rala::h5::detail {

/// Why the scalar variable-length string attribute `name` of the object whose header starts at `header_addr` (an
/// HDF5 address: relative to `base`, the superblock's byte offset, i.e. the user block's size) of the file at `path`
/// must not be read by libhdf5, or "" when its declared length and heap object are consistent
/// (or when the attribute is not in the object header itself, e.g. dense attribute storage, which this does not
/// parse: then libhdf5 reads it unchecked). `offset_size` / `length_size`: the superblock's sizes (normally 8).
std::string vlen_attribute_problem(const std::string& path, uint64_t base, uint64_t header_addr,
                                   const std::string& name, unsigned offset_size = 8, unsigned length_size = 8);

/// Why libhdf5 must not iterate or open the attributes of the object whose header starts at `header_addr`, or "":
/// every attribute message in the header must have a known version, a NUL-terminated name and parts that fit in it
/// (libhdf5 1.10.8 dereferences a null pointer cleaning up after a malformed one while it iterates attributes, which
/// H5Aexists, H5Aopen_by_name and H5Aget_num_attrs all do).
std::string attribute_messages_problem(const std::string& path, uint64_t base, uint64_t header_addr,
                                       unsigned offset_size = 8, unsigned length_size = 8);

/// Why libhdf5 must not load the object header at `header_addr` (+ base), or "": its chunks must lie in the file and
/// its messages in their chunks (libhdf5 1.10.8 leaks the partly built header when such a load fails).
std::string object_header_problem(const std::string& path, uint64_t base, uint64_t header_addr,
                                  unsigned offset_size = 8, unsigned length_size = 8);

/// Why libhdf5 must not open the file at `path`, or "": its root group's object header (located through the
/// superblock, versions 0 to 3) must lie in the file with every chunk (libhdf5 1.10.8 allocates a version 2 header's
/// declared first-chunk size while H5Fopen loads it: 0x4242424242424242 bytes for a fuzzed 12 KB file).
std::string root_header_problem(const std::string& path);

/// The same for the `count` variable-length strings of a contiguous dataset whose raw data starts at byte
/// `data_offset` (H5Dget_offset: an absolute offset): every element's length and heap object. Compact and chunked
/// layouts are not parsed (the caller reads those unchecked; rala writes contiguous ones).
std::string vlen_dataset_problem(const std::string& path, uint64_t base, uint64_t data_offset, uint64_t count,
                                 unsigned offset_size = 8, unsigned length_size = 8);

}  // namespace rala::h5::detail
