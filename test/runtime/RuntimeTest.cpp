//===- RuntimeTest.cpp - the CUDA runtime without a GPU ------------------===//
//
// Descriptor reading, launch checks, argument packing and the key-terms
// workspace of librbfc_runtime, and the error a machine without a CUDA
// driver gets. Nothing here needs a
// GPU; test/gpu/ runs the kernels.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Runtime/Descriptor.h"
#include "rbfc/Runtime/Driver.h"
#include "rbfc/Runtime/Json.h"
#include "rbfc/Runtime/Launch.h"
#include "rbfc/runtime.h"

#include <dlfcn.h>
#include <gtest/gtest.h>

using namespace rbfc::runtime;

namespace {

// The example of docs/abi.md.
const char *kAbiExample = R"({
  "format": "rbfc-kernel/5",
  "name": "rbf",
  "entry": "rbf_fwd",
  "arch": "sm_90a",
  "dtype": "bf16",
  "head_dim": 64,
  "normalization": "softmax",
  "has_lse": true,
  "tile_m": 128,
  "tile_n": 64,
  "warps": 8,
  "stages": 2,
  "plan": "#attn.plan<arch = \"sm_90a\", kernel = \"mma_sync\", tile_m = 128, tile_n = 64, warps = 8, stages = 2>",
  "shared_memory_bytes": 49152,
  "params": [ { "name": "gamma", "type": "f32", "default": 0.125 } ],
  "captures": [ { "name": "doc", "type": "i32", "rank": 2 } ]
})";

std::string parseError(const std::string &json) {
  JsonValue value;
  std::string error;
  EXPECT_FALSE(parseJson(json, value, error)) << json;
  return error;
}

std::string descriptorError(const std::string &json) {
  Descriptor d;
  std::string error;
  EXPECT_FALSE(parseDescriptor(json, d, error)) << json;
  return error;
}

/// `text` with the first `from` replaced by `to`.
std::string replaced(std::string text, const std::string &from,
                     const std::string &to) {
  size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return at == std::string::npos ? text : text.replace(at, from.size(), to);
}

/// kAbiExample with `from` replaced by `to`.
std::string edited(const std::string &from, const std::string &to) {
  return replaced(kAbiExample, from, to);
}

/// kAbiExample with the top-level `key` set to `value` (JSON text).
std::string withKey(const std::string &key, const std::string &value) {
  return edited("\"shared_memory_bytes\": 49152,",
                "\"shared_memory_bytes\": 49152, \"" + key + "\": " + value +
                    ",");
}

/// The key_terms object of the example in docs/abi.md.
const char *kKeyTerms = R"({ "entry": "rbf_fwd_key_terms", "block": 128,
  "keys_per_block": 32, "terms": 1, "row_multiple": 64, "heads": "q" })";

/// kAbiExample with "key_terms": `value`.
std::string withKeyTerms(const std::string &value) {
  return withKey("key_terms", value);
}

/// kKeyTerms with `from` replaced by `to`.
std::string keyTermsError(const std::string &from, const std::string &to) {
  return descriptorError(withKeyTerms(replaced(kKeyTerms, from, to)));
}

//===-- JSON --------------------------------------------------------------===//

TEST(RuntimeJson, ReadsEveryKind) {
  JsonValue v;
  std::string error;
  ASSERT_TRUE(parseJson(
      R"( {"a": [1, -2.5e3, 0, true, false, null], "b": {"c": "x\"\\\/\n\u00e9\ud83d\ude00"}} )",
      v, error))
      << error;
  ASSERT_EQ(v.kind, JsonValue::Kind::Object);
  const JsonValue *a = v.find("a");
  ASSERT_TRUE(a);
  ASSERT_EQ(a->array.size(), 6u);
  EXPECT_EQ(a->array[0].number, 1);
  EXPECT_TRUE(a->array[0].integral);
  EXPECT_EQ(a->array[1].number, -2500);
  EXPECT_FALSE(a->array[1].integral);
  EXPECT_TRUE(a->array[3].boolean);
  EXPECT_EQ(a->array[5].kind, JsonValue::Kind::Null);
  EXPECT_EQ(v.find("b")->find("c")->string,
            "x\"\\/\n\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_EQ(v.find("missing"), nullptr);
}

TEST(RuntimeJson, RejectsWhatRfc8259Rejects) {
  EXPECT_NE(parseError("[1, 2,]").find("expected a JSON value"),
            std::string::npos);
  EXPECT_NE(parseError("{\"a\": 1,}").find("expected a string key"),
            std::string::npos);
  EXPECT_NE(parseError("// c\n{}").find("line 1, column 1"),
            std::string::npos);
  EXPECT_NE(parseError("{\n  \"a\": 01}").find("line 2, column 9: leading "
                                               "zeros"),
            std::string::npos);
  EXPECT_NE(parseError("{'a': 1}").find("expected a string key"),
            std::string::npos);
  EXPECT_NE(parseError("NaN").find("unexpected character 'N'"),
            std::string::npos);
  EXPECT_NE(parseError("{\"a\": 1, \"a\": 2}").find("duplicate key \"a\""),
            std::string::npos);
  EXPECT_NE(parseError("{} x").find("unexpected text after"),
            std::string::npos);
  EXPECT_NE(parseError("\"abc").find("unterminated string"),
            std::string::npos);
  EXPECT_NE(parseError("\"a\tb\"").find("control character"),
            std::string::npos);
  EXPECT_NE(parseError("\"\\x\"").find("invalid escape"), std::string::npos);
  EXPECT_NE(parseError("\"\\udc00\"").find("lone low surrogate"),
            std::string::npos);
  EXPECT_NE(parseError("1.").find("expected a digit"), std::string::npos);
  EXPECT_NE(parseError("-").find("expected a digit"), std::string::npos);
  EXPECT_NE(parseError("1e999").find("out of range"), std::string::npos);
  EXPECT_NE(parseError("").find("unexpected end of input"),
            std::string::npos);
  EXPECT_NE(parseError(std::string(100, '[') + std::string(100, ']'))
                .find("nesting deeper"),
            std::string::npos);
}

//===-- Descriptor --------------------------------------------------------===//

TEST(RuntimeDescriptor, ReadsTheAbiExample) {
  Descriptor d;
  std::string error;
  ASSERT_TRUE(parseDescriptor(kAbiExample, d, error)) << error;
  EXPECT_EQ(d.name, "rbf");
  EXPECT_EQ(d.entry, "rbf_fwd");
  EXPECT_EQ(d.arch, "sm_90a");
  EXPECT_EQ(d.dtype, RBFC_DTYPE_BF16);
  EXPECT_EQ(d.headDim, 64);
  EXPECT_EQ(d.normalization, "softmax");
  EXPECT_TRUE(d.hasLse);
  EXPECT_EQ(d.tileM, 128);
  EXPECT_EQ(d.tileN, 64);
  EXPECT_EQ(d.warps, 8);
  EXPECT_EQ(d.stages, 2);
  EXPECT_EQ(d.sharedMemoryBytes, 49152);
  EXPECT_NE(d.plan.find("mma_sync"), std::string::npos);
  ASSERT_EQ(d.params.size(), 1u);
  EXPECT_EQ(d.params[0].name, "gamma");
  EXPECT_EQ(d.params[0].type, RBFC_DTYPE_F32);
  EXPECT_TRUE(d.params[0].hasDefault);
  EXPECT_EQ(d.params[0].defaultValue, 0.125);
  ASSERT_EQ(d.captures.size(), 1u);
  EXPECT_EQ(d.captures[0].name, "doc");
  EXPECT_EQ(d.captures[0].type, RBFC_DTYPE_I32);
  EXPECT_EQ(d.captures[0].rank, 2);
  EXPECT_FALSE(d.keyTerms);
}

TEST(RuntimeDescriptor, ReadsKeyTerms) {
  Descriptor d;
  std::string error;
  ASSERT_TRUE(parseDescriptor(withKeyTerms(kKeyTerms), d, error)) << error;
  ASSERT_TRUE(d.keyTerms);
  EXPECT_EQ(d.keyTerms->entry, "rbf_fwd_key_terms");
  EXPECT_EQ(d.keyTerms->block, 128);
  EXPECT_EQ(d.keyTerms->keysPerBlock, 32);
  EXPECT_EQ(d.keyTerms->terms, 1);
  EXPECT_EQ(d.keyTerms->rowMultiple, 64);
  EXPECT_FALSE(d.keyTerms->perKvHead);
  // programmatic_launch is optional: absent, the kernel launches in plain
  // stream order.
  EXPECT_FALSE(d.keyTerms->programmaticLaunch);
  EXPECT_EQ(d.entry, "rbf_fwd");

  std::string terms = kKeyTerms, heads = "\"heads\": \"q\"";
  terms.replace(terms.find(heads), heads.size(),
                "\"heads\": \"kv\", \"programmatic_launch\": true");
  ASSERT_TRUE(parseDescriptor(withKeyTerms(terms), d, error)) << error;
  EXPECT_TRUE(d.keyTerms->perKvHead);
  EXPECT_TRUE(d.keyTerms->programmaticLaunch);

  // null is the same as absent; a reused Descriptor forgets old key terms.
  ASSERT_TRUE(parseDescriptor(withKeyTerms("null"), d, error)) << error;
  EXPECT_FALSE(d.keyTerms);
}

