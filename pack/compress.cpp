// SPDX-License-Identifier: Apache-2.0
// gzip and xz streams for packs.
#include "pack/compress.h"

#include <lzma.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>

#include "common/sys.h"
#include "common/time.h"

namespace seamless::packfmt {
namespace {

constexpr int kXzPreset = 3;
// The decoder of a preset-3 stream needs ~5 MiB; a hostile header asking for more is refused.
constexpr uint64_t kXzMemLimit = uint64_t(64) << 20;
constexpr size_t kChunk = 1 << 16;
constexpr unsigned char kGzipMagic[] = {0x1f, 0x8b};
constexpr unsigned char kXzMagic[] = {0xfd, '7', 'z', 'X', 'Z', 0x00};

struct GzCloser {
  void operator()(gzFile f) const {
    if (f) gzclose(f);
  }
};
using Gz = std::unique_ptr<gzFile_s, GzCloser>;

std::string zlib_message(gzFile f) {
  int errnum = 0;
  const char* msg = gzerror(f, &errnum);
  return errnum == Z_ERRNO ? std::strerror(errno) : msg;
}

std::string lzma_message(lzma_ret r) {
  switch (r) {
    case LZMA_MEM_ERROR: return "out of memory";
    case LZMA_MEMLIMIT_ERROR: return "the stream needs more memory than allowed";
    case LZMA_FORMAT_ERROR: return "not an xz stream";
    case LZMA_OPTIONS_ERROR: return "unsupported xz options";
    case LZMA_DATA_ERROR: return "corrupt xz data";
    case LZMA_BUF_ERROR: return "truncated";
    default: return cat("liblzma error ", int(r));
  }
}

class GzipWriter final : public CompressedWriter {
 public:
  GzipWriter(Gz f, std::string path) : f_(std::move(f)), path_(std::move(path)) {}
  Result<void> write(const void* data, size_t n) override {
    if (n == 0) return ok();
    if (gzwrite(f_.get(), data, unsigned(n)) != int(n))
      return make_error(ErrorKind::System, "writing pack `", path_, "`: ", zlib_message(f_.get()));
    return ok();
  }
  Result<void> finish() override {
    int rc = gzclose(f_.release());
    if (rc != Z_OK) return make_error(ErrorKind::System, "closing pack `", path_, "` (zlib error ", rc, ")");
    return ok();
  }

 private:
  Gz f_;
  std::string path_;
};

class XzWriter final : public CompressedWriter {
 public:
  XzWriter(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)), out_(kChunk, '\0') {}
  ~XzWriter() override { lzma_end(&s_); }
  Result<void> init() {
    lzma_ret r = lzma_easy_encoder(&s_, kXzPreset, LZMA_CHECK_CRC64);
    if (r != LZMA_OK) return make_error(ErrorKind::System, "xz encoder for `", path_, "`: ", lzma_message(r));
    return ok();
  }
  Result<void> write(const void* data, size_t n) override {
    s_.next_in = static_cast<const uint8_t*>(data);
    s_.avail_in = n;
    while (s_.avail_in > 0) SL_TRY(step(LZMA_RUN));
    return ok();
  }
  Result<void> finish() override {
    for (;;)
      if (SL_TRY(step(LZMA_FINISH))) break;
    UniqueFd fd = std::move(fd_);
    return ok();
  }

 private:
  // One lzma_code call; writes out a full (or, at the end, the last) output buffer.
  // True once the stream's end is written.
  Result<bool> step(lzma_action action) {
    s_.next_out = reinterpret_cast<uint8_t*>(out_.data());
    s_.avail_out = out_.size();
    lzma_ret r = lzma_code(&s_, action);
    if (r != LZMA_OK && r != LZMA_STREAM_END)
      return make_error(ErrorKind::System, "compressing pack `", path_, "`: ", lzma_message(r));
    SL_TRY(
        sys::write_all(fd_.get(), std::string_view(out_.data(), out_.size() - s_.avail_out), Deadline(Millis(60000))));
    return r == LZMA_STREAM_END;
  }
  UniqueFd fd_;
  std::string path_;
  std::string out_;
  lzma_stream s_ = LZMA_STREAM_INIT;
};

class GzipReader final : public CompressedReader {
 public:
  GzipReader(Gz f, std::string path) : CompressedReader(std::move(path)), f_(std::move(f)) {}
  Result<size_t> read(void* buf, size_t n) override {
    int r = gzread(f_.get(), buf, unsigned(std::min<size_t>(n, 1 << 20)));
    if (r < 0) return make_error(ErrorKind::Protocol, "pack `", path_, "` is corrupt: ", zlib_message(f_.get()));
    return size_t(r);
  }
  Compression kind() const override { return Compression::Gzip; }

