// SPDX-License-Identifier: Apache-2.0
// Just enough of CRIU's image files (protobuf entries behind a magic) to tell, for each
// page of a pages-N.img, which file it is a private copy of: pagemap-PID.img says which
// virtual address each page had, mm-PID.img which mapping held it, files.img which file
// the mapping was of. The pack writer stores such pages as deltas against the file.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "pack/malloc_heap.h"

namespace seamless::packfmt::criu_images {

// One protobuf message's fields, in order: varints as numbers, length-delimited ones as
// bytes; fixed32/64 fields are skipped. Err on truncated or malformed input.
struct Field {
  uint32_t number = 0;
  uint64_t value = 0;      // varint fields
  std::string_view bytes;  // length-delimited fields
  bool is_bytes = false;
};
Result<std::vector<Field>> parse_message(std::string_view msg);

// The entries of an image file: its magic header skipped, then each u32 length + message.
Result<std::vector<std::string_view>> image_entries(std::string_view image);

// A page's origin: page `page` (offset / 4096) of the file `path`.
struct FilePage {
  uint32_t file = 0;  // index into PageOrigins::files
  uint64_t page = 0;
};

// Where a task's pages were: the address of each page of its pages-N.img, and what the
// search for its unused malloc memory needs (malloc_heap::Memory without the pages).
struct TaskMemory {
  std::vector<uint64_t> addresses;
  std::vector<malloc_heap::Memory::Mapping> anonymous;  // private, readable and writable
  uint64_t brk_start = 0, brk = 0;
};

struct PageOrigins {
  std::vector<std::string> files;  // paths as the dumped processes saw them
  // Per pages-N.img (by N): one entry per page in the image, set for pages of private
  // file mappings.
  std::map<uint32_t, std::vector<std::optional<FilePage>>> images;
  std::map<uint32_t, TaskMemory> memory;  // per pages-N.img (by N)
};

// Reads the images of one CRIU dump in `dir`. Images it cannot make sense of are left
// out (their pages are then simply stored as they are); Err only on unreadable files.
Result<PageOrigins> page_origins(const std::string& dir);

// Who the tasks of one CRIU dump are: each thread's credentials (core-TID.img's
// thread_core.creds) and each task's executable (mm-PID.img's exe_file_id in files.img).
struct Creds {
  uint32_t uid = 0, gid = 0, euid = 0, egid = 0, suid = 0, sgid = 0, fsuid = 0, fsgid = 0;
  uint64_t cap_inh = 0, cap_prm = 0, cap_eff = 0, cap_bnd = 0;  // capability bits
  uint32_t secbits = 0;
  std::vector<uint32_t> groups;
  bool operator==(const Creds&) const = default;
};
// A seccomp filter of seccomp.img: its instructions (struct sock_filter[]), the filter
// below it (an index into the image's list) and the flags it was installed with.
struct SeccompFilter {
  std::string insns;
  std::optional<uint32_t> prev;
  uint32_t flags = 0;
  auto operator<=>(const SeccompFilter&) const = default;
};
// seccomp.img's filters; none when the dump has no such image. Err when malformed (an
// instruction list not a whole number of 8-byte instructions or over 4096 of them, a
// `prev` that is not an earlier filter).
Result<std::vector<SeccompFilter>> seccomp_filters(const std::string& dir);

// A thread's seccomp state: its mode (0 none, 1 strict, 2 filter) and, in mode 2, its
// filters from the first installed to the last (each without `prev`).
struct Seccomp {
  uint32_t mode = 0;
  std::vector<SeccompFilter> chain;
  bool operator==(const Seccomp&) const = default;
};

struct TaskIdentity {
  std::vector<uint32_t> threads;        // the task's own pid first
  std::map<uint32_t, Creds> creds;      // by thread
  std::map<uint32_t, Seccomp> seccomp;  // by thread
  std::string exe;                      // "" when the images name none
};
// Reads pstree.img and the tasks' core, mm and seccomp images in `dir`. Err on a
// malformed image or a thread without credentials.
Result<std::map<uint32_t, TaskIdentity>> task_identities(const std::string& dir);

// A sink's hand-back is restored as root in the guest: what it holds must be what the
// guest dumped, or what those tasks could have become by themselves. Err naming the
// first task or thread the dump did not have, a credential a task could not have taken
// without privilege it lacked (ids outside its real, effective and saved ones without
// CAP_SETUID/CAP_SETGID, other groups without CAP_SETGID, a capability beyond its
// permitted or bounding set, other securebits without CAP_SETPCAP), or another
// executable.
Result<void> check_handed_back(const std::map<uint32_t, TaskIdentity>& dumped,
                               const std::map<uint32_t, TaskIdentity>& back);

// As JSON (the guest keeps its dump's identities beside its pack), and back: parse
// refuses anything but what to_json writes.
std::string identities_to_json(const std::map<uint32_t, TaskIdentity>& ids);
Result<std::map<uint32_t, TaskIdentity>> identities_from_json(std::string_view text);

}  // namespace seamless::packfmt::criu_images