TEST(RuntimeDescriptor, IgnoresUnknownKeys) {
  Descriptor d;
  std::string error;
  std::string json = edited("\"name\": \"rbf\",",
                            "\"name\": \"rbf\", \"future\": {\"x\": [1]},");
  json = edited("\"type\": \"f32\", \"default\"",
                "\"type\": \"f32\", \"note\": \"hi\", \"default\"");
  ASSERT_TRUE(parseDescriptor(json, d, error)) << error;
  ASSERT_TRUE(parseDescriptor(edited("\"name\": \"rbf\",",
                                     "\"name\": \"rbf\", \"x\": null,"),
                              d, error))
      << error;
}

TEST(RuntimeDescriptor, NullDefaultAndOptionalKeys) {
  Descriptor d;
  std::string error;
  ASSERT_TRUE(parseDescriptor(
      R"({"format": "rbfc-kernel/5", "entry": "k", "dtype": "f16",
          "head_dim": 128, "has_lse": false, "tile_m": 64, "warps": 4,
          "shared_memory_bytes": 0,
          "params": [{"name": "window", "type": "i32", "default": null}],
          "captures": []})",
      d, error))
      << error;
  EXPECT_EQ(d.dtype, RBFC_DTYPE_F16);
  EXPECT_FALSE(d.params[0].hasDefault);
  EXPECT_EQ(d.params[0].type, RBFC_DTYPE_I32);
  EXPECT_EQ(d.normalization, "softmax");
}

TEST(RuntimeDescriptor, AbsentDefaultMeansNone) {
  Descriptor d;
  std::string error;
  ASSERT_TRUE(parseDescriptor(edited(", \"default\": 0.125", ""), d, error))
      << error;
  EXPECT_FALSE(d.params[0].hasDefault);
}

TEST(RuntimeDescriptor, NamesWhatIsWrong) {
  EXPECT_NE(descriptorError("[]").find("must be a JSON object"),
            std::string::npos);
  EXPECT_NE(descriptorError(edited("rbfc-kernel/5", "rbfc-kernel/4"))
                .find("\"format\" is \"rbfc-kernel/4\"; this runtime reads "
                      "\"rbfc-kernel/5\""),
            std::string::npos);
  EXPECT_NE(descriptorError(edited("rbfc-kernel/5", "rbfc-kernel/6"))
                .find("\"format\" is \"rbfc-kernel/6\"; this runtime reads "
                      "\"rbfc-kernel/5\""),
            std::string::npos);
  EXPECT_NE(descriptorError(edited("\"entry\": \"rbf_fwd\",", ""))
                .find("\"entry\" is missing"),
            std::string::npos);
  EXPECT_NE(descriptorError(edited("\"head_dim\": 64", "\"head_dim\": \"64\""))
                .find("\"head_dim\" must be a number, not a string"),
            std::string::npos);
  EXPECT_NE(descriptorError(edited("\"head_dim\": 64", "\"head_dim\": 64.5"))
                .find("\"head_dim\" must be an integer"),
            std::string::npos);
  EXPECT_NE(descriptorError(edited("\"warps\": 8", "\"warps\": 0"))
                .find("\"warps\" must be an integer in [1, 32]"),
            std::string::npos);
  EXPECT_NE(descriptorError(edited("\"stages\": 2", "\"stages\": 2, "
                                                    "\"tensor_map_rows\": 512"))
                .find("\"tensor_map_rows\" must be an integer in [0, 256]"),
            std::string::npos);
  EXPECT_NE(
      descriptorError(edited("\"dtype\": \"bf16\"",
                             "\"dtype\": \"f32\", \"tensor_map_rows\": 64"))
          .find("TMA kernels take bf16 or f16, not f32"),
      std::string::npos);
  EXPECT_NE(descriptorError(edited("\"dtype\": \"bf16\"", "\"dtype\": \"f8\""))
                .find("\"dtype\" is \"f8\"; expected one of bf16, f16, f32"),
            std::string::npos);
  EXPECT_NE(descriptorError(edited("\"has_lse\": true", "\"has_lse\": 1"))
                .find("\"has_lse\" must be a boolean"),
            std::string::npos);
  EXPECT_NE(descriptorError(edited("softmax", "sparsemax"))
                .find("\"normalization\" is \"sparsemax\""),
            std::string::npos);
  EXPECT_NE(descriptorError(edited("\"default\": 0.125", "\"default\": \"x\""))
                .find("\"params[0].default\" must be a number or null"),
            std::string::npos);
  EXPECT_NE(descriptorError(edited("\"type\": \"f32\", \"default\": 0.125",
                                   "\"type\": \"i32\", \"default\": 0.5"))
                .find("\"params[0].default\" must be a 32-bit integer"),
            std::string::npos);
  EXPECT_NE(descriptorError(edited("\"type\": \"f32\"", "\"type\": \"i64\""))
                .find("\"params[0].type\" is \"i64\"; expected one of f32, "
                      "i32"),
            std::string::npos);
  EXPECT_NE(descriptorError(edited("\"rank\": 2", "\"rank\": 5"))
                .find("\"captures[0].rank\" must be an integer in [1, 4]"),
            std::string::npos);
  EXPECT_NE(descriptorError(edited("\"captures\": [", "\"captures\": [1, "))
                .find("\"captures[0]\" must be an object"),
            std::string::npos);
  EXPECT_NE(descriptorError(edited("\"params\": [", "\"params\": {"))
                .find("line"),
            std::string::npos);
}

TEST(RuntimeDescriptor, NamesWhatIsWrongInKeyTerms) {
  EXPECT_NE(descriptorError(withKeyTerms("1"))
                .find("\"key_terms\" must be an object or null, not a number"),
            std::string::npos);
  EXPECT_NE(descriptorError(withKeyTerms("[]"))
                .find("\"key_terms\" must be an object or null, not an array"),
            std::string::npos);
  // Each row edits the valid descriptor's key_terms (from -> to) and names
  // the message the parser must give.
  struct Case {
    const char *from, *to, *message;
  };
  const Case cases[] = {
      {"\"entry\": \"rbf_fwd_key_terms\", ", "",
       "\"key_terms.entry\" is missing"},
      {"\"rbf_fwd_key_terms\"", "\"\"", "\"key_terms.entry\" is empty"},
      {"\"rbf_fwd_key_terms\"", "7",
       "\"key_terms.entry\" must be a string, not a number"},
      {"\"block\": 128", "\"block\": 16",
       "\"key_terms.block\" must be an integer in [32, 1024]"},
      {"\"block\": 128", "\"block\": 2048",
       "\"key_terms.block\" must be an integer in [32, 1024]"},
      {"\"block\": 128", "\"block\": 96.5",
       "\"key_terms.block\" must be an integer"},
      {"\"block\": 128", "\"block\": 100",
       "\"key_terms.block\" is 100; it must be a multiple of 32"},
      {"\"block\": 128,", "", "\"key_terms.block\" is missing"},
      {"\"keys_per_block\": 32", "\"keys_per_block\": 0",
       "\"key_terms.keys_per_block\" must be an integer in [1, "},
      {"\"terms\": 1", "\"terms\": 5",
       "\"key_terms.terms\" must be an integer in [1, 4]"},
      {"\"terms\": 1", "\"terms\": 0",
       "\"key_terms.terms\" must be an integer in [1, 4]"},
      {"\"terms\": 1", "\"terms\": \"1\"",
       "\"key_terms.terms\" must be a number, not a string"},
      {"\"row_multiple\": 64", "\"row_multiple\": 0",
       "\"key_terms.row_multiple\" must be an integer in [1, "},
      {", \"row_multiple\": 64", "", "\"key_terms.row_multiple\" is missing"},
      {", \"heads\": \"q\"", "", "\"key_terms.heads\" is missing"},
      {"\"heads\": \"q\"", "\"heads\": \"k\"",
       "\"key_terms.heads\" is \"k\"; expected \"q\" or \"kv\""},
      {"\"heads\": \"q\"", "\"heads\": 1",
       "\"key_terms.heads\" must be a string, not a number"},
      {"\"heads\": \"q\"", "\"heads\": \"q\", \"programmatic_launch\": 1",
       "\"key_terms.programmatic_launch\" must be a boolean, not a number"},
  };
  for (const Case &c : cases)
    EXPECT_NE(keyTermsError(c.from, c.to).find(c.message), std::string::npos)
        << c.from << " -> " << c.to;
}

/// The small-problem kernel of a cooperative wgmma default (docs/abi.md,
/// "Small problems").
const char *kSmall = R"({ "entry": "rbf_fwd_small", "plan": "p",
  "tile_m": 128, "tile_n": 128, "warps": 12, "stages": 4,
  "shared_memory_bytes": 115712, "tensor_map_rows": 128,
  "key_terms": { "entry": "rbf_fwd_small_key_terms", "block": 384,
    "keys_per_block": 384, "terms": 1, "row_multiple": 128, "heads": "kv" },
  "blocks_per_sm": 1 })";

/// kAbiExample with "small": `value`.
std::string withSmall(const std::string &value) {
  return withKey("small", value);
}

