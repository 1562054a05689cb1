// SPDX-License-Identifier: Apache-2.0
// The compressed stream under a pack: gzip (zlib) or xz (liblzma). Writers pick one;
// readers tell them apart by their magic bytes, and check the stream's own checksum
// and that nothing follows it.
#pragma once

#include <memory>
#include <string>

#include "common/fd.h"
#include "common/result.h"

namespace seamless::packfmt {

enum class Compression {
  Gzip,  // level 1: fast, for packs made on the wake path
  Xz,    // preset 3: about half the size, several times slower to write
};

// "gzip" / "xz"; parse_compression() takes the same names.
const char* to_string(Compression c);
Result<Compression> parse_compression(std::string_view name);

class CompressedWriter {
 public:
  virtual ~CompressedWriter() = default;
  static Result<std::unique_ptr<CompressedWriter>> open(UniqueFd fd, Compression c, const std::string& path);
  virtual Result<void> write(const void* data, size_t n) = 0;
  // Flushes the stream's end; the fd is closed either way.
  virtual Result<void> finish() = 0;
};

class CompressedReader {
 public:
  virtual ~CompressedReader() = default;
  // Err when the file is neither gzip nor xz.
  static Result<std::unique_ptr<CompressedReader>> open(UniqueFd fd, const std::string& path);
  // Up to n bytes; 0 at the end of the stream (after its checksum was checked).
  virtual Result<size_t> read(void* buf, size_t n) = 0;
  virtual Compression kind() const = 0;

  // Exactly n bytes; running out is a truncated pack.
  Result<void> read_exact(void* buf, size_t n);

 protected:
  explicit CompressedReader(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace seamless::packfmt
