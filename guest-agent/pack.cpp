// SPDX-License-Identifier: Apache-2.0
// Pack writer and strict reader (ustar inside gzip, through zlib), with CRIU's page
// images stored page-deduplicated.
#include "guest-agent/pack.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <unordered_map>

#include "common/fd.h"
#include "common/sys.h"

namespace seamless::guest {
namespace {

constexpr size_t kBlock = 512;

struct GzCloser {
  void operator()(gzFile f) const {
    if (f) gzclose(f);
  }
};
using Gz = std::unique_ptr<gzFile_s, GzCloser>;

void put_octal(char* field, size_t width, uint64_t value) {
  // width-1 digits, NUL terminated, zero padded.
  std::snprintf(field, width, "%0*llo", int(width - 1), static_cast<unsigned long long>(value));
}

Result<uint64_t> get_octal(const char* field, size_t width, std::string_view what) {
  uint64_t v = 0;
  size_t i = 0;
  while (i < width && field[i] == ' ') ++i;
  size_t digits = 0;
  for (; i < width && field[i] >= '0' && field[i] <= '7'; ++i, ++digits) {
    if (v >> 60) return make_error(ErrorKind::Protocol, "pack: ", what, " field overflows");
    v = v * 8 + uint64_t(field[i] - '0');
  }
  for (; i < width; ++i)
    if (field[i] != '\0' && field[i] != ' ') return make_error(ErrorKind::Protocol, "pack: bad ", what, " field");
  if (digits == 0) return make_error(ErrorKind::Protocol, "pack: empty ", what, " field");
  return v;
}

std::string field_string(const char* field, size_t width) { return std::string(field, strnlen(field, width)); }

uint64_t header_checksum(const unsigned char* h) {
  uint64_t sum = 0;
  for (size_t i = 0; i < kBlock; ++i) sum += (i >= 148 && i < 156) ? ' ' : h[i];
  return sum;
}

Result<void> gz_write(gzFile f, const void* data, size_t n, const std::string& path) {
  if (n == 0) return ok();
  if (gzwrite(f, data, unsigned(n)) != int(n)) {
    int errnum = 0;
    const char* msg = gzerror(f, &errnum);
    return make_error(ErrorKind::System, "writing pack `", path, "`: ", errnum == Z_ERRNO ? std::strerror(errno) : msg);
  }
  return ok();
}

Result<void> write_header(gzFile f, const std::string& name, uint64_t size, const std::string& path) {
  unsigned char h[kBlock] = {};
  char* hc = reinterpret_cast<char*>(h);
  std::string prefix, base = name;
  if (name.size() > 99) {
    auto slash = name.rfind('/', 154);
    if (slash == std::string::npos || name.size() - slash - 1 > 99)
      return make_error(ErrorKind::Invalid, "pack entry name `", name, "` is too long for ustar");
    prefix = name.substr(0, slash);
    base = name.substr(slash + 1);
  }
  std::memcpy(hc, base.data(), base.size());
  put_octal(hc + 100, 8, 0644);
  put_octal(hc + 108, 8, 0);
  put_octal(hc + 116, 8, 0);
  put_octal(hc + 124, 12, size);
  put_octal(hc + 136, 12, 0);
  hc[156] = '0';
  std::memcpy(hc + 257, "ustar", 6);
  std::memcpy(hc + 263, "00", 2);
  std::memcpy(hc + 345, prefix.data(), prefix.size());
  std::snprintf(hc + 148, 8, "%06llo", static_cast<unsigned long long>(header_checksum(h)));
  hc[155] = ' ';
  return gz_write(f, h, kBlock, path);
}

Result<void> write_entry(gzFile f, const std::string& name, std::string_view data, const std::string& path) {
  SL_TRY(write_header(f, name, data.size(), path));
  SL_TRY(gz_write(f, data.data(), data.size(), path));
  static const char zeros[kBlock] = {};
  return gz_write(f, zeros, (kBlock - data.size() % kBlock) % kBlock, path);
}

// Reads exactly n bytes; a short read is a truncated pack.
Result<void> gz_read(gzFile f, void* buf, size_t n, const std::string& pack) {
  size_t got = 0;
  while (got < n) {
    int r = gzread(f, static_cast<char*>(buf) + got, unsigned(std::min<size_t>(n - got, 1 << 20)));
    if (r < 0) {
      int errnum = 0;
      const char* msg = gzerror(f, &errnum);
      return make_error(ErrorKind::Protocol, "pack `", pack,
                        "` is corrupt: ", errnum == Z_ERRNO ? std::strerror(errno) : msg);
    }
    if (r == 0) return make_error(ErrorKind::Protocol, "pack `", pack, "` is truncated");
    got += size_t(r);
  }
  return ok();
}

// --- Page images -------------------------------------------------------------------
// CRIU writes one pages-N.img per process. The workers of a forking server (php-cgi
// children, apache's mod_php processes) hold mostly the same pages, and gzip's 32 KiB
// window cannot see repeats megabytes apart, so page images go into the pack as
// `<name>.dedup`: the magic, then records
//   'L' + 4096 bytes     a literal page (literals are numbered across the whole pack),
//   'R' + u32 LE index   a copy of an earlier literal page,
//   'T' + u16 LE n + n bytes   the file's last, partial page (n in 1..4095; last record).

constexpr size_t kPage = 4096;
constexpr char kDedupMagic[8] = {'S', 'L', 'P', 'A', 'G', 'E', 'S', '1'};
constexpr std::string_view kDedupSuffix = ".dedup";
// Page images kept open for copies, on either side; later ones go in plain.
constexpr size_t kMaxDedupFiles = 256;

bool is_page_image(const std::string& rel) {
  const std::string base = std::filesystem::path(rel).filename().string();
  return base.rfind("pages-", 0) == 0 && base.size() > 10 && base.compare(base.size() - 4, 4, ".img") == 0;
}

uint64_t page_hash(const char* page) {
  uint64_t h = 0x243f6a8885a308d3ull;
  for (size_t i = 0; i < kPage; i += 8) {
    uint64_t w;
    std::memcpy(&w, page + i, 8);
    h = (h ^ w) * 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
  }
  return h;
}

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(char(v >> (8 * i)));
}

// The writer's memory of literal pages: where each one is in the page images read so
// far, found by hash and confirmed byte for byte.
class PageIndex {
 public:
  // Encodes `data` (the image read from `fd`); Err only on a failed read back.
  Result<std::string> encode(std::string_view data, UniqueFd fd, const std::string& what) {
    const uint32_t file = uint32_t(files_.size());
    files_.push_back(std::move(fd));
    std::string out(kDedupMagic, sizeof kDedupMagic);
    out.reserve(data.size() / 4);
    size_t off = 0;
    for (; off + kPage <= data.size(); off += kPage) {
      const char* page = data.data() + off;
      auto& candidates = by_hash_[page_hash(page)];
      auto same = SL_TRY(find(candidates, page, file, data, what));
      if (same) {
        out.push_back('R');
        put_le(out, *same, 4);
        continue;
      }
      candidates.push_back(uint32_t(literals_.size()));
      literals_.push_back({file, off});
      out.push_back('L');
      out.append(page, kPage);
    }
    if (off < data.size()) {
      out.push_back('T');
      put_le(out, data.size() - off, 2);
      out.append(data.substr(off));
    }
    return out;
  }
  size_t files() const { return files_.size(); }