TEST(RuntimeDescriptor, ReadsTheSmallProblemKernel) {
  Descriptor d;
  std::string error;
  ASSERT_TRUE(parseDescriptor(withSmall(kSmall), d, error)) << error;
  ASSERT_TRUE(d.small);
  EXPECT_EQ(d.smallBlocksPerSM, 1);
  const Descriptor &small = *d.small;
  EXPECT_EQ(small.entry, "rbf_fwd_small");
  EXPECT_EQ(small.plan, "p");
  EXPECT_EQ(small.tileM, 128);
  EXPECT_EQ(small.tileN, 128);
  EXPECT_EQ(small.warps, 12);
  EXPECT_EQ(small.stages, 4);
  EXPECT_EQ(small.sharedMemoryBytes, 115712);
  EXPECT_EQ(small.tensorMapRows, 128);
  ASSERT_TRUE(small.keyTerms);
  EXPECT_EQ(small.keyTerms->entry, "rbf_fwd_small_key_terms");
  EXPECT_TRUE(small.keyTerms->perKvHead);
  EXPECT_FALSE(small.small);
  // The spec's keys are the default kernel's.
  ASSERT_EQ(small.params.size(), 1u);
  EXPECT_EQ(small.params[0].name, "gamma");
  ASSERT_EQ(small.captures.size(), 1u);
  EXPECT_EQ(small.headDim, 64);
  EXPECT_TRUE(small.hasLse);
  // ... and the default kernel's own keys stay its own.
  EXPECT_EQ(d.entry, "rbf_fwd");
  EXPECT_EQ(d.tileN, 64);
  EXPECT_EQ(d.tensorMapRows, 0);
  EXPECT_FALSE(d.keyTerms);

  // Without key terms, tile_n, stages or tensor maps of its own, the small
  // kernel has none: it does not inherit the default's.
  ASSERT_TRUE(
      parseDescriptor(withSmall(R"({"entry": "s", "tile_m": 64, "warps": 4,
        "shared_memory_bytes": 0, "blocks_per_sm": 2})"),
                      d, error))
      << error;
  ASSERT_TRUE(d.small);
  EXPECT_EQ(d.small->tileN, 0);
  EXPECT_EQ(d.small->stages, 0);
  EXPECT_TRUE(d.small->plan.empty());

  ASSERT_TRUE(parseDescriptor(withSmall("null"), d, error)) << error;
  EXPECT_FALSE(d.small);
}

TEST(RuntimeDescriptor, NamesWhatIsWrongInTheSmallProblemKernel) {
  EXPECT_NE(descriptorError(withSmall("3"))
                .find("\"small\" must be an object or null, not a number"),
            std::string::npos);
  struct Case {
    const char *from, *to, *message;
  };
  const Case cases[] = {
      {"\"entry\": \"rbf_fwd_small\", ", "", "\"small.entry\" is missing"},
      {"\"rbf_fwd_small\"", "\"rbf_fwd\"",
       "\"small.entry\" is an earlier kernel's, \"rbf_fwd\""},
      {"\"tile_m\": 128", "\"tile_m\": 0",
       "\"small.tile_m\" must be an integer in [1, 65536]"},
      {"\"warps\": 12,", "", "\"small.warps\" is missing"},
      {"\"tensor_map_rows\": 128", "\"tensor_map_rows\": 512",
       "\"small.tensor_map_rows\" must be an integer in [0, 256]"},
      {"\"block\": 384", "\"block\": 100",
       "\"small.key_terms.block\" is 100; it must be a multiple of 32"},
      {"\"heads\": \"kv\"", "\"heads\": \"x\"",
       "\"small.key_terms.heads\" is \"x\""},
      {"\"blocks_per_sm\": 1", "\"blocks\": 1",
       "\"small.blocks_per_sm\" is missing"},
      {"\"blocks_per_sm\": 1", "\"blocks_per_sm\": 0",
       "\"small.blocks_per_sm\" must be an integer in [1, 64]"},
  };
  for (const Case &c : cases) {
    std::string error =
        descriptorError(withSmall(replaced(kSmall, c.from, c.to)));
    EXPECT_NE(error.find(c.message), std::string::npos)
        << "expected '" << c.message << "', got '" << error << "'";
  }
  // Its tensor maps against the spec's dtype.
  EXPECT_NE(descriptorError(replaced(withSmall(kSmall), "\"dtype\": \"bf16\"",
                                     "\"dtype\": \"f32\""))
                .find("\"small.tensor_map_rows\" is set, but TMA kernels take "
                      "bf16 or f16, not f32"),
            std::string::npos);
}

/// kSmall holding `value` as its own "small".
std::string smallWithSmall(const std::string &value) {
  return replaced(kSmall, "\"blocks_per_sm\": 1 }",
                  "\"blocks_per_sm\": 1, \"small\": " + value + " }");
}

/// The 64-row small kernel that follows kSmall.
const char *kSmallM64 = R"({ "entry": "rbf_fwd_small_m64", "plan": "p64",
  "tile_m": 64, "tile_n": 128, "warps": 8, "stages": 4,
  "shared_memory_bytes": 99000, "tensor_map_rows": 128,
  "blocks_per_sm": 1 })";

TEST(RuntimeDescriptor, ReadsAChainOfSmallProblemKernels) {
  Descriptor d;
  std::string error;
  ASSERT_TRUE(parseDescriptor(withSmall(smallWithSmall(kSmallM64)), d, error))
      << error;
  ASSERT_TRUE(d.small);
  EXPECT_EQ(d.small->entry, "rbf_fwd_small");
  EXPECT_EQ(d.smallBlocksPerSM, 1);
  ASSERT_TRUE(d.small->small);
  EXPECT_EQ(d.small->smallBlocksPerSM, 1);
  const Descriptor &narrow = *d.small->small;
  EXPECT_EQ(narrow.entry, "rbf_fwd_small_m64");
  EXPECT_EQ(narrow.plan, "p64");
  EXPECT_EQ(narrow.tileM, 64);
  EXPECT_EQ(narrow.warps, 8);
  EXPECT_EQ(narrow.sharedMemoryBytes, 99000);
  // Its own key terms (none here), not the kernel's before it.
  EXPECT_FALSE(narrow.keyTerms);
  EXPECT_FALSE(narrow.small);
  EXPECT_EQ(narrow.smallBlocksPerSM, 0);
  ASSERT_EQ(narrow.params.size(), 1u);
  EXPECT_FALSE(narrow.backward);
}

TEST(RuntimeDescriptor, NamesWhatIsWrongInAChainOfSmallKernels) {
  struct Case {
    const char *from, *to, *message;
  };
  const Case cases[] = {
      {"\"rbf_fwd_small_m64\"", "\"rbf_fwd\"",
       "\"small.small.entry\" is an earlier kernel's, \"rbf_fwd\""},
      {"\"rbf_fwd_small_m64\"", "\"rbf_fwd_small\"",
       "\"small.small.entry\" is an earlier kernel's, \"rbf_fwd_small\""},
      {"\"tile_m\": 64", "\"tile_m\": -1",
       "\"small.small.tile_m\" must be an integer in [1, 65536]"},
      {"\"blocks_per_sm\": 1 }", "\"blocks\": 1 }",
       "\"small.small.blocks_per_sm\" is missing"},
  };
  for (const Case &c : cases) {
    std::string error = descriptorError(
        withSmall(smallWithSmall(replaced(kSmallM64, c.from, c.to))));
    EXPECT_NE(error.find(c.message), std::string::npos)
        << "expected '" << c.message << "', got '" << error << "'";
  }
  // A chain longer than a descriptor may hold: four small kernels, then a
  // fifth.
  auto kernel = [](int index, const std::string &inner) {
    std::string text = R"({ "entry": "k)" + std::to_string(index) +
                       R"(", "tile_m": 64, "warps": 4,
      "shared_memory_bytes": 0, "blocks_per_sm": 1)";
    return text + (inner.empty() ? "" : ", \"small\": " + inner) + " }";
  };
  std::string chain;
  for (int index = 4; index >= 1; --index)
    chain = kernel(index, chain);
  Descriptor d;
  std::string error;
  ASSERT_TRUE(parseDescriptor(withSmall(chain), d, error)) << error;
  std::string tooLong;
  for (int index = 5; index >= 1; --index)
    tooLong = kernel(index, tooLong);
  EXPECT_NE(descriptorError(withSmall(tooLong))
                .find("\"small.small.small.small.small\" is a small-problem "
                      "kernel past the 4 a descriptor may chain"),
            std::string::npos)
      << descriptorError(withSmall(tooLong));
}

//===-- Launch checks and packing ------------------------------------------===//

void *fakePointer(uintptr_t at) { return reinterpret_cast<void *>(at); }

rbfc_tensor tensor4(uintptr_t at, int64_t b, int64_t h, int64_t n, int64_t d,
                    rbfc_dtype dtype = RBFC_DTYPE_BF16) {
  rbfc_tensor t{};
  t.data = fakePointer(at);
  t.rank = 4;
  int64_t sizes[4] = {b, h, n, d};
  int64_t strides[4] = {h * n * d, n * d, d, 1};
  for (int i = 0; i < 4; ++i) {
    t.sizes[i] = sizes[i];
    t.strides[i] = strides[i];
  }
  t.dtype = dtype;
  return t;
}

struct LaunchFixture : ::testing::Test {
  Descriptor d;
  // B=2, H=8, KV heads=2 (GQA 4:1), q_len=200, kv_len=77, D=64.
  rbfc_tensor q = tensor4(0x100000, 2, 8, 200, 64);
  rbfc_tensor k = tensor4(0x200000, 2, 2, 77, 64);
  rbfc_tensor v = tensor4(0x300000, 2, 2, 77, 64);
  rbfc_tensor o = tensor4(0x400000, 2, 8, 200, 64);
  rbfc_tensor lse{};
  rbfc_tensor doc{};
  LaunchArgs args;
  ParamBuffer buffer;
  LaunchConfig config;
  std::string error;

