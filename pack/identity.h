// SPDX-License-Identifier: Apache-2.0
// File identities: what a pack records about every executable, library and file a
// gateway maps or holds open, so that the other side can tell whether its own copy is
// the same file (CRIU restores mappings of the file found at the same path).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace seamless::packfmt {

struct FileIdentity {
  std::string path;
  uint64_t size = 0;
  std::string build_id;  // hex, for ELF files that carry NT_GNU_BUILD_ID
  std::string sha256;    // hex, for everything else
  // How the gateway uses it: "exe" or "map" (code and data mapped into memory: must be
  // the same file on the other side), "shared" (mapped shared and writable: data the
  // gateway writes into the file, e.g. a JVM's hsperfdata; must be there, its contents
  // are the gateway's and go with it to a sink) or "open" (held open: may be stood in for).
  std::string role;
  // Permission bits and owner: a dummy standing in for the file gets them (CRIU checks
  // the mode of every file it reopens).
  uint32_t mode = 0644, uid = 0, gid = 0;
};

// The GNU build-id note of an ELF file's contents, hex; empty when it has none or is
// not ELF. Malformed ELF is not an error: it just has no build-id.
std::string elf_build_id(std::string_view contents);

// The build-id of the ELF file open at fd (from the headers at its start: libraries are
// identified without reading them whole, which is slow under TCG); empty if it has none.
Result<std::string> elf_build_id_of(int fd, const std::string& path);

// Identifies the file at path: a regular file only, opened without blocking (a fifo or a
// device is refused at once) and never on a kernel file system (/proc, /sys, ...: their
// files claim size 0 and read without end). ELF files by their build-id (headers only);
// others are read whole, at most *budget bytes (taken from it; default 1 GiB).
Result<FileIdentity> identify(const std::string& path, uint64_t* budget = nullptr);

// A path as packs and manifests may name a file on the other side: absolute, at most
// 4096 bytes, no NUL, no empty, `.` or `..` components.
bool is_plain_absolute(std::string_view path);

// Ok when `local` is the same file as `recorded`; otherwise an error saying how they differ.
Result<void> same_file(const FileIdentity& recorded, const FileIdentity& local);

}  // namespace seamless::packfmt
