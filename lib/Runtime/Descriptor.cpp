//===- Descriptor.cpp - the kernel descriptor of docs/abi.md -------------===//
#include "rbfc/Runtime/Descriptor.h"

#include "rbfc/Runtime/Json.h"

#include <cstdint>

namespace rbfc::runtime {

const char *dtypeName(rbfc_dtype dtype) {
  switch (dtype) {
  case RBFC_DTYPE_BF16:
    return "bf16";
  case RBFC_DTYPE_F16:
    return "f16";
  case RBFC_DTYPE_F32:
    return "f32";
  case RBFC_DTYPE_I32:
    return "i32";
  case RBFC_DTYPE_I64:
    return "i64";
  }
  return "unknown";
}

int dtypeSize(rbfc_dtype dtype) {
  switch (dtype) {
  case RBFC_DTYPE_BF16:
  case RBFC_DTYPE_F16:
    return 2;
  case RBFC_DTYPE_F32:
  case RBFC_DTYPE_I32:
    return 4;
  case RBFC_DTYPE_I64:
    return 8;
  }
  return 0;
}

namespace {

/// Reads the members of one JSON object, each error prefixed with the path
/// of the object ("params[1]").
class Fields {
public:
  Fields(const JsonValue &object, std::string path, std::string &error)
      : object(object), path(std::move(path)), error(error) {}

  bool fail(const std::string &key, const std::string &what) {
    error = "\"" + qualified(key) + "\" " + what;
    return false;
  }

  const JsonValue *get(const std::string &key, JsonValue::Kind kind,
                       bool required, bool &ok) {
    const JsonValue *value = object.find(key);
    if (!value) {
      if (required)
        ok = fail(key, "is missing");
      return nullptr;
    }
    if (value->kind != kind) {
      ok = fail(key, std::string("must be ") + jsonKindName(kind) + ", not " +
                         jsonKindName(value->kind));
      return nullptr;
    }
    return value;
  }

  bool string(const std::string &key, std::string &out, bool required) {
    bool ok = true;
    if (const JsonValue *v = get(key, JsonValue::Kind::String, required, ok))
      out = v->string;
    return ok;
  }

  bool boolean(const std::string &key, bool &out, bool required = true) {
    bool ok = true;
    if (const JsonValue *v = get(key, JsonValue::Kind::Bool, required, ok))
      out = v->boolean;
    return ok;
  }

  template <typename Int>
  bool integer(const std::string &key, Int &out, int64_t min, int64_t max,
               bool required) {
    bool ok = true;
    const JsonValue *v = get(key, JsonValue::Kind::Number, required, ok);
    if (!v)
      return ok;
    if (!v->integral || v->number < double(min) || v->number > double(max))
      return fail(key, "must be an integer in [" + std::to_string(min) + ", " +
                           std::to_string(max) + "]");
    out = Int(v->number);
    return true;
  }

  bool oneOf(const std::string &key, rbfc_dtype &out,
             std::initializer_list<rbfc_dtype> allowed, bool required) {
    std::string text;
    if (!string(key, text, required))
      return false;
    if (text.empty() && !required)
      return true;
    std::string names;
    for (rbfc_dtype dtype : allowed) {
      if (text == dtypeName(dtype)) {
        out = dtype;
        return true;
      }
      names += names.empty() ? "" : ", ";
      names += dtypeName(dtype);
    }
    return fail(key, "is \"" + text + "\"; expected one of " + names);
  }

private:
  const JsonValue &object;
  std::string path;
  std::string &error;