 private:
  struct Literal {
    uint32_t file;
    uint64_t offset;
  };
  Result<std::optional<uint32_t>> find(const std::vector<uint32_t>& candidates, const char* page, uint32_t file,
                                       std::string_view current, const std::string& what) {
    char buf[kPage];
    for (uint32_t idx : candidates) {
      const Literal& lit = literals_[idx];
      const char* theirs = current.data() + lit.offset;
      if (lit.file != file) {
        ssize_t n = ::pread(files_[lit.file].get(), buf, kPage, off_t(lit.offset));
        if (n != ssize_t(kPage)) return errno_error(cat("reading back a page for `", what, "`"));
        theirs = buf;
      }
      if (std::memcmp(theirs, page, kPage) == 0) return std::optional<uint32_t>(idx);
    }
    return std::optional<uint32_t>();
  }
  std::vector<UniqueFd> files_;
  std::vector<Literal> literals_;
  std::unordered_map<uint64_t, std::vector<uint32_t>> by_hash_;
};

// Creates the directories of `name` below dirfd (never following links) and returns
// an fd of the innermost one.
Result<UniqueFd> open_parent(int root, const std::string& name, std::string* leaf) {
  UniqueFd cur(::dup(root));
  if (!cur.valid()) return errno_error("dup");
  size_t start = 0;
  for (;;) {
    auto slash = name.find('/', start);
    if (slash == std::string::npos) {
      *leaf = name.substr(start);
      return cur;
    }
    std::string comp = name.substr(start, slash - start);
    if (::mkdirat(cur.get(), comp.c_str(), 0700) != 0 && errno != EEXIST)
      return errno_error(cat("mkdir `", comp, "` in the pack directory"));
    int next = ::openat(cur.get(), comp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) return errno_error(cat("open `", name.substr(0, slash), "` in the pack directory"));
    cur = UniqueFd(next);
    start = slash + 1;
  }
}

// The bytes of one archive entry, so that a record cannot run past its end.
class EntryData {
 public:
  EntryData(gzFile f, uint64_t size, const std::string& pack, const std::string& name)
      : f_(f), left_(size), pack_(pack), name_(name) {}
  Result<void> read(void* buf, size_t n) {
    if (n > left_) return make_error(ErrorKind::Protocol, "pack `", pack_, "`: `", name_, "` ends inside a record");
    SL_TRY(gz_read(f_, buf, n, pack_));
    left_ -= n;
    return ok();
  }
  uint64_t left() const { return left_; }