  void SetUp() override {
    ASSERT_TRUE(parseDescriptor(kAbiExample, d, error)) << error;
    lse.data = fakePointer(0x500000);
    lse.rank = 3;
    lse.sizes[0] = 2, lse.sizes[1] = 8, lse.sizes[2] = 200;
    lse.strides[0] = 8 * 256, lse.strides[1] = 256, lse.strides[2] = 1;
    lse.dtype = RBFC_DTYPE_F32;
    doc.data = fakePointer(0x600004);
    doc.rank = 2;
    doc.sizes[0] = 2, doc.sizes[1] = 200;
    doc.strides[0] = 200, doc.strides[1] = 1;
    doc.dtype = RBFC_DTYPE_I32;
    args.q = &q, args.k = &k, args.v = &v, args.o = &o, args.lse = &lse;
    args.captures = &doc;
    args.numCaptures = 1;
  }

  bool prepare() { return prepareLaunchOf(d); }
  bool prepareLaunchOf(const Descriptor &kernel) {
    return prepareLaunch(kernel, args, buffer, config, error);
  }

  std::string failure() {
    EXPECT_FALSE(prepare());
    return error;
  }
};

TEST_F(LaunchFixture, PacksInAbiOrder) {
  // The keys' whole length is left 0: the runtime passes offset + kv_len.
  args.block = {4096, 12288, 8192, 0};
  ASSERT_TRUE(prepare()) << error;
  // 5 pointers, 5 sizes and the sequence block's 4, 4x3 strides, 2 lse
  // strides, 1 param, capture: pointer + 2 sizes + 2 strides.
  ASSERT_EQ(buffer.count(), 5u + 9 + 12 + 2 + 1 + 5);
  size_t i = 0;
  for (uintptr_t at : {0x100000, 0x200000, 0x300000, 0x400000, 0x500000})
    EXPECT_EQ(buffer.get<uint64_t>(i++), at);
  for (int64_t size : {2, 8, 2, 200, 77, 4096, 12288, 8192, 12288 + 77})
    EXPECT_EQ(buffer.get<int64_t>(i++), size);
  for (const rbfc_tensor *t : {&q, &k, &v, &o})
    for (int s = 0; s < 3; ++s)
      EXPECT_EQ(buffer.get<int64_t>(i++), t->strides[s]);
  EXPECT_EQ(buffer.get<int64_t>(i++), 8 * 256);
  EXPECT_EQ(buffer.get<int64_t>(i++), 256);
  EXPECT_EQ(buffer.size(i), 4u);
  EXPECT_EQ(buffer.get<float>(i++), 0.125f);
  // The capture pointer follows a 4-byte float: aligned up to 8.
  EXPECT_EQ(buffer.offset(i) % 8, 0u);
  EXPECT_EQ(buffer.offset(i), buffer.offset(i - 1) + 8);
  EXPECT_EQ(buffer.get<uint64_t>(i++), 0x600004u);
  EXPECT_EQ(buffer.get<int64_t>(i++), 2);
  EXPECT_EQ(buffer.get<int64_t>(i++), 200);
  EXPECT_EQ(buffer.get<int64_t>(i++), 200);
  EXPECT_EQ(buffer.get<int64_t>(i++), 1);
  EXPECT_EQ(buffer.bytes() % 8, 0u);
  std::vector<void *> pointers = buffer.pointers();
  ASSERT_EQ(pointers.size(), buffer.count());
  EXPECT_EQ(*static_cast<uint64_t *>(pointers[0]), 0x100000u);

  EXPECT_EQ(config.grid[0], 2u); // ceil(200 / 128)
  EXPECT_EQ(config.grid[1], 8u);
  EXPECT_EQ(config.grid[2], 2u);
  EXPECT_EQ(config.block[0], 256u);
  EXPECT_EQ(config.block[1], 1u);
  EXPECT_EQ(config.sharedMemoryBytes, 49152u);
}

TEST_F(LaunchFixture, TensorMapsOfKAndVAfterTheCaptures) {
  // A TMA kernel: k and v as 4-D tensor maps, innermost first, in boxes of
  // 128 rows x 64 elements; the 128-byte slots wait for the driver.
  d.tensorMapRows = 128;
  k.strides[0] = 3 * 77 * 64, k.strides[1] = 77 * 64, k.strides[2] = 64;
  v = tensor4(0x300000, 2, 2, 77, 64);
  v.strides[0] = 2 * 77 * 192, v.strides[1] = 64, v.strides[2] = 192;
  ASSERT_TRUE(prepare()) << error;
  ASSERT_EQ(buffer.count(), 5u + 9 + 12 + 2 + 1 + 5 + 2);
  ASSERT_EQ(config.tensorMaps.size(), 2u);
  for (size_t m = 0; m < 2; ++m) {
    const TensorMapRequest &map = config.tensorMaps[m];
    const rbfc_tensor &t = m ? v : k;
    EXPECT_STREQ(map.tensor, m ? "v" : "k");
    EXPECT_EQ(map.arg, buffer.count() - 2 + m);
    EXPECT_EQ(buffer.size(map.arg), kTensorMapBytes);
    EXPECT_EQ(buffer.offset(map.arg) % 64, 0u);
    EXPECT_EQ(map.data, t.data);
    EXPECT_EQ(map.dtype, RBFC_DTYPE_BF16);
    EXPECT_EQ(map.sizes[0], 64u);
    EXPECT_EQ(map.sizes[1], 77u);
    EXPECT_EQ(map.sizes[2], 2u);
    EXPECT_EQ(map.sizes[3], 2u);
    for (int i = 0; i < 3; ++i)
      EXPECT_EQ(map.strideBytes[i], uint64_t(t.strides[2 - i]) * 2);
    EXPECT_EQ(map.box[0], 64u);
    EXPECT_EQ(map.box[1], 128u);
    EXPECT_EQ(map.box[2], 1u);
    EXPECT_EQ(map.box[3], 1u);
  }
  // Strides a tensor map cannot take are refused before any launch.
  k.strides[0] = int64_t(1) << 40;
  EXPECT_NE(failure().find("k: strides (1099511627776, 4928, 64, 1) exceed "
                           "what a tensor map takes (2^40 bytes)"),
            std::string::npos)
      << error;
}

TEST(RuntimeTensorMaps, CacheHitsOnlyTheSameMap) {
  TensorMapRequest k;
  k.tensor = "k";
  k.arg = 30;
  k.data = fakePointer(0x200000);
  uint64_t sizes[4] = {128, 77, 2, 2}, strides[3] = {256, 256 * 77, 512 * 77};
  std::copy(sizes, sizes + 4, k.sizes);
  std::copy(strides, strides + 3, k.strideBytes);
  uint32_t box[4] = {64, 160, 1, 1};
  std::copy(box, box + 4, k.box);
  TensorMapCache cache;
  EXPECT_EQ(cache.find(k), nullptr);
  TensorMapBytes map{};
  map.bytes[0] = 42;
  cache.store(k, map);
  // The slot and the name do not matter; every field the driver encodes
  // does.
  TensorMapRequest v = k;
  v.tensor = "v";
  v.arg = 31;
  ASSERT_NE(cache.find(v), nullptr);
  EXPECT_EQ(cache.find(v)->bytes[0], 42);
  auto differs = [&](auto edit) {
    TensorMapRequest other = k;
    edit(other);
    return cache.find(other) == nullptr;
  };
  EXPECT_TRUE(
      differs([](TensorMapRequest &r) { r.data = fakePointer(0x300000); }));
  EXPECT_TRUE(differs([](TensorMapRequest &r) { r.dtype = RBFC_DTYPE_F16; }));
  EXPECT_TRUE(differs([](TensorMapRequest &r) { r.sizes[1] = 78; }));
  EXPECT_TRUE(differs([](TensorMapRequest &r) { r.strideBytes[2] += 16; }));
  EXPECT_TRUE(differs([](TensorMapRequest &r) { r.box[1] = 128; }));
  // Four entries: the first is gone after four more.
  for (uintptr_t at : {0x1000, 0x2000, 0x3000, 0x4000}) {
    TensorMapRequest other = k;
    other.data = fakePointer(at);
    cache.store(other, map);
  }
  EXPECT_EQ(cache.find(k), nullptr);
}

TEST_F(LaunchFixture, WithoutLseAndWithExplicitParams) {
  d.hasLse = false;
  args.lse = nullptr;
  d.params.push_back({"window", RBFC_DTYPE_I32, false, 0});
  double params[] = {0.5, 256};
  args.params = params;
  args.numParams = 2;
  ASSERT_TRUE(prepare()) << error;
  ASSERT_EQ(buffer.count(), 4u + 9 + 12 + 2 + 5);
  EXPECT_EQ(buffer.get<float>(25), 0.5f);
  EXPECT_EQ(buffer.size(26), 4u);
  EXPECT_EQ(buffer.get<int32_t>(26), 256);
  EXPECT_EQ(buffer.get<uint64_t>(27), 0x600004u);
}

TEST_F(LaunchFixture, OneRowOfOneQuery) {
  q = tensor4(0x100000, 1, 8, 1, 64);
  o = tensor4(0x400000, 1, 8, 1, 64);
  k = tensor4(0x200000, 1, 1, 1, 64);
  v = tensor4(0x300000, 1, 1, 1, 64);
  lse.sizes[0] = 1, lse.sizes[2] = 1;
  ASSERT_TRUE(prepare()) << error;
  EXPECT_EQ(config.grid[0], 1u);
}