 private:
  Gz f_;
};

class XzReader final : public CompressedReader {
 public:
  XzReader(UniqueFd fd, std::string path) : CompressedReader(std::move(path)), fd_(std::move(fd)), in_(kChunk, '\0') {}
  ~XzReader() override { lzma_end(&s_); }
  Result<void> init() {
    lzma_ret r = lzma_stream_decoder(&s_, kXzMemLimit, 0);
    if (r != LZMA_OK) return make_error(ErrorKind::System, "xz decoder for `", path_, "`: ", lzma_message(r));
    return ok();
  }
  Result<size_t> read(void* buf, size_t n) override {
    s_.next_out = static_cast<uint8_t*>(buf);
    s_.avail_out = n;
    while (!ended_ && s_.avail_out == n) {
      if (s_.avail_in == 0 && !eof_) {
        ssize_t got;
        do got = ::read(fd_.get(), in_.data(), in_.size());
        while (got < 0 && errno == EINTR);
        if (got < 0) return errno_error(cat("read `", path_, "`"));
        eof_ = got == 0;
        s_.next_in = reinterpret_cast<const uint8_t*>(in_.data());
        s_.avail_in = size_t(got);
      }
      lzma_ret r = lzma_code(&s_, eof_ ? LZMA_FINISH : LZMA_RUN);
      if (r == LZMA_STREAM_END) {
        ended_ = true;
        char extra;
        if (s_.avail_in > 0 || (!eof_ && ::read(fd_.get(), &extra, 1) > 0))
          return make_error(ErrorKind::Protocol, "pack `", path_, "` has data after its xz stream");
      } else if (r != LZMA_OK) {
        return make_error(ErrorKind::Protocol, "pack `", path_, "` is ",
                          r == LZMA_BUF_ERROR ? "" : "corrupt: ", lzma_message(r));
      }
    }
    return n - s_.avail_out;
  }
  Compression kind() const override { return Compression::Xz; }

 private:
  UniqueFd fd_;
  std::string in_;
  lzma_stream s_ = LZMA_STREAM_INIT;
  bool eof_ = false, ended_ = false;
};

}  // namespace

const char* to_string(Compression c) { return c == Compression::Xz ? "xz" : "gzip"; }

Result<Compression> parse_compression(std::string_view name) {
  if (name == "gzip") return Compression::Gzip;
  if (name == "xz") return Compression::Xz;
  return make_error(ErrorKind::Invalid, "unknown compression `", name, "` (gzip or xz)");
}

Result<std::unique_ptr<CompressedWriter>> CompressedWriter::open(UniqueFd fd, Compression c, const std::string& path) {
  if (c == Compression::Xz) {
    auto w = std::make_unique<XzWriter>(std::move(fd), path);
    SL_TRY(w->init());
    return std::unique_ptr<CompressedWriter>(std::move(w));
  }
  Gz f(gzdopen(fd.get(), "wb1"));
  if (!f) return make_error(ErrorKind::System, "gzdopen `", path, "`");
  fd.release();  // gzclose closes it
  return std::unique_ptr<CompressedWriter>(std::make_unique<GzipWriter>(std::move(f), path));
}

Result<std::unique_ptr<CompressedReader>> CompressedReader::open(UniqueFd fd, const std::string& path) {
  unsigned char magic[sizeof kXzMagic] = {};
  ssize_t n = ::pread(fd.get(), magic, sizeof magic, 0);
  if (n < 0) return errno_error(cat("read `", path, "`"));
  if (n >= ssize_t(sizeof kXzMagic) && std::memcmp(magic, kXzMagic, sizeof kXzMagic) == 0) {
    auto r = std::make_unique<XzReader>(std::move(fd), path);
    SL_TRY(r->init());
    return std::unique_ptr<CompressedReader>(std::move(r));
  }
  if (n < ssize_t(sizeof kGzipMagic) || std::memcmp(magic, kGzipMagic, sizeof kGzipMagic) != 0)
    return make_error(ErrorKind::Protocol, "`", path, "` is not a pack (neither gzip- nor xz-compressed)");
  // A large input buffer for a large pack; a small pack (a hand-back of one small gateway,
  // a damaged file) needs no 128 KiB buffer and zlib's 384 KiB of them.
  struct stat st {};
  const unsigned buffer = ::fstat(fd.get(), &st) == 0 && st.st_size < (1 << 17) ? 8192 : 1 << 17;
  Gz f(gzdopen(fd.get(), "rb"));
  if (!f) return make_error(ErrorKind::System, "gzdopen `", path, "`");
  fd.release();
  gzbuffer(f.get(), buffer);
  return std::unique_ptr<CompressedReader>(std::make_unique<GzipReader>(std::move(f), path));
}

Result<void> CompressedReader::read_exact(void* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    size_t r = SL_TRY(read(static_cast<char*>(buf) + got, n - got));
    if (r == 0) return make_error(ErrorKind::Protocol, "pack `", path_, "` is truncated");
    got += r;
  }
  return ok();
}

}  // namespace seamless::packfmt
