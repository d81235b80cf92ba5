//===- TestPasses.cpp - passes that exist for lit tests only --------------===//
namespace rbfc::test {
void registerTestPasses() {}
} // namespace rbfc::test
