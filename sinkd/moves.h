// SPDX-License-Identifier: Apache-2.0
// A container's gateways moved with CRIU, through the CRIU seam: every gateway of a pack
// restored into the container, every gateway dumped into a hand-back. A hand-back that
// fails half-way puts back the gateways it had already dumped.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/result.h"
#include "guest-agent/criu.h"
#include "pack/manifest.h"

namespace seamless::sink {

// Fresh descriptors standing in for a gateway's outside streams (its journal or logger
// connections at home), one per stream, in order; the sink hands in its drain.
using StreamEnds = std::function<Result<std::vector<UniqueFd>>(const packfmt::PackedGateway& gw)>;

// Restores each gateway from `images`/DIR (paths as CRIU sees them), in order; stops at
// the first failure, naming the gateway. `leave_stopped`: the trees stay stopped (an add
// restores them so, and the tracer seizes them before they run).
Result<void> restore_gateways(guest::Criu& criu, const std::string& images,
                              const std::vector<packfmt::PackedGateway>& gateways, const StreamEnds& ends,
                              bool leave_stopped);

// Dumps each gateway (stopped, as the hand-back leaves them) into `out`/DIR; `make_dir`
// creates that directory. When one fails, those dumped before it (their trees gone) are
// restored stopped from their new images, so that all are in the sink as before; the
// error says which failed and whether the others went back.
Result<void> dump_gateways(guest::Criu& criu, const std::string& out,
                           const std::vector<packfmt::PackedGateway>& gateways, const StreamEnds& ends,
                           const std::function<Result<void>(const std::string& dir)>& make_dir);

}  // namespace seamless::sink