TEST_F(LaunchFixture, TensorErrors) {
  args.k = nullptr;
  EXPECT_NE(failure().find("k: missing"), std::string::npos);
  args.k = &k;
  q.rank = 3;
  EXPECT_NE(failure().find("q: expected rank 4 [batch, heads, q_len, "
                           "head_dim], got rank 3"),
            std::string::npos);
  q.rank = 4;
  v.dtype = RBFC_DTYPE_F16;
  EXPECT_NE(failure().find("v: expected element type bf16, got f16"),
            std::string::npos);
  v.dtype = RBFC_DTYPE_BF16;
  o.data = nullptr;
  EXPECT_NE(failure().find("o: data pointer is null"), std::string::npos);
  o.data = fakePointer(0x400008);
  EXPECT_NE(failure().find("o: data pointer is not 16-byte aligned"),
            std::string::npos);
  o.data = fakePointer(0x400000);
  q.strides[3] = 2;
  EXPECT_NE(failure().find("q: the head_dim stride must be 1"),
            std::string::npos);
  q.strides[3] = 1;
  k.strides[2] = 68;
  EXPECT_NE(failure().find("k: strides (9856, 4928, 68, 1) must be multiples "
                           "of 8 elements"),
            std::string::npos);
  k.strides[2] = 64;
  // The wgmma kernels store o's rows in 16-byte chunks; the mma.sync
  // kernel's four-byte stores would be misaligned at an odd stride.
  o.strides[2] = 65;
  EXPECT_NE(failure().find("o: strides (102400, 12800, 65, 1) must be "
                           "multiples of 8 elements"),
            std::string::npos)
      << error;
  o.strides[2] = 64;
  k.sizes[2] = 0;
  EXPECT_NE(failure().find("k: every size must be >= 1"), std::string::npos);
  k.sizes[2] = 77;
  q.strides[0] = -8;
  EXPECT_NE(failure().find("q: strides must be >= 0"), std::string::npos);
}

TEST_F(LaunchFixture, ShapeErrors) {
  q.sizes[3] = o.sizes[3] = 128;
  EXPECT_NE(failure().find("q: head_dim is 128 but the kernel was compiled "
                           "for --head-dim=64"),
            std::string::npos);
  q.sizes[3] = o.sizes[3] = 64;
  k.sizes[0] = v.sizes[0] = 3;
  EXPECT_NE(failure().find("k: shape [3, 2, 77, 64] does not fit q"),
            std::string::npos);
  k.sizes[0] = v.sizes[0] = 2;
  v.sizes[2] = 78;
  EXPECT_NE(failure().find("v: shape [2, 2, 78, 64] differs from k"),
            std::string::npos);
  v.sizes[2] = 77;
  o.sizes[2] = 199;
  EXPECT_NE(failure().find("o: shape [2, 8, 199, 64] differs from q"),
            std::string::npos);
  o.sizes[2] = 200;
  k.sizes[1] = v.sizes[1] = 3;
  EXPECT_NE(failure().find("heads (8) must be a multiple of kv_heads (3)"),
            std::string::npos);
  k.sizes[1] = v.sizes[1] = 2;
  args.block = {-1, 0, 0, 0};
  EXPECT_NE(failure().find("q_offset is -1; it must be >= 0"),
            std::string::npos);
  // kv_offset + kv_len (77) must stay an i32.
  args.block = {0, int64_t(INT32_MAX) - 77, 0, 0};
  EXPECT_TRUE(prepare()) << error;
  args.block = {0, int64_t(INT32_MAX) - 76, 0, 0};
  EXPECT_NE(failure().find("kv_offset is 2147483571; it must be >= 0"),
            std::string::npos);
  args.block = {100, 0, 299, 0};
  EXPECT_NE(failure().find("q_seq_len is 299; the whole sequence holds the "
                           "call's rows, so it must be 0 or from q_offset + "
                           "q_len (300)"),
            std::string::npos);
  args.block = {100, 0, 300, 0};
  EXPECT_TRUE(prepare()) << error;
}

TEST_F(LaunchFixture, LseErrors) {
  args.lse = nullptr;
  EXPECT_NE(failure().find("compiled with --lse"), std::string::npos);
  args.lse = &lse;
  lse.dtype = RBFC_DTYPE_BF16;
  EXPECT_NE(failure().find("lse: expected element type f32"),
            std::string::npos);
  lse.dtype = RBFC_DTYPE_F32;
  lse.sizes[2] = 201;
  EXPECT_NE(failure().find("lse: shape [2, 8, 201] differs from [2, 8, 200]"),
            std::string::npos);
  lse.sizes[2] = 200;
  lse.strides[2] = 2;
  EXPECT_NE(failure().find("lse: the q_len stride must be 1"),
            std::string::npos);
  d.hasLse = false;
  EXPECT_NE(failure().find("compiled without --lse"), std::string::npos);
}

TEST_F(LaunchFixture, ParamErrors) {
  double one[] = {1.0, 2.0};
  args.params = one;
  args.numParams = 2;
  EXPECT_NE(failure().find("params: the kernel takes 1 parameter(s), got 2"),
            std::string::npos);
  args.params = nullptr;
  EXPECT_NE(failure().find("params: null with a count of 2"),
            std::string::npos);
  args.numParams = 0;
  d.params[0].hasDefault = false;
  EXPECT_NE(failure().find("param 'gamma' has no default"),
            std::string::npos);
  d.params[0].type = RBFC_DTYPE_I32;
  double half[] = {0.5};
  args.params = half;
  args.numParams = 1;
  EXPECT_NE(failure().find("param 'gamma' is an int parameter; got 0.5"),
            std::string::npos);
  double huge[] = {4e9};
  args.params = huge;
  EXPECT_NE(failure().find("is an int parameter"), std::string::npos);
}

TEST_F(LaunchFixture, CaptureErrors) {
  args.numCaptures = 0;
  EXPECT_NE(failure().find("captures: the kernel takes 1 captured tensor(s), "
                           "got 0"),
            std::string::npos);
  args.numCaptures = 1;
  args.captures = nullptr;
  EXPECT_NE(failure().find("got 0"), std::string::npos);
  args.captures = &doc;
  doc.rank = 1;
  EXPECT_NE(failure().find("capture 'doc': expected rank 2"),
            std::string::npos);
  doc.rank = 2;
  doc.dtype = RBFC_DTYPE_I64;
  EXPECT_NE(failure().find("capture 'doc': expected element type i32, got "
                           "i64"),
            std::string::npos);
  doc.dtype = RBFC_DTYPE_I32;
  doc.data = fakePointer(0x600002);
  EXPECT_NE(failure().find("capture 'doc': data pointer is not 4-byte "
                           "aligned"),
            std::string::npos);
}

TEST_F(LaunchFixture, GridLimits) {
  q.sizes[1] = o.sizes[1] = 70000;
  k.sizes[1] = v.sizes[1] = 1;
  lse.sizes[1] = 70000;
  EXPECT_NE(failure().find("problem too large for one launch"),
            std::string::npos);
}

TEST_F(LaunchFixture, SmallProblemsRunTheSmallKernel) {
  std::string json = withSmall(kSmall);
  ASSERT_TRUE(parseDescriptor(json, d, error)) << error;
  ASSERT_TRUE(prepare()) << error;
  // ceil(200 / 128) x 8 heads x 2 = 32 blocks of the small kernel (and of
  // the default): one wave on 32 multiprocessors at one a multiprocessor,
  // not on 31.
  EXPECT_EQ(&forwardKernelFor(d, &q, 31), &d);
  EXPECT_EQ(&forwardKernelFor(d, &q, 32), d.small.get());
  EXPECT_EQ(&forwardKernelFor(d, &q, 132), d.small.get());
  // At two a multiprocessor 16 hold them.
  d.smallBlocksPerSM = 2;
  EXPECT_EQ(&forwardKernelFor(d, &q, 15), &d);
  EXPECT_EQ(&forwardKernelFor(d, &q, 16), d.small.get());
  // The small kernel's own tiles count: 64-row tiles make 64 blocks.
  Descriptor narrow = *d.small;
  narrow.tileM = 64;
  d.small = std::make_shared<const Descriptor>(narrow);
  EXPECT_EQ(&forwardKernelFor(d, &q, 31), &d);
  EXPECT_EQ(&forwardKernelFor(d, &q, 32), d.small.get());
  // Without a count of multiprocessors, or a small kernel, the default.
  EXPECT_EQ(&forwardKernelFor(d, &q, 0), &d);
  Descriptor alone = *d.small;
  EXPECT_EQ(&forwardKernelFor(alone, &q, 132), &alone);
  // Nor for a q that prepareLaunch will refuse.
  EXPECT_EQ(&forwardKernelFor(d, nullptr, 132), &d);
  rbfc_tensor empty = q;
  empty.sizes[2] = 0;
  EXPECT_EQ(&forwardKernelFor(d, &empty, 132), &d);

  // A chain: the 64-row kernel where its own grid fits in one wave
  // (ceil(200 / 64) x 8 x 2 = 64 blocks), else the 128-row one where that
  // fits, else the default.
  ASSERT_TRUE(parseDescriptor(withSmall(smallWithSmall(kSmallM64)), d, error))
      << error;
  EXPECT_EQ(&forwardKernelFor(d, &q, 31), &d);
  EXPECT_EQ(&forwardKernelFor(d, &q, 32), d.small.get());
  EXPECT_EQ(&forwardKernelFor(d, &q, 63), d.small.get());
  EXPECT_EQ(&forwardKernelFor(d, &q, 64), d.small->small.get());
  EXPECT_EQ(&forwardKernelFor(d, &q, 132), d.small->small.get());

  ASSERT_TRUE(parseDescriptor(json, d, error)) << error;
  // The small kernel's launch: its tiles, block and shared memory, its
  // prologue, and the tensor maps of k and v in its boxes.
  ASSERT_TRUE(prepareLaunchOf(*d.small)) << error;
  EXPECT_EQ(config.grid[0], 2u);
  EXPECT_EQ(config.block[0], 12u * 32);
  EXPECT_EQ(config.sharedMemoryBytes, 115712u);
  EXPECT_EQ(config.prologueBlock[0], 384u);
  EXPECT_EQ(config.prologueGrid[1], 2u); // kv heads
  EXPECT_EQ(config.tensorMaps.size(), 2u);
  // kv_len 77 padded to 128, a row per kv head: 2 x 2 x 128 x 4 bytes.
  EXPECT_EQ(config.workspaceBytes, size_t(2 * 2 * 128 * 4));
}

