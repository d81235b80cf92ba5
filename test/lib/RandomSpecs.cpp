//===- RandomSpecs.cpp - random attention specs for property tests --------===//
#include "rbfc/Testing/RandomSpecs.h"

using namespace rbfc::test;

std::string rbfc::test::makeSpec(const std::string &score,
                                 const std::string &mask, bool softmax) {
  std::string spec = "attention random {\n"
                     "  param g: f32 = 0.7;\n"
                     "  param s: f32 = -0.3;\n"
                     "  param w: int = 3;\n"
                     "  capture bq: f32[?];\n"
                     "  capture bk: f32[?];\n"
                     "  capture bh: f32[?];\n"
                     "  capture doc: i32[?];\n"
                     "  score = " +
                     score + ";\n";
  if (!mask.empty())
    spec += "  mask = " + mask + ";\n";
  if (!softmax)
    spec += "  normalize = none;\n";
  return spec + "}\n";
}

AttentionInputs rbfc::test::randomInputs(ExpressionGenerator &gen) {
  AttentionInputs in;
  in.batch = 2;
  in.heads = 4;
  in.kvHeads = 1 + gen.pick(2) * 1; // 1 or 2 KV heads: GQA 4:1 and 2:1
  in.qLen = 1 + gen.pick(9);
  in.kvLen = 1 + gen.pick(11);
  in.headDim = 8;
  auto fill = [&](std::vector<double> &values, size_t count, double scale) {
    values.resize(count);
    for (double &v : values)
      v = gen.uniform(-scale, scale);
  };
  fill(in.query, in.batch * in.heads * in.qLen * in.headDim, 0.5);
  fill(in.key, in.batch * in.kvHeads * in.kvLen * in.headDim, 0.5);
  fill(in.value, in.batch * in.kvHeads * in.kvLen * in.headDim, 1.0);
  in.params = {gen.uniform(-1, 1), gen.uniform(-1, 1),
               static_cast<double>(gen.pick(5))};
  auto capture = [&](int64_t size, double scale) {
    CaptureData data;
    data.shape = {size};
    fill(data.values, size, scale);
    return data;
  };
  in.captures = {capture(in.qLen, 1.0), capture(in.kvLen, 1.0),
                 capture(in.heads, 1.0)};
  // Document ids: sorted small integers, as packed sequences have.
  CaptureData doc;
  int64_t docLen = std::max(in.qLen, in.kvLen);
  doc.shape = {docLen};
  double current = 0;
  for (int64_t i = 0; i < docLen; ++i) {
    if (gen.pick(3) == 0)
      current += 1;
    doc.values.push_back(current);
  }
  in.captures.push_back(doc);
  return in;
}