 private:
  gzFile f_;
  uint64_t left_;
  const std::string& pack_;
  const std::string& name_;
};

uint64_t get_le(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

// The reader's side of the page images: the ones written so far (open, for copies) and
// where each literal page is.
struct PageImages {
  struct Literal {
    uint32_t file;
    uint64_t offset;
  };
  std::vector<UniqueFd> files;
  std::vector<Literal> literals;
};

// Decodes a `.dedup` entry into `out`, counting what it writes against the limits.
Result<void> decode_pages(EntryData& in, int out, PageImages& images, const std::string& pack, const std::string& name,
                          const PackLimits& limits, uint64_t* total) {
  auto refused = [&](auto&&... why) {
    return make_error(ErrorKind::Protocol, "pack `", pack, "`: `", name, "` ", why...);
  };
  char magic[sizeof kDedupMagic];
  SL_TRY(in.read(magic, sizeof magic));
  if (std::memcmp(magic, kDedupMagic, sizeof magic) != 0) return refused("is not a page image (bad magic)");
  if (images.files.size() >= kMaxDedupFiles) return refused("is one page image more than ", kMaxDedupFiles);
  UniqueFd self(::fcntl(out, F_DUPFD_CLOEXEC, 0));
  if (!self.valid()) return errno_error("dup");
  const uint32_t file = uint32_t(images.files.size());
  images.files.push_back(std::move(self));
  uint64_t size = 0;
  char page[kPage];
  while (in.left() > 0) {
    unsigned char tag;
    SL_TRY(in.read(&tag, 1));
    size_t n = kPage;
    if (tag == 'L') {
      SL_TRY(in.read(page, kPage));
      images.literals.push_back({file, size});
    } else if (tag == 'R') {
      unsigned char idx[4];
      SL_TRY(in.read(idx, 4));
      uint64_t i = get_le(idx, 4);
      if (i >= images.literals.size())
        return refused("copies page ", i, " but the pack has ", images.literals.size(), " so far");
      const auto& lit = images.literals[i];
      if (::pread(images.files[lit.file].get(), page, kPage, off_t(lit.offset)) != ssize_t(kPage))
        return errno_error(cat("reading back page ", i, " for `", name, "`"));
    } else if (tag == 'T') {
      unsigned char len[2];
      SL_TRY(in.read(len, 2));
      n = size_t(get_le(len, 2));
      if (n == 0 || n >= kPage) return refused("has a last page of ", n, " bytes");
      SL_TRY(in.read(page, n));
      if (in.left() != 0) return refused("has records after its last page");
    } else {
      return refused("has an unknown record (code ", int(tag), ")");
    }
    size += n;
    *total += n;
    if (size > limits.max_file) return refused("is too large (more than ", limits.max_file, " bytes)");
    if (*total > limits.max_total)
      return make_error(ErrorKind::Protocol, "pack `", pack, "` unpacks to more than ", limits.max_total, " bytes");
    SL_TRY(sys::write_all(out, std::string_view(page, n), Deadline(Millis(60000))));
  }
  return ok();
}

}  // namespace

Result<void> check_entry_name(std::string_view name) {
  if (name.empty()) return make_error(ErrorKind::Protocol, "empty entry name");
  if (name.size() > 255) return make_error(ErrorKind::Protocol, "entry name longer than 255 bytes");
  if (name[0] == '/') return make_error(ErrorKind::Protocol, "absolute path `", name, "`");
  int depth = 0;
  size_t start = 0;
  while (start <= name.size()) {
    auto slash = name.find('/', start);
    std::string_view comp =
        name.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (comp.empty()) return make_error(ErrorKind::Protocol, "empty path component in `", name, "`");
    if (comp == "..") return make_error(ErrorKind::Protocol, "`..` in `", name, "`");
    if (comp == ".") return make_error(ErrorKind::Protocol, "`.` in `", name, "`");
    for (char c : comp)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' || c == '+'))
        return make_error(ErrorKind::Protocol, "unexpected character (code ", int(static_cast<unsigned char>(c)),
                          ") in entry name");
    if (++depth > 8) return make_error(ErrorKind::Protocol, "`", name, "` is nested too deeply");
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return ok();
}

Result<void> write_pack(const std::string& path, const std::string& manifest_json, const std::string& root,
                        const std::vector<std::string>& rel_paths) {
  const std::string tmp = path + ".part";
  UniqueFd fd = SL_TRY(sys::open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600));
  Gz f(gzdopen(fd.get(), "wb1"));
  if (!f) return make_error(ErrorKind::System, "gzdopen `", tmp, "`");
  fd.release();  // gzclose closes it
  auto body = [&]() -> Result<void> {
    SL_TRY(write_entry(f.get(), kManifestName, manifest_json, tmp));
    PageIndex pages;
    for (const auto& rel : rel_paths) {
      SL_TRY_CTX(check_entry_name(rel), "adding `", rel, "` to a pack");
      const std::string file = root + "/" + rel;
      auto data = SL_TRY(sys::read_file(file, uint64_t(1) << 31));
      if (!is_page_image(rel) || pages.files() >= kMaxDedupFiles) {
        SL_TRY(write_entry(f.get(), rel, data, tmp));
        continue;
      }
      UniqueFd again = SL_TRY(sys::open(file, O_RDONLY));
      auto encoded = SL_TRY(pages.encode(data, std::move(again), file));
      SL_TRY(write_entry(f.get(), rel + std::string(kDedupSuffix), encoded, tmp));
    }
    static const char zeros[2 * kBlock] = {};
    SL_TRY(gz_write(f.get(), zeros, sizeof zeros, tmp));
    int rc = gzclose(f.release());
    if (rc != Z_OK) return make_error(ErrorKind::System, "closing pack `", tmp, "` (zlib error ", rc, ")");
    if (::rename(tmp.c_str(), path.c_str()) != 0) return errno_error(cat("rename `", tmp, "` to `", path, "`"));
    return ok();
  };
  auto done = body();
  if (!done.ok()) ::unlink(tmp.c_str());
  return done;
}

Result<std::string> unpack(const std::string& pack, const std::string& dest, const PackLimits& limits) {
  UniqueFd in = SL_TRY(sys::open(pack, O_RDONLY));
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) return errno_error(cat("stat `", pack, "`"));
  if (!S_ISREG(st.st_mode)) return make_error(ErrorKind::Invalid, "pack `", pack, "` is not a regular file");
  Gz f(gzdopen(in.get(), "rb"));
  if (!f) return make_error(ErrorKind::System, "gzdopen `", pack, "`");
  in.release();
  gzbuffer(f.get(), 1 << 17);