//===-- Key terms: workspace and prologue ---------------------------------===//

struct KeyTermsFixture : LaunchFixture {
  void SetUp() override {
    LaunchFixture::SetUp();
    d.keyTerms = KeyTermsDesc{"rbf_fwd_key_terms", 128, 32, 1, 64};
  }

  void *workspace = fakePointer(0x700000);
  // kv_len 77 padded to 128: 1 plane x 2 batch x 8 query heads x 128 x 4.
  size_t needed = 1 * 2 * 8 * 128 * 4;

  bool prepareAndBind(void *at, size_t bytes) {
    return prepare() && bindWorkspace(config, at, bytes, buffer, error);
  }

  std::string bindFailure(void *at, size_t bytes) {
    EXPECT_TRUE(prepare()) << error;
    EXPECT_FALSE(bindWorkspace(config, at, bytes, buffer, error));
    return error;
  }
};

TEST_F(KeyTermsFixture, WorkspaceFollowsOutputsAndLse) {
  ASSERT_TRUE(prepareAndBind(workspace, needed)) << error;
  // The example's 34 arguments and the workspace pointer.
  ASSERT_EQ(buffer.count(), 35u);
  EXPECT_EQ(config.workspaceArg, 5u);
  EXPECT_EQ(buffer.get<uint64_t>(3), 0x400000u); // o
  EXPECT_EQ(buffer.get<uint64_t>(4), 0x500000u); // lse
  EXPECT_EQ(buffer.size(5), 8u);
  EXPECT_EQ(buffer.get<uint64_t>(5), 0x700000u);
  size_t i = 6;
  for (int64_t size : {2, 8, 2, 200, 77, 0, 0, 200, 77})
    EXPECT_EQ(buffer.get<int64_t>(i++), size);
  EXPECT_EQ(buffer.get<int64_t>(i), q.strides[0]);
  EXPECT_EQ(buffer.get<float>(29), 0.125f);       // gamma
  EXPECT_EQ(buffer.get<uint64_t>(30), 0x600004u); // capture 'doc'
}

TEST_F(KeyTermsFixture, WorkspaceFollowsOutputsWithoutLse) {
  d.hasLse = false;
  args.lse = nullptr;
  ASSERT_TRUE(prepareAndBind(workspace, needed)) << error;
  ASSERT_EQ(buffer.count(), 32u);
  EXPECT_EQ(config.workspaceArg, 4u);
  EXPECT_EQ(buffer.get<uint64_t>(3), 0x400000u);
  EXPECT_EQ(buffer.get<uint64_t>(4), 0x700000u);
  EXPECT_EQ(buffer.get<int64_t>(5), 2); // batch
}

TEST_F(KeyTermsFixture, PrologueGridAndBlock) {
  ASSERT_TRUE(prepare()) << error;
  EXPECT_EQ(config.prologueGrid[0], 3u); // ceil(77 / 32)
  EXPECT_EQ(config.prologueGrid[1], 8u); // query heads, not kv_heads
  EXPECT_EQ(config.prologueGrid[2], 2u);
  EXPECT_EQ(config.prologueBlock[0], 128u);
  EXPECT_EQ(config.prologueBlock[1], 1u);
  EXPECT_EQ(config.prologueBlock[2], 1u);
  // The main kernel's launch does not change.
  EXPECT_EQ(config.grid[0], 2u);
  EXPECT_EQ(config.block[0], 256u);
  EXPECT_EQ(config.sharedMemoryBytes, 49152u);

  k = tensor4(0x200000, 2, 2, 64, 64);
  v = tensor4(0x300000, 2, 2, 64, 64);
  ASSERT_TRUE(prepare()) << error;
  EXPECT_EQ(config.prologueGrid[0], 2u); // 64 / 32 exactly
  k.sizes[2] = v.sizes[2] = 1;
  ASSERT_TRUE(prepare()) << error;
  EXPECT_EQ(config.prologueGrid[0], 1u);

  // Terms that do not read h: one row per kv head.
  d.keyTerms->perKvHead = true;
  ASSERT_TRUE(prepare()) << error;
  EXPECT_EQ(config.prologueGrid[1], 2u);
  EXPECT_EQ(config.grid[1], 8u);
}

TEST_F(KeyTermsFixture, SmallKernelWithoutKeyTermsTakesNoWorkspace) {
  // A small kernel built with key_terms = "producer" computes its key
  // terms itself: beside a default with a prologue, its launch has none,
  // and its arguments no workspace pointer.
  d.small = std::make_shared<const Descriptor>([&] {
    Descriptor small = d;
    small.entry = "rbf_fwd_small";
    small.keyTerms.reset();
    return small;
  }());
  size_t bytes = 0;
  ASSERT_TRUE(workspaceBytes(d, &q, &k, bytes, error)) << error;
  EXPECT_EQ(bytes, needed);
  ASSERT_TRUE(prepareLaunchOf(*d.small)) << error;
  EXPECT_EQ(config.workspaceBytes, 0u);
  // The example's 34 arguments: lse, then the sizes.
  ASSERT_EQ(buffer.count(), 34u);
  EXPECT_EQ(buffer.get<uint64_t>(4), 0x500000u); // lse
  EXPECT_EQ(buffer.get<int64_t>(5), 2);          // batch
  ASSERT_TRUE(prepare()) << error;
  EXPECT_EQ(config.workspaceBytes, needed);
  EXPECT_EQ(buffer.count(), 35u);
}

TEST_F(KeyTermsFixture, WorkspaceBytes) {
  ASSERT_TRUE(prepare()) << error;
  EXPECT_EQ(config.workspaceBytes, needed);
  size_t bytes = 0;
  ASSERT_TRUE(workspaceBytes(d, &q, &k, bytes, error)) << error;
  EXPECT_EQ(bytes, 8192u);

  // Two planes, kv_len 77 padded to 80.
  d.keyTerms->terms = 2;
  d.keyTerms->rowMultiple = 16;
  ASSERT_TRUE(workspaceBytes(d, &q, &k, bytes, error)) << error;
  EXPECT_EQ(bytes, size_t(2 * 2 * 8 * 80 * 4));
  ASSERT_TRUE(prepare()) << error;
  EXPECT_EQ(config.workspaceBytes, size_t(2 * 2 * 8 * 80 * 4));
  // Rows per kv head (k has 2 of the 8 query heads' kv heads).
  d.keyTerms->perKvHead = true;
  ASSERT_TRUE(workspaceBytes(d, &q, &k, bytes, error)) << error;
  EXPECT_EQ(bytes, size_t(2 * 2 * 2 * 80 * 4));
  d.keyTerms->perKvHead = false;

  // No padding when kv_len is a multiple, or with a row multiple of 1.
  d.keyTerms->rowMultiple = 7;
  ASSERT_TRUE(workspaceBytes(d, &q, &k, bytes, error)) << error;
  EXPECT_EQ(bytes, size_t(2 * 2 * 8 * 77 * 4));
  d.keyTerms->rowMultiple = 1;
  ASSERT_TRUE(workspaceBytes(d, &q, &k, bytes, error)) << error;
  EXPECT_EQ(bytes, size_t(2 * 2 * 8 * 77 * 4));

  // None without key terms.
  d.keyTerms.reset();
  bytes = 1;
  ASSERT_TRUE(workspaceBytes(d, &q, &k, bytes, error)) << error;
  EXPECT_EQ(bytes, 0u);
  ASSERT_TRUE(prepare()) << error;
  EXPECT_EQ(config.workspaceBytes, 0u);
}

TEST_F(KeyTermsFixture, WorkspaceBytesServeEitherForwardKernel) {
  // The default's 8192 bytes (a row per query head, kv_len padded to 128)
  // against a small kernel's rows per kv head padded to 128: 2048.
  ASSERT_TRUE(parseDescriptor(withSmall(kSmall), d, error)) << error;
  d.keyTerms = KeyTermsDesc{"rbf_fwd_key_terms", 128, 32, 1, 64};
  size_t bytes = 0;
  ASSERT_TRUE(workspaceBytes(d, &q, &k, bytes, error)) << error;
  EXPECT_EQ(bytes, needed);
  // The other way round the larger is the small kernel's.
  d.keyTerms.reset();
  ASSERT_TRUE(workspaceBytes(d, &q, &k, bytes, error)) << error;
  EXPECT_EQ(bytes, size_t(2 * 2 * 128 * 4));
  // Each launch binds what its own kernel needs.
  ASSERT_TRUE(prepare()) << error;
  EXPECT_EQ(config.workspaceBytes, 0u);
  // Down a chain too: the last small kernel's workspace where it is the
  // largest (a row per query head: 8 x 2 x 128 x 4 bytes).
  ASSERT_TRUE(parseDescriptor(
      withSmall(smallWithSmall(replaced(
          kSmallM64, "\"blocks_per_sm\": 1 }",
          R"("blocks_per_sm": 1, "key_terms": { "entry": "m64_key_terms",
            "block": 128, "keys_per_block": 128, "terms": 1,
            "row_multiple": 128, "heads": "q" } })"))),
      d, error))
      << error;
  ASSERT_TRUE(workspaceBytes(d, &q, &k, bytes, error)) << error;
  EXPECT_EQ(bytes, needed);
}