  std::string qualified(const std::string &key) const {
    return path.empty() ? key : path + "." + key;
  }
};

/// The object at `key` of `parent`, whose path is `qualified`, in `out`:
/// null when the key is absent or null, an error when it is not an object.
bool optionalObject(const JsonValue &parent, const std::string &key,
                    const std::string &qualified, const JsonValue *&out,
                    std::string &error) {
  out = parent.find(key);
  if (out && out->kind == JsonValue::Kind::Null)
    out = nullptr;
  if (!out || out->kind == JsonValue::Kind::Object)
    return true;
  error = "\"" + qualified + "\" must be an object or null, not " +
          jsonKindName(out->kind);
  return false;
}

/// "key_terms" of the kernel object at `path` ("", "small", ...): absent or
/// null for a kernel without a prologue.
bool parseKeyTerms(const JsonValue &kernel, const std::string &path,
                   std::optional<KeyTermsDesc> &out, std::string &error) {
  std::string qualified = path.empty() ? "key_terms" : path + ".key_terms";
  out.reset();
  const JsonValue *value;
  if (!optionalObject(kernel, "key_terms", qualified, value, error))
    return false;
  if (!value)
    return true;
  Fields fields(*value, qualified, error);
  KeyTermsDesc keyTerms;
  if (!fields.string("entry", keyTerms.entry, true) ||
      !fields.integer("block", keyTerms.block, 32, 1024, true) ||
      !fields.integer("keys_per_block", keyTerms.keysPerBlock, 1, INT32_MAX,
                      true) ||
      !fields.integer("terms", keyTerms.terms, 1, 4, true) ||
      !fields.integer("row_multiple", keyTerms.rowMultiple, 1, INT32_MAX, true))
    return false;
  if (keyTerms.entry.empty())
    return fields.fail("entry", "is empty");
  std::string heads;
  if (!fields.string("heads", heads, true))
    return false;
  if (heads != "q" && heads != "kv")
    return fields.fail("heads",
                       "is \"" + heads + "\"; expected \"q\" or \"kv\"");
  keyTerms.perKvHead = heads == "kv";
  if (!fields.boolean("programmatic_launch", keyTerms.programmaticLaunch,
                      /*required=*/false))
    return false;
  if (keyTerms.block % 32 != 0)
    return fields.fail("block", "is " + std::to_string(keyTerms.block) +
                                    "; it must be a multiple of 32 (whole "
                                    "warps)");
  out = std::move(keyTerms);
  return true;
}

bool parseBackwardKernel(Fields &parent, const JsonValue &object,
                         const std::string &key, BackwardKernelDesc &out,
                         std::string &error) {
  bool ok = true;
  const JsonValue *value =
      parent.get(key, JsonValue::Kind::Object, /*required=*/true, ok);
  if (!ok)
    return false;
  Fields fields(*value, "backward." + key, error);
  if (!fields.string("entry", out.entry, true) ||
      !fields.integer("block", out.block, 32, 1024, true) ||
      !fields.integer("rows_per_block", out.rowsPerBlock, 1, 1 << 16, true) ||
      !fields.integer("shared_memory_bytes", out.sharedMemoryBytes, 0,
                      int64_t(1) << 31, true))
    return false;
  if (out.entry.empty())
    return fields.fail("entry", "is empty");
  if (out.block % 32 != 0)
    return fields.fail("block", "is " + std::to_string(out.block) +
                                    "; it must be a multiple of 32");
  return true;
}

/// "backward": absent or null for a kernel compiled without --backward.
bool parseBackward(const JsonValue &root, const Descriptor &descriptor,
                   std::optional<BackwardDesc> &out, std::string &error) {
  const JsonValue *value;
  if (!optionalObject(root, "backward", "backward", value, error))
    return false;
  if (!value)
    return true;
  Fields fields(*value, "backward", error);
  BackwardDesc backward;
  for (auto [key, kernel] :
       {std::pair{"rows", &backward.rows}, std::pair{"dkdv", &backward.keyValue},
        std::pair{"dq", &backward.query},
        std::pair{"tile_sums", &backward.tileSums},
        std::pair{"reduce", &backward.reduce}})
    if (!parseBackwardKernel(fields, *value, key, *kernel, error))
      return false;
  std::string heads;
  if (!fields.integer("row_multiple", backward.rowMultiple, 1, 1 << 16, true) ||
      !fields.integer("key_terms", backward.keyTerms, 0, 2, true) ||
      !fields.string("key_terms_heads", heads, true) ||
      !fields.integer("slots", backward.slots, 0, 1 << 16, true) ||
      !fields.integer("diagonal_query_tile", backward.diagonalQueryTile, 0,
                      1 << 16, true))
    return false;
  if (heads != "q" && heads != "kv")
    return fields.fail("key_terms_heads",
                       "is \"" + heads + "\"; expected \"q\" or \"kv\"");
  backward.keyTermsPerKvHead = heads == "kv";
  auto flags = [&](const char *key, size_t count, std::vector<bool> &out) {
    bool ok = true;
    const JsonValue *array = fields.get(key, JsonValue::Kind::Array, true, ok);
    if (!ok)
      return false;
    if (array->array.size() != count)
      return fields.fail(key, "has " + std::to_string(array->array.size()) +
                                  " entries; the kernel has " +
                                  std::to_string(count));
    for (const JsonValue &flag : array->array) {
      if (flag.kind != JsonValue::Kind::Bool)
        return fields.fail(key, "must hold booleans");
      out.push_back(flag.boolean);
    }
    return true;
  };
  if (!flags("param_grads", descriptor.params.size(), backward.paramGrads) ||
      !flags("capture_grads", descriptor.captures.size(),
             backward.captureGrads))
    return false;
  out = std::move(backward);
  return true;
}

/// The keys of one forward kernel in the object at `path` ("" for the
/// descriptor itself, "small", ...), into `out`; the spec's keys stay as they
/// are.
bool parseKernel(Fields &fields, const JsonValue &kernel,
                 const std::string &path, Descriptor &out, std::string &error) {
  out.plan.clear();
  out.tileN = 0;
  out.stages = 0;
  out.tensorMapRows = 0;
  if (!fields.string("entry", out.entry, true) ||
      !fields.string("plan", out.plan, false) ||
      !fields.integer("tile_m", out.tileM, 1, 1 << 16, true) ||
      !fields.integer("tile_n", out.tileN, 1, 1 << 16, false) ||
      !fields.integer("warps", out.warps, 1, 32, true) ||
      !fields.integer("stages", out.stages, 1, 64, false) ||
      !fields.integer("shared_memory_bytes", out.sharedMemoryBytes, 0,
                      int64_t(1) << 31, true) ||
      !fields.integer("tensor_map_rows", out.tensorMapRows, 0, 256, false))
    return false;
  if (out.entry.empty())
    return fields.fail("entry", "is empty");
  return parseKeyTerms(kernel, path, out.keyTerms, error);
}

/// TMA kernels take 16-bit inputs: `kernel`'s tensor maps against its dtype.
bool checkTensorMapType(Fields &fields, const Descriptor &kernel) {
  if (kernel.tensorMapRows > 0 && kernel.dtype == RBFC_DTYPE_F32)
    return fields.fail("tensor_map_rows",
                       "is set, but TMA kernels take bf16 or f16, not f32");
  return true;
}

/// The most small-problem kernels a descriptor may chain.
constexpr int kMaxSmallKernels = 4;

/// "small" of the kernel object `object` at `path` ("" for the descriptor
/// itself): absent or null for a kernel without a small-problem one, else
/// that kernel, which may hold a "small" of its own. `entries` are the
/// entries of the kernels before it, which it must not reuse.
bool parseSmall(const JsonValue &object, const std::string &path,
                Descriptor &out, std::vector<std::string> &entries,
                std::string &error) {
  std::string smallPath = path.empty() ? "small" : path + ".small";
  const JsonValue *value;
  if (!optionalObject(object, "small", smallPath, value, error))
    return false;
  if (!value)
    return true;
  if (int(entries.size()) > kMaxSmallKernels) {
    error = "\"" + smallPath + "\" is a small-problem kernel past the " +
            std::to_string(kMaxSmallKernels) + " a descriptor may chain";
    return false;
  }
  Fields fields(*value, smallPath, error);
  auto small = std::make_shared<Descriptor>(out);
  small->backward.reset();
  small->smallBlocksPerSM = 0;
  if (!parseKernel(fields, *value, smallPath, *small, error) ||
      !fields.integer("blocks_per_sm", out.smallBlocksPerSM, 1, 64, true))
    return false;
  for (const std::string &entry : entries)
    if (small->entry == entry)
      return fields.fail("entry", "is an earlier kernel's, \"" + entry + "\"");
  if (!checkTensorMapType(fields, *small))
    return false;
  entries.push_back(small->entry);
  if (!parseSmall(*value, smallPath, *small, entries, error))
    return false;
  out.small = std::move(small);
  return true;
}

} // namespace

bool parseDescriptor(std::string_view json, Descriptor &out,
                     std::string &error) {
  out = Descriptor();
  JsonValue root;
  if (!parseJson(json, root, error))
    return false;
  if (root.kind != JsonValue::Kind::Object) {
    error = std::string("the descriptor must be a JSON object, not ") +
            jsonKindName(root.kind);
    return false;
  }

  Fields top(root, "", error);
  std::string format;
  if (!top.string("format", format, true))
    return false;
  if (format != "rbfc-kernel/5")
    return top.fail("format", "is \"" + format +
                                  "\"; this runtime reads \"rbfc-kernel/5\"");

  if (!top.string("name", out.name, false) ||
      !parseKernel(top, root, "", out, error) ||
      !top.string("arch", out.arch, false) ||
      !top.oneOf("dtype", out.dtype,
                 {RBFC_DTYPE_BF16, RBFC_DTYPE_F16, RBFC_DTYPE_F32}, true) ||
      !top.integer("head_dim", out.headDim, 1, 1024, true) ||
      !top.boolean("has_lse", out.hasLse) ||
      !top.string("normalization", out.normalization, false))
    return false;
  if (out.normalization != "softmax" && out.normalization != "none")
    return top.fail("normalization", "is \"" + out.normalization +
                                         "\"; expected softmax or none");
  if (!checkTensorMapType(top, out))
    return false;

  bool ok = true;
  const JsonValue *params = top.get("params", JsonValue::Kind::Array, true, ok);
  if (!ok)
    return false;
  for (size_t i = 0; i < params->array.size(); ++i) {
    std::string path = "params[" + std::to_string(i) + "]";
    const JsonValue &entry = params->array[i];
    if (entry.kind != JsonValue::Kind::Object) {
      error = "\"" + path + "\" must be an object";
      return false;
    }
    Fields fields(entry, path, error);
    ParamDesc param;
    if (!fields.string("name", param.name, true) ||
        !fields.oneOf("type", param.type, {RBFC_DTYPE_F32, RBFC_DTYPE_I32},
                      true))
      return false;
    // rbfc leaves "default" out for a parameter without one (docs/abi.md);
    // null means the same.
    const JsonValue *value = entry.find("default");
    if (value && value->kind == JsonValue::Kind::Number) {
      param.hasDefault = true;
      param.defaultValue = value->number;
      if (param.type == RBFC_DTYPE_I32 &&
          (!value->integral || value->number < -2147483648.0 ||
           value->number > 2147483647.0))
        return fields.fail("default", "must be a 32-bit integer for an i32 "
                                      "parameter");
    } else if (value && value->kind != JsonValue::Kind::Null) {
      return fields.fail("default", std::string("must be a number or null, "
                                                "not ") +
                                        jsonKindName(value->kind));
    }
    out.params.push_back(std::move(param));
  }

  const JsonValue *captures =
      top.get("captures", JsonValue::Kind::Array, true, ok);
  if (!ok)
    return false;
  for (size_t i = 0; i < captures->array.size(); ++i) {
    std::string path = "captures[" + std::to_string(i) + "]";
    const JsonValue &entry = captures->array[i];
    if (entry.kind != JsonValue::Kind::Object) {
      error = "\"" + path + "\" must be an object";
      return false;
    }
    Fields fields(entry, path, error);
    CaptureDesc capture;
    if (!fields.string("name", capture.name, true) ||
        !fields.oneOf("type", capture.type,
                      {RBFC_DTYPE_F32, RBFC_DTYPE_I32, RBFC_DTYPE_I64}, true) ||
        !fields.integer("rank", capture.rank, 1, RBFC_MAX_RANK, true))
      return false;
    out.captures.push_back(std::move(capture));
  }
  std::vector<std::string> entries{out.entry};
  return parseBackward(root, out, out.backward, error) &&
         parseSmall(root, "", out, entries, error);
}

} // namespace rbfc::runtime
