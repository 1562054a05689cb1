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

struct PageOrigins {
  std::vector<std::string> files;  // paths as the dumped processes saw them
  // Per pages-N.img (by N): one entry per page in the image, set for pages of private
  // file mappings.
  std::map<uint32_t, std::vector<std::optional<FilePage>>> images;
};

// Reads the images of one CRIU dump in `dir`. Images it cannot make sense of are left
// out (their pages are then simply stored as they are); Err only on unreadable files.
Result<PageOrigins> page_origins(const std::string& dir);

}  // namespace seamless::packfmt::criu_images
