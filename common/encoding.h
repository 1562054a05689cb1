// SPDX-License-Identifier: Apache-2.0
// Base64 (RFC 4648, as QGA uses for file data) and SHA-256 hex digests.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace seamless {

std::string base64_encode(std::string_view data);
// Strict: rejects characters outside the alphabet and bad padding.
Result<std::string> base64_decode(std::string_view text);
std::string sha256_hex(std::string_view data);

}  // namespace seamless
