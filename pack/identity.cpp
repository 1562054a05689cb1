// SPDX-License-Identifier: Apache-2.0
// File identities: ELF build-id notes, SHA-256 otherwise.
#include "pack/identity.h"

#include <elf.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cstring>

#include "common/encoding.h"
#include "common/fd.h"
#include "common/sys.h"

namespace seamless::packfmt {
namespace {

template <typename T>
bool read_at(std::string_view data, uint64_t off, T* out) {
  if (off > data.size() || data.size() - off < sizeof(T)) return false;
  std::memcpy(out, data.data() + off, sizeof(T));
  return true;
}

std::string hex(std::string_view bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

uint64_t align4(uint64_t v) { return (v + 3) & ~uint64_t(3); }

// Walks one PT_NOTE segment's notes.
std::string build_id_in(std::string_view data, uint64_t off, uint64_t size) {
  if (off > data.size() || size > data.size() - off) return {};
  uint64_t end = off + size;
  while (off + sizeof(Elf64_Nhdr) <= end) {
    Elf64_Nhdr nh;
    if (!read_at(data, off, &nh)) return {};
    uint64_t name_off = off + sizeof nh;
    uint64_t desc_off = name_off + align4(nh.n_namesz);
    uint64_t next = desc_off + align4(nh.n_descsz);
    if (next > end || next <= off) return {};
    if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 && data.substr(name_off, 4) == std::string_view("GNU\0", 4))
      return hex(data.substr(desc_off, nh.n_descsz));
    off = next;
  }
  return {};
}

}  // namespace

std::string elf_build_id(std::string_view data) {
  Elf64_Ehdr eh;
  if (!read_at(data, 0, &eh) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64)
    return {};
  if (eh.e_phentsize != sizeof(Elf64_Phdr)) return {};
  for (uint16_t i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    if (!read_at(data, eh.e_phoff + uint64_t(i) * sizeof ph, &ph)) return {};
    if (ph.p_type != PT_NOTE) continue;
    if (auto id = build_id_in(data, ph.p_offset, ph.p_filesz); !id.empty()) return id;
  }
  return {};
}

Result<std::string> elf_build_id_of(int fd, const std::string& path) {
  // The ELF and program headers and the build-id note sit at the start of the file.
  std::string head(64 << 10, '\0');
  ssize_t n = ::pread(fd, head.data(), head.size(), 0);
  if (n < 0) return errno_error(cat("read `", path, "`"));
  head.resize(size_t(n));
  return elf_build_id(head);
}

Result<FileIdentity> identify(const std::string& path, uint64_t* budget) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!fd.valid()) return errno_error(cat("open `", path, "`"));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_error(cat("stat `", path, "`"));
  if (!S_ISREG(st.st_mode)) return make_error(ErrorKind::Invalid, "`", path, "` is not a regular file");
  struct statfs fs {};
  if (::fstatfs(fd.get(), &fs) != 0) return errno_error(cat("statfs `", path, "`"));
  static constexpr unsigned long kKernelFs[] = {PROC_SUPER_MAGIC,    SYSFS_MAGIC,      DEBUGFS_MAGIC,
                                                TRACEFS_MAGIC,       SECURITYFS_MAGIC, CGROUP_SUPER_MAGIC,
                                                CGROUP2_SUPER_MAGIC, BPF_FS_MAGIC};
  for (unsigned long kernel : kKernelFs)
    if (fs.f_type == static_cast<decltype(fs.f_type)>(kernel))
      return make_error(ErrorKind::Invalid, "`", path, "` is a file of the kernel's, not of a package");
  FileIdentity id;
  id.path = path;
  id.size = uint64_t(st.st_size);
  id.mode = st.st_mode & 07777;
  id.uid = st.st_uid;
  id.gid = st.st_gid;
  id.build_id = SL_TRY(elf_build_id_of(fd.get(), path));
  if (id.build_id.empty()) {
    uint64_t whole = uint64_t(1) << 30;
    uint64_t& left = budget ? *budget : whole;
    if (id.size > left)
      return make_error(ErrorKind::Invalid, "`", path, "` (", id.size, " bytes) is beyond what is left to read (", left,
                        " bytes)");
    auto data = SL_TRY(sys::read_fd(fd.get(), id.size, path));
    if (data.size() != id.size) return make_error(ErrorKind::Invalid, "`", path, "` changed while it was read");
    const size_t got = data.size();
    left -= got;
    id.build_id = elf_build_id(data);
    if (id.build_id.empty()) id.sha256 = sha256_hex(data);
  }
  return id;
}

Result<void> same_file(const FileIdentity& recorded, const FileIdentity& local) {
  if (recorded.size != local.size)
    return make_error(ErrorKind::Invalid, "`", recorded.path, "` differs: ", local.size, " bytes here, ", recorded.size,
                      " in the pack");
  if (!recorded.build_id.empty() && recorded.build_id != local.build_id)
    return make_error(ErrorKind::Invalid, "`", recorded.path, "` differs: build-id ",
                      local.build_id.empty() ? "none" : local.build_id, " here, ", recorded.build_id, " in the pack");
  if (!recorded.sha256.empty() && recorded.sha256 != local.sha256)
    return make_error(ErrorKind::Invalid, "`", recorded.path, "` differs: its contents (SHA-256) are not the same");
  if (recorded.build_id.empty() && recorded.sha256.empty())
    return make_error(ErrorKind::Invalid, "`", recorded.path, "`: the pack records neither build-id nor hash");
  return ok();
}

bool is_plain_absolute(std::string_view p) {
  if (p.size() < 2 || p.size() > 4096 || p[0] != '/' || p.find('\0') != std::string_view::npos) return false;
  for (size_t start = 1; start <= p.size();) {
    size_t slash = p.find('/', start);
    std::string_view comp = p.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (comp.empty() || comp == "." || comp == "..") return false;
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return true;
}

}  // namespace seamless::packfmt
