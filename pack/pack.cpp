// SPDX-License-Identifier: Apache-2.0
// Pack writer and strict reader (ustar inside gzip or xz), with CRIU's page images stored
// page-deduplicated and, where a page is a private copy of a mapped file, as its
// difference from the file.
#include "pack/pack.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <unordered_map>

#include "common/encoding.h"
#include "common/fd.h"
#include "common/sys.h"
#include "common/time.h"
#include "pack/compress.h"
#include "pack/criu_images.h"
#include "pack/identity.h"
#include "pack/tree.h"

namespace seamless::packfmt {
namespace {

constexpr size_t kBlock = 512;

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

Result<void> write_header(CompressedWriter& w, const std::string& name, uint64_t size) {
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
  return w.write(h, kBlock);
}

Result<void> write_entry(CompressedWriter& w, const std::string& name, std::string_view data) {
  SL_TRY(write_header(w, name, data.size()));
  SL_TRY(w.write(data.data(), data.size()));
  static const char zeros[kBlock] = {};
  return w.write(zeros, (kBlock - data.size() % kBlock) % kBlock);
}

// --- Page images -------------------------------------------------------------------
// CRIU writes one pages-N.img per process. The workers of a forking server (php-cgi
// children, apache's mod_php processes) hold mostly the same pages, and gzip's 32 KiB
// window cannot see repeats megabytes apart; and most pages of a server's libraries that
// CRIU dumps are the library's own data after the dynamic linker relocated it, which
// differs from the file only in the pointers it fixed up. So page images go into the
// pack as `<name>.dedup`: the magic, then records
//   'L' + 4096 bytes     a literal page (literal and delta pages are numbered across the
//                        whole pack),
//   'R' + u32 LE index   a copy of an earlier literal or delta page,
//   'F' + u16 LE n + n bytes path + u64 LE size + u8 m + m bytes build-id (hex)
//                        declares base file number k (k-th 'F' of the pack): an ELF file
//                        that must be the same on the unpacking side (or any other file
//                        up to 64 MiB, named by "sha256:" and its hash instead),
//   'D' + u16 LE file + u32 LE page + u32 LE crc32 + 4096 bytes
//                        a page that is page `page` of base `file` (zeros past its end)
//                        plus these 64-bit little-endian words (mod 2^64); the crc32 is
//                        the result's,
//   'T' + u16 LE n + n bytes   the file's last, partial page (n in 1..4095; last record).

constexpr size_t kPage = 4096;
constexpr char kDedupMagic[8] = {'S', 'L', 'P', 'A', 'G', 'E', 'S', '1'};
constexpr std::string_view kDedupSuffix = ".dedup";
// Page images kept open for copies, on either side; later ones go in plain.
constexpr size_t kMaxDedupFiles = 256;
// Base files per pack: a server maps a few dozen libraries.
constexpr size_t kMaxBases = 1024;
constexpr size_t kMaxBasePath = 4096;
// A base file that is no ELF file is identified by its SHA-256 ('F' identity
// "sha256:HEX"); larger ones are not worth hashing on both sides (and a pack may not make
// the unpacking side hash more).
constexpr uint64_t kMaxHashedBase = 64 << 20;
constexpr std::string_view kSha256Prefix = "sha256:";

bool is_page_image(const std::string& rel) {
  const std::string base = std::filesystem::path(rel).filename().string();
  return base.rfind("pages-", 0) == 0 && base.size() > 10 && base.compare(base.size() - 4, 4, ".img") == 0;
}

// N of `.../pages-N.img`, if it is one.
std::optional<uint32_t> page_image_id(const std::string& rel) {
  const std::string base = std::filesystem::path(rel).filename().string();
  if (!is_page_image(rel)) return std::nullopt;
  const std::string digits = base.substr(6, base.size() - 10);
  if (digits.empty() || digits.size() > 9 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return uint32_t(std::stoul(digits));
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

uint32_t page_crc(const char* page) {
  return uint32_t(crc32(crc32(0, nullptr, 0), reinterpret_cast<const Bytef*>(page), unsigned(kPage)));
}

// Page `page` of the file open at fd, zeros past its end (as a mapping shows it).
Result<void> read_base_page(int fd, uint64_t page, char* out, const std::string& path) {
  size_t got = 0;
  while (got < kPage) {
    ssize_t n = ::pread(fd, out + got, kPage - got, off_t(page * kPage + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(cat("read `", path, "`"));
    if (n == 0) break;
    got += size_t(n);
  }
  std::memset(out + got, 0, kPage - got);
  return ok();
}

// `page` - `base`, word by word, mod 2^64: what a 'D' record holds.
void subtract_words(const char* page, const char* base, char* out) {
  for (size_t i = 0; i < kPage; i += 8) {
    uint64_t a, b;
    std::memcpy(&a, page + i, 8);
    std::memcpy(&b, base + i, 8);
    a -= b;
    std::memcpy(out + i, &a, 8);
  }
}

void add_words(char* page, const char* base) {
  for (size_t i = 0; i < kPage; i += 8) {
    uint64_t a, b;
    std::memcpy(&a, page + i, 8);
    std::memcpy(&b, base + i, 8);
    a += b;
    std::memcpy(page + i, &a, 8);
  }
}

size_t zero_words(const char* page) {
  size_t n = 0;
  for (size_t i = 0; i < kPage; i += 8) {
    uint64_t w;
    std::memcpy(&w, page + i, 8);
    n += w == 0;
  }
  return n;
}

// An ELF file a delta is against, as both sides identify it: path, size and build-id.
struct BaseFile {
  FileIdentity id;
  UniqueFd fd;
};

Result<BaseFile> open_base(const std::string& root, const std::string& path) {
  BaseFile b;
  b.id.path = path;
  b.fd = SL_TRY(sys::open(root + path, O_RDONLY));
  struct stat st {};
  if (::fstat(b.fd.get(), &st) != 0) return errno_error(cat("stat `", root + path, "`"));
  if (!S_ISREG(st.st_mode)) return make_error(ErrorKind::Invalid, "`", root + path, "` is not a regular file");
  b.id.size = uint64_t(st.st_size);
  b.id.build_id = SL_TRY(elf_build_id_of(b.fd.get(), root + path));
  // Any other file a process maps privately (a JVM's class data archive, relocated where
  // it is mapped): identified by its contents, up to a size worth hashing on both sides.
  if (b.id.build_id.empty() && b.id.size <= kMaxHashedBase) {
    std::string data(size_t(b.id.size), '\0');
    for (size_t done = 0; done < data.size();) {
      ssize_t n = ::pread(b.fd.get(), data.data() + done, data.size() - done, off_t(done));
      if (n < 0) return errno_error(cat("read `", root + path, "`"));
      if (n == 0) return make_error(ErrorKind::Invalid, "`", root + path, "` changed while read");
      done += size_t(n);
    }
    b.id.sha256 = sha256_hex(data);
  }
  return b;
}

// How a base file is named in an 'F' record: its build-id, or "sha256:" and its hash.
std::string base_identity(const FileIdentity& id) {
  return id.build_id.empty() ? cat(kSha256Prefix, id.sha256) : id.build_id;
}

// Where the pages of one page image come from.
struct ImageOrigins {
  const std::vector<std::string>& files;
  const std::vector<std::optional<criu_images::FilePage>>& pages;
};

// The writer's memory of literal pages (where each one is in the page images read so
// far, found by hash and confirmed byte for byte) and of the base files it declared.
class PageIndex {
 public:
  // `base_root`: where the files CRIU names live; empty: no deltas.
  explicit PageIndex(std::string base_root) : base_root_(std::move(base_root)) {}

  // Encodes `data` (the image read from `fd`); `origins` (may be null) says which of its
  // pages are private copies of which file pages. Err only on a failed read back.
  Result<std::string> encode(std::string_view data, UniqueFd fd, const std::string& what, const ImageOrigins* origins) {
    const uint32_t file = uint32_t(files_.size());
    files_.push_back(std::move(fd));
    std::string out(kDedupMagic, sizeof kDedupMagic);
    out.reserve(data.size() / 4);
    size_t off = 0;
    char base[kPage], delta[kPage];
    for (size_t index = 0; off + kPage <= data.size(); off += kPage, ++index) {
      const char* page = data.data() + off;
      auto& candidates = by_hash_[page_hash(page)];
      auto same = SL_TRY(find(candidates, page, file, data, what));
      if (same) {
        out.push_back('R');
        put_le(out, *same, 4);
        ++stats_.copies;
        continue;
      }
      candidates.push_back(uint32_t(literals_.size()));
      literals_.push_back({file, off});
      std::optional<uint16_t> b;
      const criu_images::FilePage* from = nullptr;
      if (origins && index < origins->pages.size() && origins->pages[index]) from = &*origins->pages[index];
      if (from && from->page <= UINT32_MAX) b = SL_TRY(base_for(origins->files[from->file], out));
      if (b) {
        const uint64_t in_file = from->page;
        SL_TRY(read_base_page(bases_[*b].fd.get(), in_file, base, bases_[*b].id.path));
        subtract_words(page, base, delta);
        if (zero_words(delta) > zero_words(page)) {
          out.push_back('D');
          put_le(out, *b, 2);
          put_le(out, in_file, 4);
          put_le(out, page_crc(page), 4);
          out.append(delta, kPage);
          ++stats_.deltas;
          continue;
        }
      }
      out.push_back('L');
      out.append(page, kPage);
      ++stats_.literal;
    }
    if (off < data.size()) {
      out.push_back('T');
      put_le(out, data.size() - off, 2);
      out.append(data.substr(off));
    }
    return out;
  }
  size_t files() const { return files_.size(); }
  const PackStats& stats() const { return stats_; }

 private:
  struct Literal {
    uint32_t file;
    uint64_t offset;
  };

  // The base number of `path`, declaring it in `out` the first time; none when the file
  // is not an ELF file with a build-id here (then the page goes in as it is).
  Result<std::optional<uint16_t>> base_for(const std::string& path, std::string& out) {
    if (base_root_.empty()) return std::optional<uint16_t>();
    auto known = base_index_.find(path);
    if (known != base_index_.end()) return known->second;
    std::optional<uint16_t> index;
    auto b = open_base(base_root_, path);
    if (b.ok() && (!b->id.build_id.empty() || !b->id.sha256.empty()) && bases_.size() < kMaxBases &&
        is_plain_absolute(path) && base_identity(b->id).size() <= 255) {
      index = uint16_t(bases_.size());
      out.push_back('F');
      put_le(out, path.size(), 2);
      out += path;
      put_le(out, b->id.size, 8);
      const std::string identity = base_identity(b->id);
      out.push_back(char(identity.size()));
      out += identity;
      bases_.push_back(std::move(*b));
    }
    base_index_[path] = index;
    return index;
  }

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

  std::string base_root_;
  std::vector<UniqueFd> files_;
  std::vector<Literal> literals_;
  std::unordered_map<uint64_t, std::vector<uint32_t>> by_hash_;
  std::vector<BaseFile> bases_;
  std::map<std::string, std::optional<uint16_t>> base_index_;
  PackStats stats_;
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
  EntryData(CompressedReader& in, uint64_t size, const std::string& pack, const std::string& name)
      : in_(in), left_(size), pack_(pack), name_(name) {}
  Result<void> read(void* buf, size_t n) {
    if (n > left_) return make_error(ErrorKind::Protocol, "pack `", pack_, "`: `", name_, "` ends inside a record");
    SL_TRY(in_.read_exact(buf, n));
    left_ -= n;
    return ok();
  }
  uint64_t left() const { return left_; }

 private:
  CompressedReader& in_;
  uint64_t left_;
  const std::string& pack_;
  const std::string& name_;
};

uint64_t get_le(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

// The reader's side of the page images: the ones written so far (open, for copies),
// where each literal page is, and the base files declared so far.
struct PageImages {
  struct Literal {
    uint32_t file;
    uint64_t offset;
  };
  std::vector<std::string> base_roots;  // tried in order
  std::vector<UniqueFd> files;
  std::vector<Literal> literals;
  std::vector<BaseFile> bases;
};

// Reads an 'F' record's body and opens the base file it names, which must be the same
// ELF file (size, build-id) here.
Result<void> declare_base(EntryData& in, PageImages& images, const std::string& pack, const std::string& name) {
  auto refused = [&](auto&&... why) {
    return make_error(ErrorKind::Protocol, "pack `", pack, "`: `", name, "` ", why...);
  };
  if (images.bases.size() >= kMaxBases) return refused("declares more than ", kMaxBases, " base files");
  unsigned char n2[2];
  SL_TRY(in.read(n2, 2));
  const size_t n = size_t(get_le(n2, 2));
  if (n > kMaxBasePath) return refused("names a base file path of ", n, " bytes");
  std::string path(n, '\0');
  SL_TRY(in.read(path.data(), n));
  if (!is_plain_absolute(path)) return refused("names a base file that is not a plain absolute path");
  unsigned char size8[8], m;
  SL_TRY(in.read(size8, 8));
  SL_TRY(in.read(&m, 1));
  std::string identity(m, '\0');
  SL_TRY(in.read(identity.data(), m));
  if (identity.empty()) return refused("names base file `", path, "` without a build-id");
  FileIdentity recorded;
  recorded.path = path;
  recorded.size = get_le(size8, 8);
  if (identity.rfind(kSha256Prefix, 0) == 0) {
    recorded.sha256 = identity.substr(std::string_view(kSha256Prefix).size());
    if (recorded.sha256.size() != 64 || recorded.sha256.find_first_not_of("0123456789abcdef") != std::string::npos)
      return refused("names base file `", path, "` with a bad SHA-256");
    if (recorded.size > kMaxHashedBase) return refused("names base file `", path, "` too large to hash");
  } else {
    recorded.build_id = identity;
  }
  // (Only called with base roots: without, page images are kept as stored.) The first
  // root that has the very file wins.
  Error why = make_error(ErrorKind::NotFound, "no base root");
  for (const auto& root : images.base_roots) {
    auto base = open_base(root, path);
    if (!base.ok()) {
      why =
          base.error().wrap(cat("pack `", pack, "`: pages are stored against `", path, "`, which is not usable here"));
      continue;
    }
    if (auto same = same_file(recorded, base->id); !same.ok()) {
      why = same.error().wrap(cat("pack `", pack, "`: pages are stored against `", path, "`, which differs here"));
      continue;
    }
    images.bases.push_back(std::move(*base));
    return ok();
  }
  return why;
}

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
  char page[kPage], base[kPage];
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
    } else if (tag == 'F') {
      SL_TRY(declare_base(in, images, pack, name));
      continue;
    } else if (tag == 'D') {
      unsigned char head[10];
      SL_TRY(in.read(head, sizeof head));
      const uint64_t b = get_le(head, 2), in_file = get_le(head + 2, 4);
      if (b >= images.bases.size())
        return refused("has a page against base file ", b, " but declares ", images.bases.size());
      SL_TRY(in.read(page, kPage));
      SL_TRY(read_base_page(images.bases[b].fd.get(), in_file, base, images.bases[b].id.path));
      add_words(page, base);
      if (page_crc(page) != uint32_t(get_le(head + 6, 4)))
        return refused("has a page that does not come out as packed (page ", in_file, " of `", images.bases[b].id.path,
                       "`)");
      images.literals.push_back({file, size});
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

namespace {

// Zeroes the free malloc memory among the pages of `image` (a pages-N.img's contents)
// whose addresses and task `memory` describes; returns how many bytes that was.
uint64_t zero_free_heap(std::string& image, const criu_images::TaskMemory& memory) {
  const size_t pages = std::min(memory.addresses.size(), image.size() / kPage);
  std::unordered_map<uint64_t, size_t> page_at;  // address -> index in the image
  for (size_t i = 0; i < pages; ++i) page_at.emplace(memory.addresses[i], i);
  malloc_heap::Memory m{memory.anonymous, memory.brk_start, memory.brk, [&](uint64_t address) {
                          auto it = page_at.find(address);
                          return it == page_at.end()
                                     ? nullptr
                                     : reinterpret_cast<const unsigned char*>(image.data() + it->second * kPage);
                        }};
  uint64_t zeroed = 0;
  for (const auto& r : malloc_heap::unused(m)) {
    for (uint64_t page = r.start & ~uint64_t(kPage - 1); page < r.end; page += kPage) {
      auto it = page_at.find(page);
      if (it == page_at.end()) continue;
      const uint64_t from = std::max(page, r.start), to = std::min(page + kPage, r.end);
      std::memset(image.data() + it->second * kPage + (from - page), 0, to - from);
      zeroed += to - from;
    }
  }
  return zeroed;
}

// An unnamed file beside `near` (in memory where its file system has none) holding `data`.
Result<UniqueFd> scratch_copy(std::string_view data, const std::string& near) {
  const std::string dir = std::filesystem::path(near).parent_path().string();
  UniqueFd fd(::open(dir.empty() ? "." : dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!fd.valid()) fd = UniqueFd(::memfd_create("seamless-pages", MFD_CLOEXEC));
  if (!fd.valid()) return errno_error(cat("a scratch file beside `", near, "`"));
  SL_TRY(sys::write_all(fd.get(), data, Deadline::never()));
  return fd;
}

}  // namespace

Result<void> write_pack(const std::string& path, const std::string& manifest_json, const std::string& root,
                        const std::vector<std::string>& rel_paths, const PackOptions& options, PackStats* stats) {
  const std::string tmp = path + ".part";
  auto body = [&]() -> Result<void> {
    UniqueFd fd = SL_TRY(sys::open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600));
    auto w = SL_TRY(CompressedWriter::open(std::move(fd), options.compression, tmp));
    SL_TRY(write_entry(*w, kManifestName, manifest_json));
    PageIndex pages(options.base_root);
    uint64_t free_heap_bytes = 0;
    // Per directory of CRIU images: where their pages come from.
    std::map<std::string, criu_images::PageOrigins> origins;
    for (const auto& rel : rel_paths) {
      SL_TRY_CTX(check_entry_name(rel), "adding `", rel, "` to a pack");
      const std::string file = root + "/" + rel;
      // Resolved inside `root`, the last name not followed: a sink container's images
      // directory is the container's to plant links in.
      UniqueFd in = SL_TRY(sys::open_in_root(root, rel, O_RDONLY | O_NOFOLLOW | O_NONBLOCK));
      auto data = SL_TRY(sys::read_fd(in.get(), size_t(1) << 31, file));
      if (!is_page_image(rel) || pages.files() >= kMaxDedupFiles) {
        SL_TRY(write_entry(*w, rel, data));
        continue;
      }
      std::optional<ImageOrigins> image_origins;
      uint64_t zeroed = 0;
      const std::string dir = std::filesystem::path(file).parent_path().string();
      if (!options.base_root.empty() || options.zero_free_heap) {
        auto it = origins.find(dir);
        if (it == origins.end()) {
          // Images it cannot read only cost the deltas: their pages go in as they are.
          auto found = criu_images::page_origins(dir);
          it = origins.emplace(dir, found.ok() ? std::move(*found) : criu_images::PageOrigins{}).first;
        }
        auto id = page_image_id(rel);
        auto image = id ? it->second.images.find(*id) : it->second.images.end();
        if (image != it->second.images.end() && !options.base_root.empty())
          image_origins.emplace(ImageOrigins{it->second.files, image->second});
        auto memory = id ? it->second.memory.find(*id) : it->second.memory.end();
        if (memory != it->second.memory.end() && options.zero_free_heap) zeroed = zero_free_heap(data, memory->second);
      }
      // The encoder reads earlier images back to confirm copies: a changed one from a
      // file of its own.
      UniqueFd again = zeroed ? SL_TRY(scratch_copy(data, tmp)) : SL_TRY(sys::open(file, O_RDONLY));
      free_heap_bytes += zeroed;
      auto encoded = SL_TRY(pages.encode(data, std::move(again), file, image_origins ? &*image_origins : nullptr));
      SL_TRY(write_entry(*w, rel + std::string(kDedupSuffix), encoded));
    }
    static const char zeros[2 * kBlock] = {};
    SL_TRY(w->write(zeros, sizeof zeros));
    SL_TRY(w->finish());
    if (::rename(tmp.c_str(), path.c_str()) != 0) return errno_error(cat("rename `", tmp, "` to `", path, "`"));
    if (stats) {
      *stats = pages.stats();
      stats->free_heap_bytes = free_heap_bytes;
    }
    return ok();
  };
  auto done = body();
  if (!done.ok()) ::unlink(tmp.c_str());
  return done;
}

Result<void> write_plain_pack(const std::string& path, const std::string& manifest_json,
                              const std::vector<PackEntry>& entries, Compression compression, const EntryCheck& check) {
  const std::string tmp = path + ".part";
  auto body = [&]() -> Result<void> {
    UniqueFd fd = SL_TRY(sys::open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600));
    auto w = SL_TRY(CompressedWriter::open(std::move(fd), compression, tmp));
    SL_TRY(write_entry(*w, kManifestName, manifest_json));
    for (size_t i = 0; i < entries.size(); ++i) {
      const auto& [name, source] = entries[i];
      SL_TRY_CTX(check_entry_name(name), "adding `", name, "` to a pack");
      auto data = SL_TRY(sys::read_file(source, uint64_t(1) << 31));
      if (check) SL_TRY(check(i, data));
      SL_TRY(write_entry(*w, name, data));
    }
    static const char zeros[2 * kBlock] = {};
    SL_TRY(w->write(zeros, sizeof zeros));
    SL_TRY(w->finish());
    if (::rename(tmp.c_str(), path.c_str()) != 0) return errno_error(cat("rename `", tmp, "` to `", path, "`"));
    return ok();
  };
  auto done = body();
  if (!done.ok()) ::unlink(tmp.c_str());
  return done;
}

namespace {

Result<std::unique_ptr<CompressedReader>> open_pack(const std::string& pack) {
  UniqueFd in = SL_TRY(sys::open(pack, O_RDONLY));
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) return errno_error(cat("stat `", pack, "`"));
  if (!S_ISREG(st.st_mode)) return make_error(ErrorKind::Invalid, "pack `", pack, "` is not a regular file");
  return CompressedReader::open(std::move(in), pack);
}

struct EntryHeader {
  std::string name;  // with the ustar prefix
  char type = 0;
  uint64_t size = 0;
};

// Entry `index` (from 0)'s ustar header, its magic and checksum checked.
Result<EntryHeader> parse_header(const unsigned char* h, const std::string& pack, size_t index) {
  const char* hc = reinterpret_cast<const char*>(h);
  if (std::memcmp(hc + 257, "ustar", 5) != 0)
    return make_error(ErrorKind::Protocol, "pack `", pack, "`: entry ", index + 1, " is not a ustar header");
  uint64_t sum = SL_TRY(get_octal(hc + 148, 8, "checksum"));
  if (sum != header_checksum(h))
    return make_error(ErrorKind::Protocol, "pack `", pack, "`: entry ", index + 1, " has a bad header checksum");
  EntryHeader e;
  e.name = field_string(hc, 100);
  std::string prefix = field_string(hc + 345, 155);
  if (!prefix.empty()) e.name = prefix + "/" + e.name;
  e.type = hc[156];
  e.size = SL_TRY(get_octal(hc + 124, 12, "size"));
  return e;
}

}  // namespace

Result<std::string> read_manifest(const std::string& pack, const PackLimits& limits) {
  auto reader = SL_TRY(open_pack(pack));
  unsigned char h[kBlock];
  SL_TRY(reader->read_exact(h, kBlock));
  auto e = SL_TRY(parse_header(h, pack, 0));
  if (e.name != kManifestName || (e.type != '0' && e.type != '\0'))
    return make_error(ErrorKind::Protocol, "pack `", pack, "` does not start with ", kManifestName);
  if (e.size > limits.max_manifest)
    return make_error(ErrorKind::Protocol, "pack `", pack, "`: its manifest is too large (", e.size, " bytes)");
  std::string manifest(size_t(e.size), '\0');
  SL_TRY(reader->read_exact(manifest.data(), manifest.size()));
  return manifest;
}

Result<std::string> unpack(const std::string& pack, const std::string& dest, const PackLimits& limits,
                           const std::string& base_root) {
  return unpack(pack, dest, limits, base_root.empty() ? std::vector<std::string>{} : std::vector{base_root});
}

Result<std::string> unpack(const std::string& pack, const std::string& dest, const PackLimits& limits,
                           const std::vector<std::string>& base_roots) {
  auto reader = SL_TRY(open_pack(pack));
  CompressedReader& f = *reader;

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
    images.base_roots = base_roots;
    std::vector<char> buf(1 << 16);
    for (size_t entries = 0;; ++entries) {
      unsigned char h[kBlock];
      SL_TRY(f.read_exact(h, kBlock));
      if (std::all_of(h, h + kBlock, [](unsigned char c) { return c == 0; })) {
        if (entries == 0) return make_error(ErrorKind::Protocol, "pack `", pack, "` is empty");
        // End of archive. Drain the rest (zero padding) so that the stream's own
        // checksum is checked.
        for (size_t pad = 0; pad < 64; ++pad) {
          size_t r = SL_TRY(f.read(h, kBlock));
          if (r == 0) return manifest;
          if (!std::all_of(h, h + r, [](unsigned char c) { return c == 0; }))
            return make_error(ErrorKind::Protocol, "pack `", pack, "` has data after its end");
        }
        return make_error(ErrorKind::Protocol, "pack `", pack, "` has too much padding after its end");
      }
      if (entries >= limits.max_entries)
        return make_error(ErrorKind::Protocol, "pack `", pack, "` has more than ", limits.max_entries, " entries");
      auto header = SL_TRY(parse_header(h, pack, entries));
      std::string name = std::move(header.name);
      const char type = header.type;
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
      const uint64_t size = header.size;
      if (is_dir && size != 0)
        return make_error(ErrorKind::Protocol, "pack `", pack, "`: directory `", name, "` has a size");
      if (entries == 0 && (is_dir || name != kManifestName))
        return make_error(ErrorKind::Protocol, "pack `", pack, "` does not start with ", kManifestName);
      if (entries > 0 && name == kManifestName)
        return make_error(ErrorKind::Protocol, "pack `", pack, "` holds a second ", kManifestName);
      if (size > (entries == 0 ? limits.max_manifest : limits.max_file))
        return make_error(ErrorKind::Protocol, "pack `", pack, "`: `", name, "` is too large (", size, " bytes)");
      // A page image arrives deduplicated and is written under its own name (unless
      // asked to keep it as it is).
      const bool dedup = !base_roots.empty() && !is_dir && entries > 0 && name.size() > kDedupSuffix.size() &&
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
        EntryData data(f, size, pack, name);
        SL_TRY(decode_pages(data, out.get(), images, pack, name, limits, &total));
        if (size % kBlock) SL_TRY(f.read_exact(buf.data(), kBlock - size % kBlock));
        continue;
      }
      uint64_t left = size;
      while (left > 0) {
        size_t n = size_t(std::min<uint64_t>(left, buf.size()));
        SL_TRY(f.read_exact(buf.data(), n));
        if (entries == 0) manifest.append(buf.data(), n);
        SL_TRY(sys::write_all(out.get(), std::string_view(buf.data(), n), Deadline(Millis(60000))));
        left -= n;
      }
      if (size % kBlock) SL_TRY(f.read_exact(buf.data(), kBlock - size % kBlock));
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
    if (it->symlink_status(ec).type() != std::filesystem::file_type::regular) continue;  // links are not followed
    // CRIU's logs (verbose: often larger than the images) and pid files stay here (not
    // the guest's own files that come with its file tree).
    const std::string rel = it->path().lexically_relative(base).string();
    const std::string ext = it->path().extension().string();
    const bool tree = rel.rfind(cat(kTreeContents, "/"), 0) == 0;
    if (!tree && (ext == ".log" || ext == ".pid")) continue;
    out.push_back(rel);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace seamless::packfmt
