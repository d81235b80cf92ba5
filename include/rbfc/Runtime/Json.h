//===- Json.h - a strict reader for the descriptor's JSON ------*- C++ -*-===//
//
// The runtime reads one small JSON document per kernel (docs/abi.md) and
// links no JSON library, so it carries its own reader: RFC 8259 grammar, no
// extensions (no comments, trailing commas, NaN or single quotes), duplicate
// object keys rejected, errors with line and column.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_RUNTIME_JSON_H
#define RBFC_RUNTIME_JSON_H

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rbfc::runtime {

struct JsonValue {
  enum class Kind { Null, Bool, Number, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  double number = 0;
  /// The number was written without fraction or exponent.
  bool integral = false;
  std::string string;
  std::vector<JsonValue> array;
  std::vector<std::pair<std::string, JsonValue>> object;

  /// The member `key` of an object, or null when absent.
  const JsonValue *find(std::string_view key) const;
};

/// "null", "a boolean", "a number", ... for error messages.
const char *jsonKindName(JsonValue::Kind kind);

/// Parses `text` as one JSON document. On failure returns false and sets
/// `error` to "line L, column C: what was expected".
bool parseJson(std::string_view text, JsonValue &out, std::string &error);

} // namespace rbfc::runtime

#endif // RBFC_RUNTIME_JSON_H