TEST_F(KeyTermsFixture, WorkspaceBytesChecksWhatItReads) {
  size_t bytes = 0;
  EXPECT_FALSE(workspaceBytes(d, nullptr, &k, bytes, error));
  EXPECT_NE(error.find("q: missing"), std::string::npos) << error;
  EXPECT_FALSE(workspaceBytes(d, &q, nullptr, bytes, error));
  EXPECT_NE(error.find("k: missing"), std::string::npos) << error;
  k.rank = 3;
  EXPECT_FALSE(workspaceBytes(d, &q, &k, bytes, error));
  EXPECT_NE(error.find("k: expected rank 4, got rank 3"), std::string::npos)
      << error;
  k.rank = 4;
  q.sizes[1] = -1;
  EXPECT_FALSE(workspaceBytes(d, &q, &k, bytes, error));
  EXPECT_NE(error.find("batch, heads, kv_heads and kv_len >= 1, got q "
                       "[2, -1, 200, 64]"),
            std::string::npos)
      << error;
  q.sizes[1] = 8;
  k.sizes[1] = 0;
  EXPECT_FALSE(workspaceBytes(d, &q, &k, bytes, error));
  EXPECT_NE(error.find("kv_heads and kv_len >= 1"), std::string::npos)
      << error;
  k.sizes[1] = 2;
  k.sizes[2] = int64_t(1) << 60;
  d.keyTerms->terms = 2;
  EXPECT_FALSE(workspaceBytes(d, &q, &k, bytes, error));
  EXPECT_NE(error.find("do not fit in size_t"), std::string::npos) << error;
}

TEST_F(KeyTermsFixture, WorkspaceErrors) {
  EXPECT_NE(bindFailure(nullptr, needed)
                .find("workspace: the kernel's key-terms prologue needs 8192 "
                      "bytes; the workspace pointer is null"),
            std::string::npos);
  EXPECT_NE(bindFailure(workspace, needed - 1)
                .find("workspace: the kernel's key-terms prologue needs 8192 "
                      "bytes, got 8191"),
            std::string::npos);
  EXPECT_NE(bindFailure(fakePointer(0x700008), needed)
                .find("workspace: pointer is not 16-byte aligned"),
            std::string::npos);
  // A larger workspace is fine.
  ASSERT_TRUE(prepareAndBind(workspace, needed + 100)) << error;
  EXPECT_EQ(buffer.get<uint64_t>(5), 0x700000u);
}

TEST_F(KeyTermsFixture, NoKeyTermsIgnoresTheWorkspace) {
  d.keyTerms.reset();
  ASSERT_TRUE(prepareAndBind(nullptr, 0)) << error;
  ASSERT_TRUE(bindWorkspace(config, fakePointer(0x700008), 1, buffer, error))
      << error;
  // The example's arguments, none of them the workspace.
  ASSERT_EQ(buffer.count(), 34u);
  EXPECT_EQ(buffer.get<int64_t>(5), 2); // batch right after lse
}

TEST_F(KeyTermsFixture, PrologueGridLimits) {
  d.keyTerms->keysPerBlock = 1;
  k.sizes[2] = v.sizes[2] = int64_t(1) << 31;
  EXPECT_NE(failure().find("problem too large for one launch: key-terms "
                           "prologue grid (2147483648, 8, 2)"),
            std::string::npos);
  k.sizes[2] = v.sizes[2] = INT32_MAX;
  EXPECT_TRUE(prepare()) << error;
  EXPECT_EQ(config.prologueGrid[0], uint32_t(INT32_MAX));
}

//===-- Driver and C API ---------------------------------------------------===//

TEST(RuntimeDriver, MissingDriverIsAClearError) {
  Driver driver;
  std::string error;
  EXPECT_FALSE(openDriver("librbfc-no-such-driver.so.1", driver, error));
  EXPECT_NE(error.find("cannot load the CUDA driver "
                       "(librbfc-no-such-driver.so.1)"),
            std::string::npos);
  EXPECT_NE(error.find("an NVIDIA GPU driver must be installed"),
            std::string::npos);
}

TEST(RuntimeCApi, ReportsFileAndDescriptorErrorsBeforeTheDriver) {
  rbfc_module *module = nullptr;
  EXPECT_EQ(rbfc_module_load("/nonexistent/k.ptx", "/nonexistent/k.json",
                             &module),
            RBFC_ERROR_IO);
  EXPECT_NE(std::string(rbfc_last_error())
                .find("cannot open '/nonexistent/k.ptx'"),
            std::string::npos);
  const char image[] = ".version 8.0";
  std::string bad = "{\"format\": \"rbfc-kernel/5\"}";
  EXPECT_EQ(rbfc_module_load_data(image, sizeof image, bad.data(), bad.size(),
                                  &module),
            RBFC_ERROR_DESCRIPTOR);
  EXPECT_NE(std::string(rbfc_last_error()).find("\"entry\" is missing"),
            std::string::npos);
  std::string f32 = edited("\"dtype\": \"bf16\"", "\"dtype\": \"f32\"");
  EXPECT_EQ(rbfc_module_load_data(image, sizeof image, f32.data(), f32.size(),
                                  &module),
            RBFC_ERROR_DESCRIPTOR);
  EXPECT_NE(std::string(rbfc_last_error()).find("host target"),
            std::string::npos);
  EXPECT_EQ(module, nullptr);
  EXPECT_EQ(rbfc_launch(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                        nullptr, 0, nullptr, 0, nullptr),
            RBFC_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(rbfc_launch_with_workspace(nullptr, nullptr, nullptr, nullptr,
                                       nullptr, nullptr, nullptr, 0, nullptr, 0,
                                       nullptr, 0, nullptr),
            RBFC_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rbfc_last_error()).find("module is null"),
            std::string::npos);
  size_t bytes = 0;
  EXPECT_EQ(rbfc_workspace_bytes(nullptr, nullptr, nullptr, &bytes),
            RBFC_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rbfc_last_error()).find("module or bytes is null"),
            std::string::npos);
}

TEST(RuntimeCApi, NoDriverOnThisMachine) {
  if (void *handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL)) {
    dlclose(handle);
    GTEST_SKIP() << "a CUDA driver is installed here";
  }
  rbfc_module *module = nullptr;
  std::string json = kAbiExample;
  const char image[] = ".version 8.0";
  EXPECT_EQ(rbfc_module_load_data(image, sizeof image, json.data(),
                                  json.size(), &module),
            RBFC_ERROR_NO_DRIVER);
  EXPECT_NE(std::string(rbfc_last_error())
                .find("rbfc runtime: cannot load the CUDA driver "
                      "(libcuda.so.1)"),
            std::string::npos);
  EXPECT_EQ(module, nullptr);
}

//===-- Backward -----------------------------------------------------------===//

/// The backward object of docs/abi.md's example, for the example's one
/// param (gamma) and one capture (doc).
const char *kBackward = R"({
  "rows": { "entry": "rbf_fwd_bwd_rows", "block": 128, "rows_per_block": 16, "shared_memory_bytes": 0 },
  "dkdv": { "entry": "rbf_fwd_bwd_dkdv", "block": 256, "rows_per_block": 128, "shared_memory_bytes": 66592 },
  "dq": { "entry": "rbf_fwd_bwd_dq", "block": 128, "rows_per_block": 64, "shared_memory_bytes": 49680 },
  "tile_sums": { "entry": "rbf_fwd_bwd_tile_sums", "block": 128, "rows_per_block": 128, "shared_memory_bytes": 0 },
  "reduce": { "entry": "rbf_fwd_bwd_reduce", "block": 128, "rows_per_block": 128, "shared_memory_bytes": 0 },
  "row_multiple": 128, "key_terms": 1, "key_terms_heads": "kv", "slots": 1,
  "diagonal_query_tile": 0, "param_grads": [ true ], "capture_grads": [ false ] })";

std::string withBackward(const std::string &value) {
  return withKey("backward", value);
}

TEST(RuntimeDescriptor, ReadsTheBackward) {
  Descriptor d;
  std::string error;
  ASSERT_TRUE(parseDescriptor(withBackward(kBackward), d, error)) << error;
  ASSERT_TRUE(d.backward);
  EXPECT_EQ(d.backward->keyValue.entry, "rbf_fwd_bwd_dkdv");
  EXPECT_EQ(d.backward->keyValue.block, 256);
  EXPECT_EQ(d.backward->keyValue.rowsPerBlock, 128);
  EXPECT_EQ(d.backward->query.sharedMemoryBytes, 49680);
  EXPECT_EQ(d.backward->rowMultiple, 128);
  EXPECT_EQ(d.backward->keyTerms, 1);
  EXPECT_TRUE(d.backward->keyTermsPerKvHead);
  EXPECT_EQ(d.backward->slots, 1);
  EXPECT_EQ(d.backward->paramGrads, std::vector<bool>{true});
  EXPECT_EQ(d.backward->captureGrads, std::vector<bool>{false});
  ASSERT_TRUE(parseDescriptor(kAbiExample, d, error)) << error;
  EXPECT_FALSE(d.backward);
}

