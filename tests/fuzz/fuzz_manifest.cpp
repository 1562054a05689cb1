// SPDX-License-Identifier: Apache-2.0
// Fuzz target: arbitrary bytes as a pack's manifest (written by a guest, or by a sink for a
// hand-back): the parser with every field's schema, the file tree's checks and look-ups,
// and a manifest it accepts must write itself back as the same manifest.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "pack/manifest.h"
#include "pack/tree.h"

using namespace seamless::packfmt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto m = Manifest::parse(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!m.ok()) return 0;
  const std::string json = m->to_json();
  auto again = Manifest::parse(json);
  if (!again.ok() || again->to_json() != json) std::abort();  // what it accepted it must read back
  TreeView view(m->tree);
  for (const auto& e : m->tree) {
    (void)view.answers(e.path, true);
    (void)view.answers(e.path + "/x", false);
    (void)view.lists(e.path);
    (void)view.reads(e.path);
  }
  return 0;
}