  if (::mkdir(dest.c_str(), 0700) != 0) return errno_error(cat("mkdir `", dest, "`"));
  auto cleanup = [&] {
    std::error_code ec;
    std::filesystem::remove_all(dest, ec);
  };
  UniqueFd root(::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!root.valid()) {
    cleanup();
    return errno_error(cat("open `", dest, "`"));
  }

  auto body = [&]() -> Result<std::string> {
    std::string manifest;
    std::set<std::string> seen;
    uint64_t total = 0;
    PageImages images;
    std::vector<char> buf(1 << 16);
    for (size_t entries = 0;; ++entries) {
      unsigned char h[kBlock];
      SL_TRY(gz_read(f.get(), h, kBlock, pack));
      if (entries == 0 && gzdirect(f.get()))
        return make_error(ErrorKind::Protocol, "`", pack, "` is not gzip-compressed");
      if (std::all_of(h, h + kBlock, [](unsigned char c) { return c == 0; })) {
        if (entries == 0) return make_error(ErrorKind::Protocol, "pack `", pack, "` is empty");
        // End of archive. Drain the rest (zero padding) so zlib checks the gzip trailer.
        for (size_t pad = 0; pad < 64; ++pad) {
          int r = gzread(f.get(), h, kBlock);
          if (r == 0) return manifest;
          if (r < 0) return make_error(ErrorKind::Protocol, "pack `", pack, "` is corrupt at its end");
          if (!std::all_of(h, h + r, [](unsigned char c) { return c == 0; }))
            return make_error(ErrorKind::Protocol, "pack `", pack, "` has data after its end");
        }
        return make_error(ErrorKind::Protocol, "pack `", pack, "` has too much padding after its end");
      }
      if (entries >= limits.max_entries)
        return make_error(ErrorKind::Protocol, "pack `", pack, "` has more than ", limits.max_entries, " entries");
      const char* hc = reinterpret_cast<const char*>(h);
      if (std::memcmp(hc + 257, "ustar", 5) != 0)
        return make_error(ErrorKind::Protocol, "pack `", pack, "`: entry ", entries + 1, " is not a ustar header");
      uint64_t sum = SL_TRY(get_octal(hc + 148, 8, "checksum"));
      if (sum != header_checksum(h))
        return make_error(ErrorKind::Protocol, "pack `", pack, "`: entry ", entries + 1, " has a bad header checksum");
      std::string name = field_string(hc, 100);
      std::string prefix = field_string(hc + 345, 155);
      if (!prefix.empty()) name = prefix + "/" + name;
      const char type = hc[156];
      bool is_dir = type == '5';
      if (is_dir && !name.empty() && name.back() == '/') name.pop_back();
      if (auto named = check_entry_name(name); !named.ok())
        return named.error().wrap(cat("pack `", pack, "`: entry ", entries + 1));
      switch (type) {
        case '0':
        case '\0':
        case '5': break;
        case '1':
          return make_error(ErrorKind::Protocol, "pack `", pack, "`: `", name, "` is a hard link (not allowed)");
        case '2': return make_error(ErrorKind::Protocol, "pack `", pack, "`: `", name, "` is a symlink (not allowed)");
        default:
          return make_error(ErrorKind::Protocol, "pack `", pack, "`: `", name, "` has entry type `", type,
                            "` (only files and directories are allowed)");
      }
      uint64_t size = SL_TRY(get_octal(hc + 124, 12, "size"));
      if (is_dir && size != 0)
        return make_error(ErrorKind::Protocol, "pack `", pack, "`: directory `", name, "` has a size");
      if (entries == 0 && (is_dir || name != kManifestName))
        return make_error(ErrorKind::Protocol, "pack `", pack, "` does not start with ", kManifestName);
      if (entries > 0 && name == kManifestName)
        return make_error(ErrorKind::Protocol, "pack `", pack, "` holds a second ", kManifestName);
      if (size > (entries == 0 ? limits.max_manifest : limits.max_file))
        return make_error(ErrorKind::Protocol, "pack `", pack, "`: `", name, "` is too large (", size, " bytes)");
      // A page image arrives deduplicated and is written under its own name.
      const bool dedup = !is_dir && entries > 0 && name.size() > kDedupSuffix.size() &&
                         name.compare(name.size() - kDedupSuffix.size(), kDedupSuffix.size(), kDedupSuffix) == 0;
      const std::string file = dedup ? name.substr(0, name.size() - kDedupSuffix.size()) : name;
      if (dedup) {
        if (auto named = check_entry_name(file); !named.ok())
          return named.error().wrap(cat("pack `", pack, "`: entry ", entries + 1));
      } else {
        total += size;
      }
      if (total > limits.max_total)
        return make_error(ErrorKind::Protocol, "pack `", pack, "` unpacks to more than ", limits.max_total, " bytes");
      if (!seen.insert(file).second)
        return make_error(ErrorKind::Protocol, "pack `", pack, "` holds `", file, "` twice");

      std::string leaf;
      UniqueFd parent = SL_TRY(open_parent(root.get(), file, &leaf));
      if (is_dir) {
        if (::mkdirat(parent.get(), leaf.c_str(), 0700) != 0 && errno != EEXIST)
          return errno_error(cat("mkdir `", name, "` in `", dest, "`"));
        continue;
      }
      UniqueFd out(::openat(parent.get(), leaf.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!out.valid()) return errno_error(cat("create `", file, "` in `", dest, "`"));
      if (dedup) {
        EntryData data(f.get(), size, pack, name);
        SL_TRY(decode_pages(data, out.get(), images, pack, name, limits, &total));
        if (size % kBlock) SL_TRY(gz_read(f.get(), buf.data(), kBlock - size % kBlock, pack));
        continue;
      }
      uint64_t left = size;
      while (left > 0) {
        size_t n = size_t(std::min<uint64_t>(left, buf.size()));
        SL_TRY(gz_read(f.get(), buf.data(), n, pack));
        if (entries == 0) manifest.append(buf.data(), n);
        SL_TRY(sys::write_all(out.get(), std::string_view(buf.data(), n), Deadline(Millis(60000))));
        left -= n;
      }
      if (size % kBlock) SL_TRY(gz_read(f.get(), buf.data(), kBlock - size % kBlock, pack));
    }
  };
  auto result = body();
  if (!result.ok()) cleanup();
  return result;
}

std::vector<std::string> list_pack_files(const std::string& root) {
  std::vector<std::string> out;
  std::error_code ec;
  // Lexically relative: `root` may pass through a magic link such as /proc/PID/root
  // (sinkd's containers), which resolving would take back to this process's own root.
  const std::filesystem::path base(root);
  for (std::filesystem::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    // CRIU's logs (verbose: often larger than the images) and pid files stay here.
    const std::string ext = it->path().extension().string();
    if (ext == ".log" || ext == ".pid") continue;
    out.push_back(it->path().lexically_relative(base).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace seamless::guest