TEST(RuntimeDescriptor, NamesWhatIsWrongInTheBackward) {
  struct Case {
    const char *from, *to, *message;
  };
  const Case cases[] = {
      {"\"rbf_fwd_bwd_dq\"", "\"\"", "\"backward.dq.entry\" is empty"},
      {"\"block\": 256", "\"block\": 250",
       "\"backward.dkdv.block\" is 250; it must be a multiple of 32"},
      {"\"row_multiple\": 128, ", "", "\"backward.row_multiple\" is missing"},
      {"\"key_terms\": 1", "\"key_terms\": 3",
       "\"backward.key_terms\" must be an integer in [0, 2]"},
      {"\"key_terms_heads\": \"kv\"", "\"key_terms_heads\": \"x\"",
       "\"backward.key_terms_heads\" is \"x\""},
      {"\"param_grads\": [ true ]", "\"param_grads\": [ true, true ]",
       "\"backward.param_grads\" has 2 entries; the kernel has 1"},
      {"\"capture_grads\": [ false ]", "\"capture_grads\": [ 0 ]",
       "\"backward.capture_grads\" must hold booleans"},
      {"\"diagonal_query_tile\": 0", "\"diagonal_query_tile\": -64",
       "\"backward.diagonal_query_tile\" must be an integer in [0, 65536]"},
  };
  for (const Case &c : cases) {
    std::string error =
        descriptorError(withBackward(replaced(kBackward, c.from, c.to)));
    EXPECT_NE(error.find(c.message), std::string::npos)
        << c.from << " -> " << c.to << ": " << error;
  }
}

struct BackwardFixture : LaunchFixture {
  rbfc_tensor dO = tensor4(0x700000, 2, 8, 200, 64);
  rbfc_tensor dQ = tensor4(0x800000, 2, 8, 200, 64);
  rbfc_tensor dK = tensor4(0x900000, 2, 2, 77, 64);
  rbfc_tensor dV = tensor4(0xa00000, 2, 2, 77, 64);
  BackwardLaunchArgs backward;
  BackwardLaunchConfig backwardConfig;
  float gammaGrad;
  float *paramGrads[1] = {&gammaGrad};

  void SetUp() override {
    LaunchFixture::SetUp();
    ASSERT_TRUE(parseDescriptor(withBackward(kBackward), d, error)) << error;
    backward.q = &q, backward.k = &k, backward.v = &v, backward.o = &o;
    backward.lse = &lse;
    backward.outputGrad = &dO, backward.queryGrad = &dQ;
    backward.keyGrad = &dK, backward.valueGrad = &dV;
    backward.captures = &doc;
    backward.numCaptures = 1;
  }

  bool prepare() {
    return prepareBackward(d, backward, buffer, backwardConfig, error);
  }
  std::string failure() {
    EXPECT_FALSE(prepare());
    return error;
  }
};

TEST_F(BackwardFixture, PacksInAbiOrder) {
  backward.paramGrads = paramGrads;
  ASSERT_TRUE(prepare()) << error;
  // 8 tensors, lse, dlse, workspace, mask, 5 sizes and the sequence
  // block's 4, 8x3 + 2x2 strides, 1 param, the capture (pointer + 2 + 2),
  // 1 param gradient, the capture's gradient (pointer + 2 strides).
  ASSERT_EQ(buffer.count(), 8u + 4 + 9 + 24 + 4 + 1 + 5 + 1 + 3);
  size_t i = 0;
  for (uintptr_t at : {0x100000, 0x200000, 0x300000, 0x400000, 0x700000,
                       0x800000, 0x900000, 0xa00000, 0x500000})
    EXPECT_EQ(buffer.get<uint64_t>(i++), at);
  EXPECT_EQ(buffer.get<uint64_t>(i++), 0u); // no dlse
  EXPECT_EQ(backwardConfig.workspaceArg, i);
  EXPECT_EQ(buffer.get<uint64_t>(i++), 0u); // bound later
  EXPECT_EQ(buffer.get<uint64_t>(i++), 1u); // gamma's gradient asked
  EXPECT_TRUE(backwardConfig.reduces);
  for (int64_t size : {2, 8, 2, 200, 77, 0, 0, 200, 77})
    EXPECT_EQ(buffer.get<int64_t>(i++), size);
  // Grids: Lq = 256 rows / 16, kv_len 77 in one 128-key tile, 200 queries in
  // four 64-query tiles.
  EXPECT_EQ(backwardConfig.rows.grid[0], 16u);
  EXPECT_EQ(backwardConfig.keyValue.grid[0], 1u);
  EXPECT_EQ(backwardConfig.keyValue.grid[1], 2u);
  EXPECT_EQ(backwardConfig.query.grid[0], 4u);
  EXPECT_EQ(backwardConfig.query.grid[1], 8u);
  EXPECT_EQ(backwardConfig.keyValue.sharedMemoryBytes, 66592u);
  // delta, lse2: 2 x 16 x 256; key terms: 1 x 2 x 2 x 128; partials:
  // 2 x 16 x 4 x 1; sums 2 x 16 x 1.
  EXPECT_EQ(backwardConfig.workspaceBytes,
            4u * (2 * 16 * 256 + 2 * 2 * 128 + 2 * 16 * 4 + 2 * 16));
  size_t end = buffer.count();
  EXPECT_EQ(buffer.get<uint64_t>(end - 4),
            uint64_t(reinterpret_cast<uintptr_t>(&gammaGrad)));
  EXPECT_EQ(buffer.get<uint64_t>(end - 3), 0u); // doc has no gradient
}

TEST_F(BackwardFixture, SizesTheDiagonalSumsOfARelativePositionTable) {
  std::string value = kBackward;
  std::string from = "\"diagonal_query_tile\": 0";
  value.replace(value.find(from), from.size(), "\"diagonal_query_tile\": 64");
  ASSERT_TRUE(parseDescriptor(withBackward(value), d, error)) << error;
  EXPECT_EQ(d.backward->diagonalQueryTile, 64);
  ASSERT_TRUE(prepare()) << error;
  // As above, plus one row per (batch, head, key tile) of round_up(200,
  // 64) + 128 diagonals: 16 x 1 x 384.
  EXPECT_EQ(
      backwardConfig.workspaceBytes,
      4u * (2 * 16 * 256 + 2 * 2 * 128 + 2 * 16 * 4 + 2 * 16 + 16 * 1 * 384));
}

TEST_F(BackwardFixture, FollowsTheKeyTileOfItsDkDvKernel) {
  // sm_86's dK/dV kernel at head_dim 128: four warps, 64 keys a block.
  std::string value = kBackward;
  for (auto [from, to] :
       {std::pair<std::string, std::string>{
            "\"block\": 256, \"rows_per_block\": 128",
            "\"block\": 128, \"rows_per_block\": 64"},
        {"\"diagonal_query_tile\": 0", "\"diagonal_query_tile\": 64"}})
    value.replace(value.find(from), from.size(), to);
  ASSERT_TRUE(parseDescriptor(withBackward(value), d, error)) << error;
  ASSERT_TRUE(prepare()) << error;
  // kv_len 77 in two 64-key tiles; the partials keep the four query tiles'
  // rows; a diagonal row per (batch, head, key tile) of round_up(200, 64)
  // + 64: 16 x 2 x 320.
  EXPECT_EQ(backwardConfig.keyValue.grid[0], 2u);
  EXPECT_EQ(backwardConfig.keyValue.grid[1], 2u);
  EXPECT_EQ(backwardConfig.keyValue.block[0], 128u);
  EXPECT_EQ(
      backwardConfig.workspaceBytes,
      4u * (2 * 16 * 256 + 2 * 2 * 128 + 2 * 16 * 4 + 2 * 16 + 16 * 2 * 320));
}

TEST_F(BackwardFixture, NoGradientAskedRunsNoReduction) {
  ASSERT_TRUE(prepare()) << error;
  EXPECT_FALSE(backwardConfig.reduces);
}

TEST_F(BackwardFixture, Errors) {
  rbfc_tensor bad = dK;
  bad.sizes[2] = 78;
  backward.keyGrad = &bad;
  EXPECT_NE(failure().find("grad_k: shape [2, 2, 78, 64] differs from"),
            std::string::npos)
      << error;
  backward.keyGrad = &dK;
  bad = dO;
  bad.strides[2] = 60;
  backward.outputGrad = &bad;
  EXPECT_NE(failure().find("grad_o: strides"), std::string::npos) << error;
  backward.outputGrad = &dO;
  rbfc_tensor docGrad = doc;
  docGrad.dtype = RBFC_DTYPE_F32;
  backward.captureGrads = &docGrad;
  EXPECT_NE(failure().find("grad of capture 'doc': the capture holds i32"),
            std::string::npos)
      << error;
  backward.captureGrads = nullptr;
  Descriptor forwardOnly;
  ASSERT_TRUE(parseDescriptor(kAbiExample, forwardOnly, error));
  EXPECT_FALSE(prepareBackward(forwardOnly, backward, buffer, backwardConfig,
                               error));
  EXPECT_NE(error.find("compiled without --backward"), std::string::npos);
}

} // namespace
