// SPDX-License-Identifier: Apache-2.0
// The sink's file cache: the executables, libraries and mapped files that guests shipped
// because the sink's template lacks them (see pack/shipment.h), stored once by content
// (SHA-256, with mode and owner) in STATE-DIR/files/objects. A container gets the files
// its pack needs as a read-only overlay layer of hard links to the objects: a hundred
// containers running the same daemon share one copy on disk and in the page cache, and
// a write in one container copies up into its own upper layer, never into the object.
//
// Shipments come from guests: the cache checks every object's contents against its
// SHA-256 before it keeps it, and a pack only ever gets objects its own shipment named by
// content hash. What the sink offers a guest as "cached" (candidates by size and build-id)
// is a hint that the guest checks against its own file's hash.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"
#include "pack/identity.h"
#include "pack/pack.h"
#include "pack/shipment.h"

namespace seamless::sink {

struct CacheStats {
  int64_t objects = 0, bytes = 0;
  int64_t in_use = 0;  // objects some container links to
};

// A file of a container's shipped layer: its path there and the object behind it.
using LayerFile = std::pair<std::string, std::string>;

class FileCache {
 public:
  // `dir` must be on the file system of the containers' directories (hard links).
  // Objects no container uses are dropped, oldest first, beyond `budget` bytes.
  explicit FileCache(std::string dir, uint64_t budget = uint64_t(2) << 30);

  // Objects that may be the file `f` names (same size, and same build-id or SHA-256).
  std::vector<std::string> candidates(const packfmt::FileIdentity& f) const;

  // Unpacks a shipment below work_dir, keeps each included file whose contents hash to
  // what the index says, and checks that every file it leaves out is cached. Returns
  // the index.
  Result<packfmt::ShipmentIndex> take(const std::string& shipment, const std::string& work_dir,
                                      const packfmt::PackLimits& limits = {});

  // The object's file; "" for a name that is not an object name.
  std::string object_path(const std::string& object) const;

  // Makes `layer` (must not exist): a tree of hard links, each file at its path. Missing
  // parent directories take owner and mode from `lower` (the sink's root) where it has them.
  Result<void> build_layer(const std::string& layer, const std::vector<LayerFile>& files,
                           const std::string& lower = "") const;

  CacheStats stats() const;
  // Drops unused objects, oldest first, until the cache is within its budget.
  void trim() const;

  const std::string& dir() const { return dir_; }

 private:
  Result<void> keep(const packfmt::ShippedFile& f, const std::string& contents_file) const;
  std::string index_key(uint64_t size, const std::string& id) const;
  std::string dir_;
  uint64_t budget_;
};

}  // namespace seamless::sink
