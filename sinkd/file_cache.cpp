// SPDX-License-Identifier: Apache-2.0
// The sink's content-addressed file cache and the containers' shipped layers.
#include "sinkd/file_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "common/encoding.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/sys.h"
#include "common/time.h"
#include "sinkd/container.h"

namespace seamless::sink {
namespace {

constexpr std::string_view kModule = "file-cache";

bool hex_id(const std::string& s) {
  if (s.empty() || s.size() > 128) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace

FileCache::FileCache(std::string dir, uint64_t budget) : dir_(std::move(dir)), budget_(budget) {
  std::error_code ec;
  std::filesystem::create_directories(dir_ + "/objects", ec);
  std::filesystem::create_directories(dir_ + "/index", ec);
}

std::string FileCache::index_key(uint64_t size, const std::string& id) const {
  return hex_id(id) ? cat(dir_, "/index/", size, "-", id) : "";
}

std::string FileCache::object_path(const std::string& object) const {
  return packfmt::valid_object_name(object) ? cat(dir_, "/objects/", object) : "";
}

std::vector<std::string> FileCache::candidates(const packfmt::FileIdentity& f) const {
  std::vector<std::string> out;
  const std::string key = index_key(f.size, f.build_id.empty() ? f.sha256 : f.build_id);
  if (key.empty()) return out;
  auto text = sys::read_file(key, 1 << 20);
  if (!text.ok()) return out;
  std::istringstream in(*text);
  for (std::string name; std::getline(in, name) && out.size() < 16;) {
    const std::string at = object_path(name);
    if (!at.empty() && ::access(at.c_str(), F_OK) == 0 && std::find(out.begin(), out.end(), name) == out.end())
      out.push_back(name);
  }
  return out;
}

Result<void> FileCache::keep(const packfmt::ShippedFile& f, const std::string& contents_file) const {
  const std::string target = object_path(f.object());
  if (target.empty()) return make_error(ErrorKind::Invalid, "`", f.path, "`: not a cache object name");
  if (::access(target.c_str(), F_OK) == 0) {
    ::utimensat(AT_FDCWD, target.c_str(), nullptr, 0);  // recently used
    return ok();
  }
  auto data = SL_TRY(sys::read_file(contents_file, f.size + 1));
  if (data.size() != f.size)
    return make_error(ErrorKind::Protocol, "shipped `", f.path, "`: ", data.size(), " bytes, the index says ", f.size);
  if (sha256_hex(data) != f.sha256)
    return make_error(ErrorKind::Protocol, "shipped `", f.path, "`: its contents do not hash to its SHA-256");
  // A file of its own (the same contents may come again with another mode or owner),
  // whole before it gets its name.
  const std::string part = target + ".part";
  {
    UniqueFd fd = SL_TRY(sys::open(part, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600));
    SL_TRY_CTX(sys::write_all(fd.get(), data, Deadline::never()), "write `", part, "`");
    if (::fchown(fd.get(), f.uid, f.gid) != 0 && ::geteuid() == 0) return errno_error(cat("chown `", part, "`"));
    if (::fchmod(fd.get(), f.mode & 07777) != 0) return errno_error(cat("chmod `", part, "`"));
  }
  if (::rename(part.c_str(), target.c_str()) != 0) return errno_error(cat("rename `", part, "` to `", target, "`"));
  // Where later packs naming this file (by build-id, else by hash) find it.
  const std::string build_id = packfmt::elf_build_id(data);
  const std::string key = index_key(f.size, build_id.empty() ? f.sha256 : build_id);
  auto listed = sys::read_file(key, 1 << 20);
  const std::string line = f.object() + "\n";
  if (!key.empty() && (!listed.ok() || listed->find(line) == std::string::npos))
    SL_TRY(sys::write_file(key, (listed.ok() ? *listed : "") + line, 0600));
  return ok();
}

Result<packfmt::ShipmentIndex> FileCache::take(const std::string& shipment, const std::string& work_dir,
                                               const packfmt::PackLimits& limits) {
  std::error_code ec;
  std::filesystem::create_directories(work_dir, ec);
  const std::string dest = cat(work_dir, "/shipment-", ::getpid(), "-", Clock::now().time_since_epoch().count());
  auto text =
      SL_TRY_CTX(packfmt::unpack(shipment, dest, limits, packfmt::kKeepPageImages), "shipment `", shipment, "`");
  auto body = [&]() -> Result<packfmt::ShipmentIndex> {
    auto index = SL_TRY_CTX(packfmt::ShipmentIndex::parse(text), "shipment `", shipment, "`");
    for (const auto& f : index.files) {
      if (f.included) {
        const std::string contents = cat(dest, "/", f.entry());
        if (::access(contents.c_str(), F_OK) != 0)
          return make_error(ErrorKind::Protocol, "shipment `", shipment, "`: the contents of `", f.path,
                            "` are not in it");
        SL_TRY_CTX(keep(f, contents), "shipment `", shipment, "`");
      } else if (::access(object_path(f.object()).c_str(), F_OK) != 0) {
        return make_error(ErrorKind::Invalid, "shipment `", shipment, "`: `", f.path,
                          "` is neither in it nor cached in this sink");
      }
    }
    return index;
  };
  auto r = body();
  std::filesystem::remove_all(dest, ec);
  trim();
  return r;
}

Result<void> FileCache::build_layer(const std::string& layer, const std::vector<LayerFile>& files,
                                    const std::string& lower) const {
  if (::mkdir(layer.c_str(), 0755) != 0) return errno_error(cat("mkdir `", layer, "`"));
  for (const auto& [path, object] : files) {
    const std::string from = object_path(object);
    if (from.empty()) return make_error(ErrorKind::Invalid, "`", object, "` is not a cache object name");
    std::string leaf;
    UniqueFd parent = SL_TRY_CTX(make_parents(layer, path, lower, &leaf), "shipped layer");
    if (::linkat(AT_FDCWD, from.c_str(), parent.get(), leaf.c_str(), 0) != 0)
      return errno_error(cat("link `", from, "` to `", layer, path, "`"));
  }
  return ok();
}

CacheStats FileCache::stats() const {
  CacheStats s;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_ + "/objects", ec)) {
    struct stat st {};
    if (::lstat(e.path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    ++s.objects;
    s.bytes += st.st_size;
    if (st.st_nlink > 1) ++s.in_use;
  }
  return s;
}

void FileCache::trim() const {
  struct Unused {
    std::string path;
    int64_t mtime, size;
  };
  std::vector<Unused> unused;
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_ + "/objects", ec)) {
    struct stat st {};
    if (::lstat(e.path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    total += uint64_t(st.st_size);
    if (st.st_nlink == 1) unused.push_back({e.path().string(), int64_t(st.st_mtime), int64_t(st.st_size)});
  }
  std::sort(unused.begin(), unused.end(), [](const Unused& a, const Unused& b) { return a.mtime < b.mtime; });
  for (const auto& u : unused) {
    if (total <= budget_) break;
    if (::unlink(u.path.c_str()) == 0) {
      total -= uint64_t(u.size);
      SL_LOG(Info, kModule, "dropped unused `", u.path, "` (", u.size, " bytes)");
    }
  }
}

}  // namespace seamless::sink
